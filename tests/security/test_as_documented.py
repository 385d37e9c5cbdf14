"""Issue 37, item 7: what the README and docs/security.md say, the code now does.

Unknown person ids are 404; ``people`` after ``label`` shows the label (it clusters again); ``undo``
after ``write-xmp`` names what it undid and asks for no re-index; ``HEAD`` works where ``GET`` does.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from sec_helpers import json_error


@pytest.mark.parametrize("path", ["/", "/api/health", "/app.js"])
def test_head_answers_like_get_without_a_body(live, path):
    with live.client() as c:
        got, head = c.get(path), c.head(path)
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/api/people/987654", None),
    ("POST", "/api/people/987654/name", {"name": "Ann"}),
    ("POST", "/api/people/987654/merge", {"other": 1}),
    ("POST", "/api/people/987654/split", {"faces": [1]}),
])
def test_unknown_person_ids_are_404(live, method, path, body):
    with live.client() as c:
        answer = json_error(c.request(method, path, json=body), 404)
    assert "no person 987654" in answer["error"] and answer["hint"]


def run(*args, code: int = 0):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == code, r.output
    return r


@pytest.fixture
def own_index(tmp_path):
    """A fresh index of 2 people × 2 photos labelled by folder, and its photos (sidecars may be written)."""
    from facesearch.photos.synthetic import make_identity_folder

    photos = make_identity_folder(tmp_path / "photos", n_people=2, per_person=2, seed=31)
    run("index", photos, "--index", tmp_path / "idx", "--detector", "none", "--workers", "0",
        "--label-from-folder", "--quiet")
    return tmp_path / "idx", photos


def test_people_after_label_shows_the_label(own_index):
    idx, photos = own_index
    first = json.loads(run("people", "--json", "--index", idx).stdout)
    assert first["clustered"]
    run("label", sorted((photos / "person_00").iterdir())[0], "Zed", "--index", idx)
    after = json.loads(run("people", "--json", "--index", idx).stdout)
    assert after["clustered"] and "Zed" in {p["name"] for p in after["people"]}, after


def test_undo_after_write_xmp_names_what_it_undid(own_index):
    idx, photos = own_index
    run("people", "--index", idx, "--quiet")
    run("people", "write-xmp", "--index", idx, "--quiet")
    assert list(photos.rglob("*.xmp"))
    undone = run("undo", "--index", idx)
    assert undone.stdout.startswith("undid write-xmp: restored") and "dedupe" not in undone.output
    assert "re-run `facesearch index`" not in undone.output and "index itself was not changed" in undone.stderr
    assert not list(photos.rglob("*.xmp"))
    nothing = run("undo", "--index", idx, code=1)
    assert "nothing to undo" in nothing.stderr and "write-xmp" in nothing.stderr
