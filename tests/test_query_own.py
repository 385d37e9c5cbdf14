"""The query photo is never its own match: an indexed photo queried by path (or through an alias of the same
file), or an indexed face searched by id in the service, is left out of the matches and of the naming, in
the CLI table, ``--json`` and the service (issue 37, item 6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.service.app import create_app
from facesearch.service.state import ServeOptions


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """4 synthetic people, labelled by folder; person_03 keeps one photo: nobody else can name it."""
    from facesearch.photos.synthetic import make_identity_folder

    root = tmp_path_factory.mktemp("own")
    photos = make_identity_folder(root / "photos", n_people=4, per_person=4, seed=1)
    for extra in sorted((photos / "person_03").iterdir())[1:]:
        extra.unlink()
    r = CliRunner().invoke(app, ["index", str(photos), "--index", str(root / "idx"), "--detector", "none",
                                 "--workers", "0", "--label-from-folder", "--quiet"])
    assert r.exit_code == 0, r.output
    return root, photos


def query(root: Path, probe: Path, *extra: str):
    return CliRunner().invoke(app, ["query", str(probe), "--index", str(root / "idx"), "--detector", "none",
                                    *extra])


def face_of(r) -> dict:
    assert r.exit_code == 0, r.output
    (face,) = json.loads(r.stdout)["faces"]
    return face


def test_an_indexed_photo_is_named_from_other_faces_only(gallery):
    root, photos = gallery
    probe = sorted((photos / "person_01").iterdir())[0]
    face = face_of(query(root, probe, "--json", "--top", "20"))
    assert str(probe) not in [m["path"] for m in face["matches"]] + face["same_person"]
    assert face["identity"] == "person_01" and face["distance"] > 0.01  # its other photos, not itself
    assert len(face["matches"]) == 12  # every other face of the gallery (4 + 4 + 4 + 1, less itself)


def test_a_photo_only_its_own_label_names_stays_unnamed(gallery):
    root, photos = gallery
    (solo,) = (photos / "person_03").iterdir()
    face = face_of(query(root, solo, "--json"))
    assert face["identity"] is None and face["candidate"] != "person_03"
    assert all(m["path"] != str(solo) and m["label"] != "person_03" for m in face["matches"])
    table = query(root, solo)
    assert table.exit_code == 0 and "person_03" not in table.stdout


@pytest.mark.parametrize("alias", ["symlink", "hardlink"])
def test_an_alias_of_an_indexed_photo_is_the_same_photo(gallery, tmp_path, alias):
    root, photos = gallery
    (solo,) = (photos / "person_03").iterdir()
    other = tmp_path / "other name.png"
    other.symlink_to(solo) if alias == "symlink" else os.link(solo, other)
    face = face_of(query(root, other, "--json"))
    assert face["identity"] is None and str(solo) not in [m["path"] for m in face["matches"]]


def test_a_search_by_face_id_in_the_service_leaves_that_face_out(gallery):
    from fastapi.testclient import TestClient

    root, photos = gallery
    (solo,) = (photos / "person_03").iterdir()
    client = TestClient(create_app(ServeOptions(index=root / "idx", detector="none", token=None)),
                        base_url="http://127.0.0.1:8750")
    upload = {"image": ("face.png", solo.read_bytes(), "image/png")}
    first = client.post("/api/query", files=upload, data={"top": "3"}).json()["faces"][0]
    assert first["candidate"] == "person_03"  # an upload is another file: its indexed twin is a match
    own = first["matches"][0]["face_id"]
    r = client.post("/api/query", files=upload, data={"top": "3", "face": str(own)})
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert own not in [m["face_id"] for m in face["matches"]]
    assert face["identity"] is None and face["candidate"] != "person_03"
    assert client.post("/api/query", files=upload, data={"face": "-1"}).status_code == 400
