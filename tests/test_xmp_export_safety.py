"""``people write-xmp`` never writes one photo's names where another photo reads them, and never stops
half way: photos sharing a ``photo.xmp`` are left alone and listed, ``--embed`` checks every photo before
writing any, and a journal with nothing in it never uses up ``undo`` (issue 36, item 6)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.core.journal import MoveJournal
from facesearch.core.journal_file import list_journals
from facesearch.core.paths import journal_dir
from facesearch.indexing.run import IndexOptions
from facesearch.people.labels import index_and_place
from facesearch.people.persons import PeopleOptions, people
from facesearch.photos.xmp import read_regions, sidecar_path


def named_index(tmp_path: Path) -> Path:
    """Index tmp/jpegs with folder names as labels (the whole photo is the face) and name its people."""
    idx = tmp_path / "idx"
    index_and_place(IndexOptions(paths=[str(tmp_path / "jpegs")], index=idx, detector="none", workers=0,
                                  label_from_folder=True))
    people(PeopleOptions(index=idx))
    return idx


def photo(src: Path, dst: Path, fmt: str | None = None) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").save(dst, fmt)
    return dst


def sources(collection: Path) -> list[Path]:
    return [sorted(f.iterdir())[0] for f in sorted(collection.iterdir())]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_stem_sidecars_shared_by_two_photos_are_not_written(collection, tmp_path):
    a, b, c = sources(collection)[:3]
    jpg = photo(a, tmp_path / "jpegs" / "Bill" / "x.jpg")
    png = photo(a, tmp_path / "jpegs" / "Bill" / "x.png")
    phone = photo(b, tmp_path / "jpegs" / "Chris" / "IMG_1.JPG")
    alone = photo(c, tmp_path / "jpegs" / "Dora" / "y.jpg")
    idx = named_index(tmp_path)
    shutil.copy(phone, phone.with_suffix(".HEIC"))  # its twin, not indexed (yet): still reads IMG_1.xmp
    r = invoke("people", "write-xmp", "--sidecar-name", "stem", "--index", str(idx), "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert not (jpg.parent / "x.xmp").exists() and not (phone.parent / "IMG_1.xmp").exists()
    assert sidecar_path(alone, "stem").is_file() and got["files_written"] == 1
    shared = {c["sidecar"]: sorted(Path(p).name for p in c["photos"]) for c in got["collisions"]}
    assert shared == {str(jpg.parent / "x.xmp"): ["x.jpg", "x.png"],
                      str(phone.parent / "IMG_1.xmp"): ["IMG_1.HEIC", "IMG_1.JPG"]}
    assert {s["path"] for s in got["skipped"]} == {str(jpg), str(png), str(phone)}
    summary = invoke("people", "write-xmp", "--sidecar-name", "stem", "--index", str(idx))
    assert summary.exit_code == 0 and "x.png" in summary.output and "2 sidecars not written" in summary.output


def test_full_sidecar_names_never_collide(collection, tmp_path):
    a = sources(collection)[0]
    jpg, png = photo(a, tmp_path / "jpegs" / "Bill" / "x.jpg"), photo(a, tmp_path / "jpegs" / "Bill" / "x.png")
    r = invoke("people", "write-xmp", "--index", str(named_index(tmp_path)), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["collisions"] == []
    assert sidecar_path(jpg).is_file() and sidecar_path(png).is_file()


def embed_gallery(collection, tmp_path) -> tuple[Path, list[Path]]:
    """Three named JPEGs, the last swapped for a symlink to a photo outside the gallery once indexed
    (sorted last, so written last). Before indexing it would be stored as the file it resolves to:
    an index holds resolved paths, so a symlinked photo is one that became a link afterwards."""
    srcs = sources(collection)
    photos = [photo(s, tmp_path / "jpegs" / f"P{i}" / "a.jpg") for i, s in enumerate(srcs[:3])]
    idx = named_index(tmp_path)
    real = photo(srcs[2], tmp_path / "elsewhere" / "real.jpg")
    photos[2].unlink()
    photos[2].symlink_to(real)
    return idx, photos


def test_embed_refuses_a_symlinked_photo_before_writing_any(collection, tmp_path):
    idx, photos = embed_gallery(collection, tmp_path)
    before = snapshot(tmp_path / "jpegs") | snapshot(tmp_path / "elsewhere")
    r = invoke("people", "write-xmp", "--embed", "--index", str(idx))
    assert r.exit_code == 1 and "not a regular file" in r.output and "nothing was written" in r.output
    assert len(r.stderr.strip().splitlines()) == 2  # error + hint, no traceback
    assert snapshot(tmp_path / "jpegs") | snapshot(tmp_path / "elsewhere") == before
    assert list_journals(journal_dir(idx)) == []
    # the retry leaves no journal either, and undo says there is nothing to undo
    assert invoke("people", "write-xmp", "--embed", "--index", str(idx)).exit_code == 1
    assert list_journals(journal_dir(idx)) == [] and invoke("undo", "--index", str(idx)).exit_code == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_embed_refuses_a_read_only_photo(collection, tmp_path):
    idx, photos = embed_gallery(collection, tmp_path)
    photos[2].unlink()
    photo(sources(collection)[2], photos[2]).chmod(0o444)
    before = snapshot(tmp_path / "jpegs")
    r = invoke("people", "write-xmp", "--embed", "--index", str(idx))
    assert r.exit_code == 1 and "read-only" in r.output and snapshot(tmp_path / "jpegs") == before


def test_embed_refuses_a_format_exiv2_cannot_write(collection, tmp_path):
    srcs = sources(collection)
    photo(srcs[0], tmp_path / "jpegs" / "P0" / "a.jpg")
    photo(srcs[1], tmp_path / "jpegs" / "P1" / "b.bmp")
    idx = named_index(tmp_path)
    before = snapshot(tmp_path / "jpegs")
    r = invoke("people", "write-xmp", "--embed", "--index", str(idx))
    assert r.exit_code == 1 and "b.bmp" in r.output and "nothing was written" in r.output
    assert snapshot(tmp_path / "jpegs") == before


def test_embed_failing_part_way_names_the_journal_that_undoes_it(collection, tmp_path, monkeypatch):
    import facesearch.core.journal as journal_module

    idx, photos = embed_gallery(collection, tmp_path)
    photos[2].unlink()
    photo(sources(collection)[2], photos[2])
    before = snapshot(tmp_path / "jpegs")
    real = journal_module.replace_bytes
    calls = []

    def disk_full_on_the_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(journal_module, "replace_bytes", disk_full_on_the_second)
    r = invoke("people", "write-xmp", "--embed", "--index", str(idx))
    assert r.exit_code == 1 and "after 1 files were written" in r.output and "facesearch undo" in r.output
    assert snapshot(tmp_path / "jpegs") != before
    monkeypatch.undo()
    assert invoke("undo", "--index", str(idx)).exit_code == 0
    assert snapshot(tmp_path / "jpegs") == before


def test_undo_passes_over_a_journal_with_nothing_in_it(collection, tmp_path):
    a = sources(collection)[0]
    jpg = photo(a, tmp_path / "jpegs" / "Bill" / "x.jpg")
    idx = named_index(tmp_path)
    assert invoke("people", "write-xmp", "--index", str(idx)).exit_code == 0
    assert {r.name for r in read_regions(jpg).regions} == {"Bill"}
    MoveJournal.create(journal_dir(idx), "write-xmp", {"index": str(idx)})  # a run refused at its first file
    r = invoke("undo", "--index", str(idx), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["restored"] == 1 and not sidecar_path(jpg).exists()


def test_a_symlinked_sidecar_is_skipped_and_the_others_written(collection, tmp_path):
    a, b = sources(collection)[:2]
    first, second = photo(a, tmp_path / "jpegs" / "Ann" / "a.jpg"), photo(b, tmp_path / "jpegs" / "Bob" / "b.jpg")
    elsewhere = tmp_path / "elsewhere.xmp"
    elsewhere.write_bytes(b"not ours")
    sidecar_path(first).symlink_to(elsewhere)  # writing through it would change a file outside the gallery
    r = invoke("people", "write-xmp", "--index", str(named_index(tmp_path)), "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["files_written"] == 1 and sidecar_path(second).is_file() and elsewhere.read_bytes() == b"not ours"
    assert [s["path"] for s in got["skipped"]] == [str(sidecar_path(first))]
