"""Issue 37, item 4: paths were checked once and used later.

A queued ``/api/index`` job resolved its path again when it ran: a folder swapped for a symlink in
between led it outside the roots. And a symlink already inside an ``--allow-move-root`` carried a
moved photo outside it. The job now reads the path as it was resolved when checked (and fails if it
leads elsewhere by then); a move refuses a destination with a symlinked folder below the root.
"""

from __future__ import annotations

import os
import shutil
import threading

from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from facesearch.store.face_index import FaceIndex
from sec_helpers import finished, json_error

HOLD_S = 60.0


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_indexed(serve, tmp_path, monkeypatch):
    from facesearch.photos.synthetic import make_identity_folder

    root, outside = tmp_path / "root", tmp_path / "outside"
    make_identity_folder(root / "album", n_people=1, per_person=1, seed=21)
    secret = make_identity_folder(outside, n_people=1, per_person=2, seed=22)
    server = serve(index_roots=(root,))
    jobs, gate = server.app.state.service.jobs, threading.Event()
    run = jobs.run
    monkeypatch.setattr(jobs, "run", lambda job: (gate.wait(HOLD_S), run(job)))  # hold the queue
    with server.client() as c:
        faces = c.get("/api/health").json()["faces"]
        job = c.post("/api/index", json={"paths": [str(root / "album")]})
        assert job.status_code == 200, job.text
        (root / "album").rename(root / "was-album")
        os.symlink(secret, root / "album")  # after the check, before the run
        gate.set()
        state = finished(c, job.json()["id"])
        assert state["status"] == "failed" and "changed since the job was queued" in state["error"], state
        assert c.get("/api/health").json()["faces"] == faces
    with FaceIndex.open(server.index, readonly=True) as store:
        assert not any(store.file_info(str(p)) for p in secret.rglob("*.png"))


def duplicates_index(tmp_path):
    """An index of 2 people with two copies of one photo in ``photos/copies``."""
    from facesearch.photos.synthetic import make_identity_folder

    photos = make_identity_folder(tmp_path / "photos", n_people=2, per_person=2, seed=23)
    original = sorted((photos / "person_01").iterdir())[0]
    (photos / "copies").mkdir()
    for n in (1, 2):
        shutil.copy(original, photos / "copies" / f"IMG_{n}{original.suffix}")
    r = CliRunner().invoke(cli, ["index", str(photos), "--index", str(tmp_path / "idx"), "--detector", "none",
                                 "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    return photos, tmp_path / "idx"


def test_a_symlink_inside_the_move_root_does_not_carry_photos_out(serve, tmp_path):
    photos, idx = duplicates_index(tmp_path)
    moves, outside = tmp_path / "moves", tmp_path / "outside"
    moves.mkdir()
    outside.mkdir()
    os.symlink(outside, moves / "copies")  # where the moved copies would go: a link out of the root
    server = serve(index=idx, move_roots=(moves,))
    with server.client() as c:
        groups = c.get("/api/dedupe", params={"scope": "photos"}).json()["groups"]
        chosen = [{"members": [m["path"] for m in g["members"]], "keeper": g["keeper"]} for g in groups]
        assert chosen and all(len(g["members"]) >= 2 for g in chosen), groups
        answer = json_error(c.post("/api/dedupe/apply", json={"move_to": str(moves), "groups": chosen,
                                                              "confirm": True}), 400)
    assert "symlink" in answer["error"] and answer["hint"], answer
    assert not list(outside.iterdir())
    assert sorted(p.name for p in (photos / "copies").iterdir()) == ["IMG_1.png", "IMG_2.png"]


def test_moves_into_real_folders_under_the_root_still_work(tmp_path):
    from facesearch.core.journal import MoveJournal

    root, photo = tmp_path / "root", tmp_path / "a.jpg"
    (root / "sub").mkdir(parents=True)
    photo.write_bytes(b"x")
    MoveJournal.create(tmp_path / "journal", "test").move(photo, root / "sub" / "new" / "a.jpg", within=root)
    assert (root / "sub" / "new" / "a.jpg").read_bytes() == b"x" and not photo.exists()
