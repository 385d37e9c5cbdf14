"""``facesearch serve``: the API through FastAPI's test client, the token, and what may be read."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from facesearch.service.app import create_app
from facesearch.service.bodies import MAX_UPLOAD
from facesearch.service.state import ServeOptions


def TestClient(app, **kw):  # noqa: N802 - the client, addressed as a browser on this machine would (Host check)
    from fastapi.testclient import TestClient as Client

    return Client(app, base_url="http://127.0.0.1:8750", **kw)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from facesearch.photos.synthetic import make_identity_folder

    root = tmp_path_factory.mktemp("serve")
    photos = make_identity_folder(root / "photos", n_people=3, per_person=3, seed=4)
    r = CliRunner().invoke(cli, ["index", str(photos), "--index", str(root / "idx"), "--detector", "none",
                                 "--workers", "0", "--label-from-folder", "--quiet"])
    assert r.exit_code == 0, r.output
    opts = ServeOptions(index=root / "idx", detector="none", token=None)
    return root, photos, create_app(opts)


def png(path) -> bytes:
    return path.read_bytes()


def test_health_and_page(served):
    root, _, app = served
    client = TestClient(app)
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["faces"] == 9 and h["labelled_faces"] == 9 and h["model_id"]
    page = client.get("/")
    assert page.status_code == 200 and "Drop a photo" in page.text and "<script>" not in page.text  # CSP: no inline
    script = client.get("/app.js")
    assert script.headers["content-type"].startswith("text/javascript") and "http" not in script.text


def test_query_answers_like_the_cli(served):
    root, photos, app = served
    probe = sorted((photos / "person_01").iterdir())[0]
    r = TestClient(app).post("/api/query", files={"image": (probe.name, png(probe), "image/png")}, data={"top": "3"})
    assert r.status_code == 200, r.text
    out = r.json()
    copy = root / "upload copy.png"  # an upload is another file with the photo's bytes: so is this copy
    copy.write_bytes(probe.read_bytes())
    cli_out = json.loads(CliRunner().invoke(cli, ["query", str(copy), "--index", str(root / "idx"), "--detector",
                                                  "none", "--json", "--top", "3"]).stdout)
    assert out["faces"][0]["identity"] == cli_out["faces"][0]["identity"] == "person_01"
    assert [m["path"] for m in out["faces"][0]["matches"]] == [m["path"] for m in cli_out["faces"][0]["matches"]]
    assert out["query"] == probe.name and out["tau"] == cli_out["tau"] and len(out["faces"][0]["matches"]) == 3


@pytest.mark.parametrize("payload, status, words", [
    (b"not an image at all", 400, "not a recognised image"),
    (b"", 400, "empty"),
])
def test_bad_uploads_are_one_line_json_errors(served, payload, status, words):
    r = TestClient(served[2]).post("/api/query", files={"image": ("x.jpg", payload, "image/jpeg")})
    assert r.status_code == status and words in r.json()["error"] and "x.jpg" in r.json()["error"]


def test_oversized_uploads_and_silly_parameters_are_refused(served):
    client = TestClient(served[2])
    big = client.post("/api/query", files={"image": ("big.jpg", b"\0" * (MAX_UPLOAD + 1), "image/jpeg")})
    assert big.status_code == 413 and "larger than" in big.json()["error"]
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(buf, "PNG")
    for data in ({"top": "0"}, {"tau": "5"}):
        r = client.post("/api/query", files={"image": ("a.png", buf.getvalue(), "image/png")}, data=data)
        assert r.status_code == 400, r.text


def test_thumbnails_only_for_indexed_faces(served):
    client = TestClient(served[2])
    ok = client.get("/api/faces/1/thumb")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(ok.content)).size[0] <= 160
    assert client.get("/api/faces/99999/thumb").status_code == 404
    assert client.get("/api/faces/..%2F..%2Fetc%2Fpasswd/thumb").status_code in (404, 422)


def test_a_token_guards_every_api_call(served):
    root, photos, _ = served
    app = create_app(ServeOptions(index=root / "idx", detector="none", token="s3cret"))
    client = TestClient(app)
    assert client.get("/api/health").status_code == 401
    assert client.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/faces/1/thumb?token=s3cret").status_code == 200
    assert client.get("/").status_code == 200  # the page itself holds nothing; its calls carry the token


def test_people_and_dedupe_over_http(served):
    client = TestClient(served[2])
    people = client.get("/api/people").json()
    assert {p["name"] for p in people["people"]} == {"person_00", "person_01", "person_02"}
    pid = people["people"][0]["id"]
    assert client.post(f"/api/people/{pid}/name", json={"name": "Ann"}).json()["name"] == "Ann"
    assert client.post(f"/api/people/{pid}/name", json={"nom": 1}).status_code == 400
    assert client.post("/api/people/424242/name", json={"name": "Bo"}).status_code == 404  # unknown ids are 404
    dedupe = client.get("/api/dedupe").json()
    assert "groups" in dedupe and "tau" in dedupe


def finished(client, job: dict, timeout: float = 60.0) -> dict:
    """The job's state once it is no longer queued or running (or when ``timeout`` runs out)."""
    end = time.time() + timeout
    while True:
        state = client.get(f"/api/jobs/{job['id']}").json()
        if state["status"] not in ("queued", "running") or time.time() > end:
            return state
        time.sleep(0.1)


