"""An index never overwrites a folder that is not its own, keeps the user's words on the right faces
through a rebuild, and recovers from a crash in the middle of a rebuild's folder swap."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.core.errors import FacesearchError
from facesearch.indexing import maintenance
from facesearch.indexing.run import IndexOptions, index_collection
from facesearch.store import swap
from facesearch.store.face_index import FaceIndex
from facesearch.store.records import FaceRecord
from facesearch.store.transfer import read_words, write_words


def _create(folder: Path) -> FaceIndex:
    return FaceIndex.create(folder, model_id="m", model_config={}, dim=4)


def _add(store: FaceIndex, path: str, boxes: list[tuple]) -> None:
    faces = [FaceRecord(box=b) for b in boxes]
    emb = np.eye(4, dtype=np.float32)[: len(boxes)]
    store.write_batch([dict(path=path, size=1, mtime_ns=1, hash=path, status="ok", error=None, faces=faces,
                            embeddings=emb)])


def test_an_index_is_not_created_over_another_programs_folder(tmp_path):
    app_dir = tmp_path / "webapp"
    app_dir.mkdir()
    (app_dir / "manifest.json").write_text('{"name": "my web app", "start_url": "/"}')
    (app_dir / "index.html").write_text("<html></html>")
    before = {p.name: p.read_bytes() for p in app_dir.iterdir()}
    with pytest.raises(FacesearchError, match="not empty and holds no facesearch index") as e:
        _create(app_dir)
    assert "index.html" in e.value.message and "manifest.json" in e.value.message
    assert {p.name: p.read_bytes() for p in app_dir.iterdir()} == before  # nothing written, nothing removed


def test_the_cli_refuses_a_foreign_folder_in_one_line(tmp_path, collection):
    app_dir = tmp_path / "webapp"
    app_dir.mkdir()
    (app_dir / "manifest.json").write_text('{"name": "my web app"}')
    r = CliRunner().invoke(app, ["index", str(collection), "--index", str(app_dir), "--detector", "none",
                                 "--workers", "0"])
    assert r.exit_code == 1 and "not empty and holds no facesearch index" in r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr
    assert (app_dir / "manifest.json").read_text() == '{"name": "my web app"}'


def test_an_empty_folder_or_an_interrupted_create_is_ours(tmp_path):
    (tmp_path / "empty").mkdir()
    with _create(tmp_path / "empty") as store:
        assert store.manifest["kind"] == "facesearch-index"
    half = tmp_path / "half"  # a create killed after the lock and the database, before the manifest
    half.mkdir()
    (half / "lock").write_text("123\n")
    (half / "meta.sqlite").write_bytes(b"")
    with _create(half) as store:
        assert store.count() == 0


def test_index_pointed_at_a_file_is_a_one_line_error(tmp_path, collection):
    target = tmp_path / "not_a_folder"
    target.write_text("precious")
    r = CliRunner().invoke(app, ["index", str(collection), "--index", str(target), "--detector", "none",
                                 "--workers", "0"])
    assert r.exit_code == 1 and "is a file, not a folder" in r.stderr and "unexpected" not in r.stderr
    assert target.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_index_is_a_one_line_error(tmp_path, collection):
    idx = tmp_path / "idx"
    index_collection(IndexOptions(paths=[str(collection)], index=idx, detector="none", workers=0))
    idx.chmod(0o555)
    try:
        r = CliRunner().invoke(app, ["label", str(collection), "Ann", "--index", str(idx)])
    finally:
        idx.chmod(0o755)
    assert r.exit_code == 1 and "cannot write to the index" in r.stderr and "unexpected" not in r.stderr


def test_words_follow_faces_not_files(tmp_path):
    """Naming one of two people in a photo names that face only, in the rebuilt index too."""
    with _create(tmp_path / "old") as old:
        _add(old, "/p/group.jpg", [(0, 0, 100, 100), (200, 0, 300, 100)])
        ann = old.faces([1, 2])[0].face_id
        old.set_label(ann, "Ann")
        words = read_words(old)
    with _create(tmp_path / "new") as new:  # re-detected: slightly moved boxes, listed the other way round
        _add(new, "/p/group.jpg", [(203, 2, 301, 99), (2, 1, 98, 103)])
        assert write_words(new, words) == 1
        labels = {row.box[0]: row.label for row in new.faces([1, 2])}
    assert labels == {203: None, 2: "Ann"}


def test_rebuild_keeps_a_name_on_its_face_only(tmp_path):
    from facesearch.models import create_embedder, save_weights
    from facesearch.photos.synthetic import compose_photo, make_identities, render_face

    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        faces = [render_face(p, rng, size=150) for p in make_identities(2, seed=20 + i)]
        compose_photo(faces, (520, 300), rng)[0].save(photos / f"group{i}.png")
    idx = tmp_path / "idx"
    index_collection(IndexOptions(paths=[str(photos)], index=idx, workers=0))
    with FaceIndex.open(idx) as store:
        ids, _ = store.all_embeddings()
        rows = store.faces(ids.tolist())
        named = [r for r in rows if r.path.endswith("group0.png")]
        assert len(named) == 2, "the detector should find both faces"
        store.set_label(named[0].face_id, "Ann")
    tiny = save_weights(create_embedder("resnet10t", embedding_dim=16, input_size=32).eval(), tmp_path / "tiny")
    maintenance.rebuild(idx, weights=str(tiny), workers=0)
    with FaceIndex.open(idx, readonly=True) as store:
        ids, _ = store.all_embeddings()
        labelled = [r for r in store.faces(ids.tolist()) if r.label is not None]
    assert [(r.label, r.path.endswith("group0.png")) for r in labelled] == [("Ann", True)]
    assert abs(labelled[0].box[0] - named[0].box[0]) < 0.1 * (named[0].box[2] - named[0].box[0])


def _index(folder: Path, n_files: int) -> None:
    with _create(folder) as store:
        for i in range(n_files):
            _add(store, f"/p/{i}.jpg", [(0, 0, 10, 10)])


def _files(folder: Path) -> int:
    with FaceIndex.open(folder, readonly=True) as store:
        return len(store.file_paths())


def test_a_swap_killed_after_the_new_index_was_complete_is_finished(tmp_path):
    idx = tmp_path / "idx"
    _index(idx, 1)
    _index(swap.staging(idx), 2)
    (swap.staging(idx) / swap.COMPLETE).write_bytes(b"")
    os.replace(idx, swap.retired(idx))  # killed between the two renames
    assert FaceIndex.exists(idx) and _files(idx) == 2
    assert not swap.retired(idx).exists() and not swap.staging(idx).exists()


def test_a_swap_killed_before_the_new_index_was_complete_is_rolled_back(tmp_path):
    idx = tmp_path / "idx"
    _index(idx, 1)
    _index(swap.staging(idx), 2)  # no completion marker: the rebuild had not finished
    os.replace(idx, swap.retired(idx))
    assert FaceIndex.exists(idx) and _files(idx) == 1
    assert not swap.retired(idx).exists() and not swap.staging(idx).exists()


def test_leftovers_of_a_finished_swap_are_removed_but_never_a_foreign_folder(tmp_path):
    idx = tmp_path / "idx"
    _index(idx, 2)
    shutil.copytree(idx, swap.retired(idx))  # killed after both renames, before the old one was removed
    assert FaceIndex.exists(idx) and not swap.retired(idx).exists()
    foreign = swap.staging(idx)
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert FaceIndex.exists(idx) and (foreign / "notes.txt").read_text() == "mine"


def test_a_running_rebuild_is_left_alone(tmp_path):
    from facesearch.store.lock import WriterLock

    idx = tmp_path / "idx"
    _index(idx, 1)
    _index(swap.staging(idx), 2)
    with WriterLock(idx):  # the rebuild holds the live index's lock while it builds
        assert FaceIndex.exists(idx)
    assert swap.staging(idx).exists()  # the lock was held: not taken for a leftover


def test_pipes_and_broken_links_inside_a_collection_are_listed_with_a_reason(tmp_path, collection):
    os.mkfifo(collection / "person_00" / "pipe.jpg")
    (collection / "person_00" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    s = index_collection(IndexOptions(paths=[str(collection)], index=tmp_path / "idx", detector="none", workers=0))
    reasons = {Path(b["path"]).name: b["error"] for b in s.bad_files}
    assert "not a regular file" in reasons["pipe.jpg"] and "broken link" in reasons["gone.png"]
    assert s.faces == 16 and s.bad == 2
