"""``GET /api/faces/ID/clip`` serves raw bytes, so only the very file that was indexed: a clip swapped
for a link to another file, or changed since, is 404 (issue 40's route, docs/security.md). Against a
live server, like the rest of the attack suite."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from facesearch.photos.video_make import Shot, write_clip
from facesearch.service.app import create_app
from facesearch.service.state import ServeOptions
from facesearch.store.face_index import FaceIndex

YALE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "train" / "yalefaces" / "subject01"


@pytest.fixture()
def served_clip(tmp_path, server_for):
    if not YALE.is_dir():
        pytest.skip("../shared/data is absent")
    from facesearch.photos.load import load_array

    (tmp_path / "coll").mkdir()
    clip = tmp_path / "coll" / "clip.mp4"
    write_clip(clip, [Shot([load_array(sorted(YALE.iterdir())[0])], 2.0, "still")])
    r = CliRunner().invoke(cli, ["index", str(tmp_path / "coll"), "--index", str(tmp_path / "idx"), "--workers", "0"])
    assert r.exit_code == 0, r.output
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:
        ids, _ = store.all_embeddings()
    url = server_for(create_app(ServeOptions(index=tmp_path / "idx")))
    with httpx.Client(base_url=url, timeout=30.0) as client:
        assert len(ids) >= 1 and client.get(f"/api/faces/{int(ids[0])}/clip").status_code == 200
        yield client, f"/api/faces/{int(ids[0])}/clip", clip


def test_a_clip_swapped_for_a_link_to_another_file_is_not_served(served_clip, tmp_path):
    client, url, clip = served_clip
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    os.replace(clip, tmp_path / "moved.mp4")
    clip.symlink_to(secret)
    r = client.get(url)
    assert r.status_code == 404 and b"not for the web" not in r.content
    assert r.headers["content-type"].startswith("application/json")


def test_a_clip_changed_since_it_was_indexed_is_not_served(served_clip):
    client, url, clip = served_clip
    clip.write_bytes(b"\x00" * 64)
    assert client.get(url).status_code == 404
