"""``facesearch index`` reads the names other photo tools wrote as XMP face regions (written here by
exiftool): embedded MWG and MP, both sidecar names, a region without a detected face, conflicts,
sidecar changes, malformed XMP; ``--no-xmp`` skips them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.indexing.run import IndexOptions, index_collection
from facesearch.people.labels import index_and_place
from facesearch.photos.xmp import sidecar_path
from facesearch.store.face_index import FaceIndex
from tests.test_xmp import exiftool, mp_arg, mwg_arg, needs_exiftool

pytestmark = needs_exiftool


def run(paths, index, **kw):
    kw.setdefault("detector", "none")  # the whole photo is the face: box (0, 0, w, h)
    kw.setdefault("workers", 0)
    return index_and_place(IndexOptions(paths=[str(p) for p in paths], index=Path(index), **kw))


def labels(index) -> dict[str, list]:
    with FaceIndex.open(index, readonly=True) as store:
        ids, _ = store.all_embeddings()
        out: dict[str, list] = {}
        for row in store.faces(ids):
            out.setdefault(_key(row.path), []).append(row.label)
        return out


def _key(path) -> str:
    return f"{Path(path).parent.name}/{Path(path).name}"


@pytest.fixture
def photos(collection, tmp_path):
    """Four JPEG face photos (150 px), one per synthetic person, in tmp/jpegs/person_NN/."""
    out = []
    for folder in sorted(collection.iterdir())[:4]:
        src = sorted(folder.iterdir())[0]
        dst = tmp_path / "jpegs" / folder.name / (src.stem + ".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(src).convert("RGB").save(dst, quality=92)
        out.append(dst)
    return out


def test_names_from_embedded_mwg_mp_and_both_sidecars(photos, tmp_path):
    a, b, c, d = photos
    exiftool("-overwrite_original", mwg_arg("Alice", 0.5, 0.5, 0.8, 0.8, dims=(150, 150)), str(a))
    exiftool("-overwrite_original", mp_arg("Bob", 0.1, 0.1, 0.8, 0.8), str(b))
    exiftool("-o", str(sidecar_path(c, "full")), mwg_arg("Carol", 0.5, 0.5, 0.9, 0.9, dims=(150, 150)), str(c))
    exiftool("-o", str(sidecar_path(d, "stem")), mp_arg("Dan", 0.0, 0.0, 1.0, 1.0), str(d))
    s = run([tmp_path / "jpegs"], tmp_path / "idx")
    assert (s.xmp_regions, s.xmp_labelled, s.xmp_added, s.xmp_conflicts) == (4, 4, 0, [])
    got = labels(tmp_path / "idx")
    assert [got[_key(p)] for p in photos] == [["Alice"], ["Bob"], ["Carol"], ["Dan"]]
    # pinned at clustering, as --label-from-folder's labels are
    from facesearch.people.persons import PeopleOptions, people

    named = {p["name"] for p in people(PeopleOptions(index=tmp_path / "idx"))["people"]}
    assert {"Alice", "Bob", "Carol", "Dan"} <= named


def test_no_xmp_skips_regions(photos, tmp_path):
    exiftool("-overwrite_original", mwg_arg("Alice", 0.5, 0.5, 0.8, 0.8, dims=(150, 150)), str(photos[0]))
    s = run([photos[0]], tmp_path / "idx", xmp=False)
    assert s.xmp_regions == 0 and labels(tmp_path / "idx")[_key(photos[0])] == [None]


def test_region_without_a_detected_face_is_embedded_from_its_box(tmp_path):
    blank = tmp_path / "p" / "wall.jpg"  # nothing a detector calls a face
    blank.parent.mkdir()
    Image.new("RGB", (400, 300), (200, 190, 180)).save(blank)
    exiftool("-overwrite_original", mwg_arg("Eve", 0.5, 0.5, 0.25, 0.4), str(blank))
    tiny = tmp_path / "p" / "tiny.jpg"
    Image.new("RGB", (400, 300), (200, 190, 180)).save(tiny)
    exiftool("-overwrite_original", mwg_arg("Speck", 0.5, 0.5, 0.01, 0.01), str(tiny))
    s = run([tmp_path / "p"], tmp_path / "idx", detector="yunet")
    assert (s.xmp_regions, s.xmp_added, s.faces) == (2, 1, 1)
    assert [f["name"] for f in s.xmp_failed] == ["Speck"] and "too small" in s.xmp_failed[0]["error"]
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:
        [row] = store.faces(store.all_embeddings()[0])
    assert row.label == "Eve" and np.allclose(row.box, (150, 90, 250, 210), atol=1)


def test_conflicts_are_reported_not_resolved(photos, tmp_path):
    a, b = photos[:2]
    exiftool("-overwrite_original", mwg_arg("Alice", 0.5, 0.5, 0.8, 0.8, dims=(150, 150)),
             mp_arg("Alicia", 0.1, 0.1, 0.8, 0.8), str(a))
    exiftool("-overwrite_original", mwg_arg("Bob", 0.5, 0.5, 0.8, 0.8, dims=(150, 150)), str(b))
    s = run([a, b], tmp_path / "idx", label_from_folder=True)
    kinds = {(c["kind"], tuple(c["names"])) for c in s.xmp_conflicts}
    assert ("names", ("Alice", "Alicia")) in kinds
    assert ("folder", ("Bob", b.parent.name)) in kinds
    got = labels(tmp_path / "idx")
    # two names: the face keeps no region name (only its folder label); the region name beats the folder
    assert got[_key(a)] == [a.parent.name] and got[_key(b)] == ["Bob"]


def test_sidecar_change_is_read_again(photos, tmp_path):
    p = photos[0]
    side = sidecar_path(p)
    exiftool("-o", str(side), mwg_arg("Alice", 0.5, 0.5, 0.8, 0.8, dims=(150, 150)), str(p))
    run([p], tmp_path / "idx")
    s = run([p], tmp_path / "idx")
    assert (s.unchanged, s.updated) == (1, 0)
    exiftool("-overwrite_original", mwg_arg("Alice Smith", 0.5, 0.5, 0.8, 0.8, dims=(150, 150)), str(side))
    os.utime(side, ns=(time.time_ns(), time.time_ns() + 10**9))
    s = run([p], tmp_path / "idx")
    assert (s.unchanged, s.updated, s.xmp_labelled) == (0, 1, 1)
    assert labels(tmp_path / "idx")[_key(p)] == ["Alice Smith"]


def test_malformed_sidecar_warns_and_the_photo_is_indexed(photos, tmp_path):
    sidecar_path(photos[0]).write_text("<x:xmpmeta><rdf:RDF><not closed")
    s = run([photos[0]], tmp_path / "idx")
    assert s.faces == 1 and s.bad == 0 and len(s.xmp_warnings) == 1 and "malformed XMP" in s.xmp_warnings[0]


def test_cli_json_and_table(photos, tmp_path):
    exiftool("-overwrite_original", mwg_arg("Alice", 0.5, 0.5, 0.8, 0.8, dims=(150, 150)),
             mp_arg("Alicia", 0.1, 0.1, 0.8, 0.8), str(photos[0]))
    args = ["index", str(photos[0]), "--index", str(tmp_path / "idx"), "--detector", "none", "--workers", "0"]
    r = CliRunner().invoke(app, args + ["--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["xmp_regions"] == 2 and data["xmp_conflicts"][0]["names"] == ["Alice", "Alicia"]
    r = CliRunner().invoke(app, [a.replace("idx", "idx2") for a in args])
    assert r.exit_code == 0 and "XMP name conflicts" in r.stdout
