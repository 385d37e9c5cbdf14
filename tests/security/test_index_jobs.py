"""Issue 26, items 3-4 of "Broken": ``POST /api/index`` read any server path, and a second upload was lost.

Index jobs now read only folders under a ``--allow-index-root`` (and the index's own uploads), and
run one after the other in the order they came, each ending ``done`` or ``failed`` on its own.
"""

from __future__ import annotations

import os

import pytest

from sec_helpers import finished, json_error


@pytest.mark.parametrize("path", ["/etc", "{allowed}/../../..", "{allowed}/../photos", "{link}", "{index}"])
def test_index_paths_outside_the_allowed_roots_are_403(live, tmp_path, path):
    link = live.allowed / "link-out"
    if not link.is_symlink():
        os.symlink("/etc", link)  # a symlink inside the root, named as the path: resolved, it leads out
    path = path.format(allowed=live.allowed, link=link, index=live.index)
    with live.client() as c:
        body = json_error(c.post("/api/index", json={"paths": [str(live.allowed), path]}), 403)
        assert "--allow-index-root" in body["hint"] and "outside" in body["error"]
    link.unlink()


def test_without_roots_only_uploads_may_be_indexed(serve):
    bare = serve(index_roots=())
    with bare.client() as c:
        body = json_error(c.post("/api/index", json={"paths": [str(bare.allowed)]}), 403)
        assert "allowed: none" in body["error"]


def test_a_folder_under_an_allowed_root_is_indexed(serve, indexed, tmp_path):
    from facesearch.photos.synthetic import make_identity_folder

    root = tmp_path / "root"
    more = make_identity_folder(root / "more", n_people=1, per_person=2, seed=11)
    server = serve(index_roots=(root,))
    with server.client() as c:
        faces = c.get("/api/health").json()["faces"]
        job = c.post("/api/index", json={"paths": [str(more / ".." / "more")]})
        assert job.status_code == 200, job.text
        state = finished(c, job.json()["id"])
        assert state["status"] == "done" and state["summary"]["faces"] == 2, state
        assert c.get("/api/health").json()["faces"] == faces + 2


def test_a_burst_of_uploads_is_indexed_in_full(live):
    photos = sorted(p for p in live.photos.rglob("*.png"))[:4]
    with live.client() as c:
        faces = c.get("/api/health").json()["faces"]
        jobs = [c.post("/api/index", files={"image": (p.name, p.read_bytes(), "image/png")}, data={"label": "Burst"})
                for p in photos]
        assert all(j.status_code == 200 for j in jobs), [j.text for j in jobs]
        assert {j.json()["status"] for j in jobs[1:]} <= {"queued", "running", "done"}
        states = [finished(c, j.json()["id"]) for j in jobs]
        assert [s["status"] for s in states] == ["done"] * len(photos), states
        assert all(s["summary"]["faces"] == 1 for s in states), states
        assert c.get("/api/health").json()["faces"] == faces + len(photos)
    uploaded = [p for p in (live.index / "uploads" / "Burst").iterdir() if p.is_file()]
    assert len(uploaded) == len(photos)


def test_a_failing_job_fails_alone(live, tmp_path):
    missing = live.allowed / "not-there"
    with live.client() as c:
        bad = c.post("/api/index", json={"paths": [str(missing)]}).json()
        good = c.post("/api/index", json={"paths": [str(live.allowed)]}).json()
        bad_state, good_state = finished(c, bad["id"]), finished(c, good["id"])
        assert bad_state["status"] == "failed" and bad_state["error"], bad_state
        assert good_state["status"] == "done", good_state
        json_error(c.get("/api/jobs/nothing"), 404)
