"""The page's corrections over HTTP (issue 30): people named, merged, split, sorted and "not this person"
through the library calls of ``facesearch people``; duplicate photos moved through the journal and put back
by undo, only with a confirmation and only into an allowed folder; answers in words on every face."""

from __future__ import annotations

import shutil
import time

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from facesearch.service.app import create_app
from facesearch.service.state import ServeOptions
from facesearch.store.face_index import FaceIndex


def TestClient(app, **kw):  # noqa: N802 - addressed as a browser on this machine would (Host check)
    from fastapi.testclient import TestClient as Client

    return Client(app, base_url="http://127.0.0.1:8750", **kw)


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    """3 people × 3 photos, labelled; one photo copied twice (duplicates to move); a folder to move into."""
    from facesearch.photos.synthetic import make_identity_folder

    root = tmp_path_factory.mktemp("review")
    photos = make_identity_folder(root / "photos", n_people=3, per_person=3, seed=4)
    original = sorted((photos / "person_02").iterdir())[0]
    (photos / "copies").mkdir()
    for n in (1, 2):
        shutil.copy(original, photos / "copies" / f"copy{n}{original.suffix}")
    r = CliRunner().invoke(cli, ["index", str(photos), "--index", str(root / "idx"), "--detector", "none",
                                 "--workers", "0", "--label-from-folder", "--quiet"])
    assert r.exit_code == 0, r.output
    (root / "moves").mkdir()
    opts = ServeOptions(index=root / "idx", detector="none", move_roots=(root / "moves",))
    return root, photos, create_app(opts)


def people_by_id(client) -> dict:
    return {p["id"]: p for p in client.get("/api/people").json()["people"]}


def labels(index, face_ids) -> set:
    with FaceIndex.open(index, readonly=True) as store:
        return {r.label for r in store.faces(face_ids)}


def test_people_corrections_are_the_library_calls(review):
    root, _, app = review
    c = TestClient(app)
    people = people_by_id(c)
    a = next(p for p in people if people[p]["name"] == "person_00")
    page = c.get(f"/api/people/{a}").json()
    assert page["id"] == a and len(page["photos"]) == len({f["path"] for f in page["faces"]}) == 3
    assert c.post(f"/api/people/{a}/name", json={"name": "Ann"}).status_code == 200
    faces = [f["face_id"] for f in people[a]["faces"]]
    assert labels(root / "idx", faces) == {"Ann"}  # labelled in the index: query answers "Ann" at once
    split = c.post(f"/api/people/{a}/split", json={"faces": faces[:1]}).json()
    assert split["moved"] == 1 and "Ann" not in labels(root / "idx", faces[:1])
    assert [f["face_id"] for f in c.get(f"/api/people/{split['new_person']}").json()["faces"]] == faces[:1]
    merged = c.post(f"/api/people/{a}/merge", json={"other": split["new_person"]}).json()
    assert merged["faces"] == 3 and labels(root / "idx", faces) == {"Ann"}
    assert split["new_person"] not in people_by_id(c)
    b = next(p for p in people if people[p]["name"] == "person_01")
    assert c.post(f"/api/people/{a}/merge", json={"other": b}).status_code == 400  # two names: the library says no
    gone = faces[0]
    assert c.post(f"/api/faces/{gone}/not-person", json={}).json()["removed_from"] == a
    assert gone not in [f["face_id"] for f in c.get(f"/api/people/{a}").json()["faces"]]
    assert "Ann" not in labels(root / "idx", [gone])
    back = c.post(f"/api/people/{a}/assign", json={"faces": [gone]}).json()
    assert back["assigned"] == 1 and labels(root / "idx", [gone]) == {"Ann"}


@pytest.mark.parametrize("path, body, code", [
    ("/api/people/1/merge", {"other": "2"}, 400),
    ("/api/people/1/merge", {"other": True}, 400),
    ("/api/people/1/merge", {"other": 1}, 400),
    ("/api/people/1/split", {"faces": []}, 400),
    ("/api/people/1/split", {"faces": [2**70]}, 404),  # an unknown id (issue 37, 7)
    ("/api/people/1/assign", {"faces": "7"}, 400),
    ("/api/faces/999999/not-person", {}, 400),
    ("/api/people/999999", None, 404),
])
def test_bad_corrections_are_one_line_json_errors(review, path, body, code):
    c = TestClient(review[2])
    r = c.get(path) if body is None else c.post(path, json=body)
    assert r.status_code == code and set(r.json()) == {"error", "hint"}, r.text


def test_corrections_need_json(review):
    r = TestClient(review[2]).post("/api/people/1/merge", data={"other": "2"})
    assert r.status_code == 415


def group_of_copies(c) -> dict:
    groups = c.get("/api/dedupe?scope=photos").json()["groups"]
    return next(g for g in groups if any("copies" in m["path"] for m in g["members"]))