def test_index_job_adds_photos_the_server_then_finds(served, tmp_path):
    from facesearch.photos.synthetic import make_identity_folder

    root, _, served_app = served
    app = create_app(ServeOptions(index=root / "idx", detector="none", index_roots=(tmp_path,)),
                     served_app.state.service.searcher)  # the model, loaded once
    client = TestClient(app)
    more = make_identity_folder(tmp_path / "more", n_people=1, per_person=2, seed=9)
    job = client.post("/api/index", json={"paths": [str(more)]}).json()
    state = finished(client, job)
    assert state["status"] == "done" and state["summary"]["faces"] == 2, state
    assert client.get("/api/health").json()["faces"] == 11  # seen without a restart
    assert client.post("/api/index", json={"paths": "nope"}).status_code == 400
    assert client.get("/api/jobs/nothing").status_code == 404


def test_serve_refuses_an_open_bind_without_a_token():
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"], env={"FACESEARCH_TOKEN": ""})
    assert r.exit_code == 2 and "without a token" in r.stderr


def _chromium():
    import shutil
    from pathlib import Path

    return shutil.which("chromium") or shutil.which("chromium-browser") or \
        ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed")
def test_the_page_searches_a_photo_in_a_real_browser(served, tmp_path):
    """Headless Chromium loads /, sends an indexed face through the page's own upload path, shows the answer."""
    import re
    import socket
    import subprocess
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(served[2], host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}",
               "--virtual-time-budget=20000", "--dump-dom", f"http://127.0.0.1:{port}/#face=4"]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert re.search(r'data-faces="1"', dom), dom[-3000:]
    assert "face-result" in dom and "person_01" in dom  # face 4 is person_01's first photo, named back


def test_an_uploaded_photo_is_indexed_with_its_label(served):
    root, photos, app = served
    client = TestClient(app)
    probe = sorted((photos / "person_02").iterdir())[0]
    job = client.post("/api/index", files={"image": ("../../evil name.png", png(probe), "image/png")},
                      data={"label": "Cleo"}).json()
    state = finished(client, job)
    assert state["status"] == "done" and state["summary"]["faces"] == 1, state
    kept = list((root / "idx" / "uploads").rglob("*"))
    assert [p.parent.name for p in kept if p.is_file()] == ["Cleo"]  # the label's folder, never the sent name
    r = client.post("/api/query", files={"image": (probe.name, png(probe), "image/png")}).json()
    assert r["faces"][0]["matches"][0]["label"] in ("Cleo", "person_02")
    bad = client.post("/api/index", files={"image": ("a.png", png(probe), "image/png")}, data={"label": "../x"})
    assert bad.status_code == 400 and "cannot be a label" in bad.json()["error"]
    junk = client.post("/api/index", files={"image": ("a.png", b"junk", "image/png")})
    assert junk.status_code == 400
