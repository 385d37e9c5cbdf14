"""``facesearch people write-xmp``: named people become XMP face regions exiftool reads back, merged into
sidecars (or, with --embed, the photos), journaled so ``facesearch undo`` restores every byte."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.people.persons import PeopleOptions, people
from facesearch.photos.xmp import sidecar_path
from tests.test_xmp import exiftool, mwg_arg, needs_exiftool, regions_by_exiftool
from tests.test_xmp_index import photos, run  # noqa: F401  (fixture)

pytestmark = needs_exiftool


def indexed(photos, tmp_path):  # noqa: F811
    idx = tmp_path / "idx"
    run([tmp_path / "jpegs"], idx, label_from_folder=True)
    listing = people(PeopleOptions(index=idx))
    return idx, {p["name"]: p["id"] for p in listing["people"]}


def cli(*args):
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_sidecars_written_read_back_and_undone(photos, tmp_path):  # noqa: F811
    idx, ids = indexed(photos, tmp_path)
    foreign = sidecar_path(photos[1])  # a sidecar another tool wrote, with a region of someone else
    exiftool("-o", str(foreign), mwg_arg("Stranger", 0.9, 0.9, 0.1, 0.1, dims=(150, 150)), str(photos[1]))
    before = foreign.read_bytes()
    r = cli("people", "write-xmp", "--index", str(idx))
    assert (r["faces"], r["files_written"], r["files_created"], r["regions_kept"]) == (4, 4, 3, 1)
    for p in photos:
        got = regions_by_exiftool(sidecar_path(p))
        names = [x["Name"] for x in got["RegionInfo"]["RegionList"]]
        assert p.parent.name in names and got["RegionInfoMP"]["Regions"][-1]["PersonDisplayName"] == p.parent.name
        area = got["RegionInfo"]["RegionList"][-1]["Area"]  # the whole 150 px photo is the face (--detector none)
        assert np.allclose([area["X"], area["Y"], area["W"], area["H"]], [0.5, 0.5, 1.0, 1.0], atol=0.01)
    assert "Stranger" in [x["Name"] for x in regions_by_exiftool(foreign)["RegionInfo"]["RegionList"]]
    # written again: nothing changes, no duplicate regions
    again = cli("people", "write-xmp", "--index", str(idx))
    assert (again["files_written"], again["unchanged"], again["journal"]) == (0, 4, None)
    # the next index run does not re-read what facesearch wrote itself
    assert run([tmp_path / "jpegs"], idx).unchanged == 4
    undone = cli("undo", "--index", str(idx))
    assert undone["restored"] == 4 and not undone["conflicts"]
    assert foreign.read_bytes() == before
    assert [sidecar_path(p).exists() for p in photos] == [False, True, False, False]


def test_embed_changes_only_xmp_and_undo_restores_bytes(photos, tmp_path):  # noqa: F811
    idx, ids = indexed(photos, tmp_path)
    target = photos[2]
    before, pixels = target.read_bytes(), np.asarray(Image.open(target))
    r = cli("people", "write-xmp", "--embed", "--person", str(ids[target.parent.name]), "--index", str(idx))
    assert (r["people"], r["files_written"], r["files_created"]) == (1, 1, 0)
    assert target.read_bytes() != before and np.array_equal(np.asarray(Image.open(target)), pixels)
    assert regions_by_exiftool(target)["RegionInfo"]["RegionList"][0]["Name"] == target.parent.name
    assert not any(sidecar_path(p).exists() for p in photos)
    assert run([tmp_path / "jpegs"], idx).unchanged == 4  # the index knows the photo's new bytes
    cli("undo", "--index", str(idx))
    assert target.read_bytes() == before


def test_stem_sidecar_and_errors(photos, tmp_path):  # noqa: F811
    idx, ids = indexed(photos, tmp_path)
    r = cli("people", "write-xmp", "--sidecar-name", "stem", "--person", str(ids[photos[0].parent.name]),
            "--index", str(idx))
    assert r["files_created"] == 1 and sidecar_path(photos[0], "stem").exists()
    bad = CliRunner().invoke(app, ["people", "write-xmp", "--person", "999", "--index", str(idx)])
    assert bad.exit_code == 1 and "no person 999" in bad.output
    usage = CliRunner().invoke(app, ["people", "write-xmp", "--sidecar-name", "weird", "--index", str(idx)])
    assert usage.exit_code == 2


def test_undo_leaves_a_sidecar_edited_since_alone(photos, tmp_path):  # noqa: F811
    idx, _ = indexed(photos, tmp_path)
    cli("people", "write-xmp", "--index", str(idx))
    edited = sidecar_path(photos[0])
    exiftool("-overwrite_original", "-XMP-dc:Subject=edited in digiKam", str(edited))
    mine = edited.read_bytes()
    undone = cli("undo", "--index", str(idx))
    assert undone["restored"] == 3 and [c["src"] for c in undone["conflicts"]] == [str(edited)]
    assert edited.read_bytes() == mine