def test_duplicates_move_only_when_confirmed_into_an_allowed_folder_and_undo_puts_them_back(review, tmp_path):
    root, photos, app = review
    c = TestClient(app)
    g = group_of_copies(c)
    members = [m["path"] for m in g["members"]]
    keeper = next(p for p in members if "copies" in p)  # the user keeps a copy instead of the suggestion
    choice = {"members": members, "keeper": keeper}
    dest = root / "moves" / "dups"
    assert c.post("/api/dedupe/apply", json={"move_to": str(dest), "groups": [choice]}).status_code == 400
    assert c.post("/api/dedupe/apply", json={"move_to": str(tmp_path), "groups": [choice],
                                             "confirm": True}).status_code == 403
    assert c.post("/api/dedupe/apply", json={"move_to": str(root / "moves" / ".." / ".."), "groups": [choice],
                                             "confirm": True}).status_code == 403
    forged = {"members": [*members, str(photos / "person_00" / "000.png")], "keeper": keeper}
    assert c.post("/api/dedupe/apply", json={"move_to": str(dest), "groups": [forged], "confirm": True}
                  ).status_code == 400
    assert all(__import__("os").path.exists(p) for p in members)  # nothing moved by any refusal
    r = c.post("/api/dedupe/apply", json={"move_to": str(dest), "groups": [choice], "confirm": True}).json()
    assert r["moved"] == len(members) - 1 and r["journal"]
    with FaceIndex.open(root / "idx", readonly=True) as store:
        assert [bool(store.file_info(p)) for p in members] == [p == keeper for p in members]
    assert c.post("/api/undo", json={}).status_code == 400
    u = c.post("/api/undo", json={"confirm": True}).json()
    assert u["restored"] == len(members) - 1 and u["job"]
    end = time.time() + 60
    while c.get(f"/api/jobs/{u['job']['id']}").json()["status"] in ("queued", "running") and time.time() < end:
        time.sleep(0.1)
    with FaceIndex.open(root / "idx", readonly=True) as store:
        assert all(store.file_info(p) for p in members)  # back on disk and in the index


def test_a_server_without_move_roots_moves_nothing(review):
    root, _, app = review
    bare = create_app(ServeOptions(index=root / "idx", detector="none"), app.state.service.searcher)
    c = TestClient(bare)
    g = group_of_copies(c)
    r = c.post("/api/dedupe/apply", json={"move_to": str(root / "moves"), "confirm": True,
                                          "groups": [{"members": [m["path"] for m in g["members"]],
                                                      "keeper": g["keeper"]}]})
    assert r.status_code == 403 and "--allow-move-root" in r.json()["hint"]


def test_answers_in_words_keep_the_numbers(review):
    root, photos, app = review
    probe = sorted((photos / "person_01").iterdir())[0]
    face = TestClient(app).post("/api/query", files={"image": (probe.name, probe.read_bytes(), "image/png")}
                                ).json()["faces"][0]
    assert {"identity", "distance", "far", "margin", "matches"} <= set(face)
    assert face["verdict"] in ("very likely", "likely", "unknown") and face["verdict_text"] and face["error_rate"]
    assert all("verdict" in m for m in face["matches"])


def test_photo_thumbnails_only_for_indexed_photos(review, tmp_path):
    root, photos, app = review
    c = TestClient(app)
    indexed = sorted((photos / "person_00").iterdir())[0]
    assert c.get("/api/photos/thumb", params={"path": str(indexed)}).headers["content-type"] == "image/jpeg"
    other = tmp_path / "x.png"
    shutil.copy(indexed, other)
    for path in (str(other), "/etc/passwd", str(indexed) + "\x00"):
        assert c.get("/api/photos/thumb", params={"path": path}).status_code == 404


def test_the_page_has_a_url_per_view_and_fetches_nothing_else(review):
    client = TestClient(review[2])
    page, script = client.get("/").text, client.get("/app.js").text
    for view in ('href="#people"', 'href="#duplicates"', 'href="#search"', "#person=", "#face="):
        assert view in page + script
    assert "http" not in script


def test_people_assign_on_the_command_line(review):
    root, _, app = review
    c = TestClient(app)
    people = people_by_id(c)
    a = next(p for p in people if people[p]["name"] == "person_01")
    face = people[a]["faces"][0]["face_id"]
    assert c.post(f"/api/faces/{face}/not-person", json={}).status_code == 200
    r = CliRunner().invoke(cli, ["people", "assign", str(a), str(face), "--index", str(root / "idx"), "--json"])
    assert r.exit_code == 0, r.output
    assert '"assigned": 1' in r.stdout and face in [f["face_id"] for f in c.get(f"/api/people/{a}").json()["faces"]]
    bad = CliRunner().invoke(cli, ["people", "assign", str(a), "987654", "--index", str(root / "idx")])
    assert bad.exit_code == 1 and "not all in this index" in bad.stderr


def test_serve_names_the_move_root_flag():
    r = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--allow-move-root" in r.stdout
