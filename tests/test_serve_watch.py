"""``serve --watch``: the served index follows the photo folder while the server runs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.indexing.run import IndexOptions, index_collection
from facesearch.service.state import ServeOptions
from facesearch.service.watcher import Watcher
from facesearch.store.face_index import FaceIndex


def _faces(idx: Path) -> int:
    with FaceIndex.open(idx, readonly=True) as store:
        return store.count()


def test_the_served_index_follows_its_folder(tmp_path, collection):
    photos = tmp_path / "watched"
    shutil.copytree(collection / "person_00", photos)
    idx = tmp_path / "idx"
    index_collection(IndexOptions(paths=[str(photos)], index=idx, detector="none", workers=0))
    assert _faces(idx) == 4
    watcher = Watcher(ServeOptions(index=idx, detector="none"), [photos], settle=0.3).start()
    try:
        deadline = time.monotonic() + 60
        while not any(e["event"] == "ready" for e in watcher.events) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.copy(next((collection / "person_01").iterdir()), photos / "new.png")
        while _faces(idx) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        watcher.stop()
    assert _faces(idx) == 5 and not watcher._thread.is_alive()
    assert not [e for e in watcher.events if e["event"] == "error"]


def test_serve_watch_needs_a_folder(tmp_path):
    r = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "idx"), "--watch", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a folder" in r.stderr
