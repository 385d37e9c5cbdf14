"""``facesearch watch``: real file operations in a temp dir are seen within seconds -- create, modify,
move (no re-embedding: embedding calls are counted), delete, a sidecar edit -- and the writer lock is
free between batches."""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from facesearch.indexing.watch import WatchOptions, watch
from facesearch.indexing.work import IndexOptions
from facesearch.models import embed as embed_module
from facesearch.store.face_index import FaceIndex

TIMEOUT = 20.0  # seconds an event may take (the settle time is 0.3 s; CI machines are slow)


class Watcher:
    """``watch`` in a thread; its events in a queue; the number of chips embedded."""

    def __init__(self, folder: Path, index: Path, monkeypatch, **options):
        self.events: queue.Queue = queue.Queue()
        self.embedded = 0
        real = embed_module.EmbeddingEngine.embed

        def counting(engine, chips, *a, **kw):
            self.embedded += len(chips)
            return real(engine, chips, *a, **kw)

        monkeypatch.setattr(embed_module.EmbeddingEngine, "embed", counting)
        self.stop = threading.Event()
        opts = WatchOptions(IndexOptions(paths=[str(folder)], index=index, detector="none", workers=0),
                            **({"settle": 0.3} | options))
        self.thread = threading.Thread(target=watch, args=(opts, self.events.put, self.stop), daemon=True)
        self.thread.start()
        self.wait("ready")

    def wait(self, kind: str, **match) -> tuple[dict, float]:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < TIMEOUT:
            try:
                e = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if e["event"] == kind and all(e.get(k) == v for k, v in match.items()):
                return e, time.perf_counter() - t0
            assert e["event"] not in ("error", "pruned"), e  # a prune nobody waits for is one too many
        raise AssertionError(f"no {kind} event {match} within {TIMEOUT} s")

    def quiet_for(self, seconds: float) -> None:
        """No event at all for ``seconds`` (a deadline, not a sleep that hopes: it fails on the first one)."""
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            try:
                e = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            raise AssertionError(f"unexpected event {e}")

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self):
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def watcher(collection, tmp_path, monkeypatch):
    w = Watcher(collection, tmp_path / "idx", monkeypatch)
    yield w
    w.close()


def test_create_modify_move_delete(watcher, collection, tmp_path):
    idx = tmp_path / "idx"
    latencies = {}
    src = sorted((collection / "person_00").iterdir())[0]
    new = collection / "person_00" / "new.png"
    shutil.copy(src, new)
    e, latencies["create"] = watcher.wait("indexed", files=1)
    assert e["faces"] == 1
    Image.open(sorted((collection / "person_01").iterdir())[0]).save(new)  # new content, same name
    _, latencies["modify"] = watcher.wait("indexed", files=1)
    with FaceIndex.open(idx) as store:  # the lock is free between batches: label the face meanwhile
        store.set_label(str(new), "Zoe")
    before = watcher.embedded
    moved = collection / "person_03" / "renamed.png"
    new.rename(moved)
    e, latencies["move"] = watcher.wait("moved")
    assert e["from"].endswith("new.png") and e["to"].endswith("renamed.png")
    assert watcher.embedded == before  # not re-embedded
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.file_info(str(moved))["label"] == "Zoe" and store.file_info(str(new)) == {}
        n_faces = store.count()
    moved.unlink()
    _, latencies["delete"] = watcher.wait("pruned", files=1)  # after the grace window (5 x 0.3 s)
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.count() == n_faces - 1
    print("watch latency (s):", json.dumps({k: round(v, 2) for k, v in latencies.items()}))
    assert max(latencies.values()) < TIMEOUT


def test_folder_move_keeps_faces_without_embedding(watcher, collection, tmp_path):
    before = watcher.embedded
    (collection / "person_02").rename(collection / "renamed_person")
    for _ in range(4):
        watcher.wait("moved")
    assert watcher.embedded == before
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:
        assert sum("renamed_person" in p for p in store.file_paths()) == 4
        assert not any("person_02" in p for p in store.file_paths())


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_sidecar_change_is_read_again(watcher, collection):
    from tests.test_xmp import exiftool, mwg_arg

    photo = sorted((collection / "person_01").iterdir())[0]
    exiftool("-o", str(photo) + ".xmp", mwg_arg("Yann", 0.5, 0.5, 0.8, 0.8, dims=(150, 150)), str(photo))
    e, _ = watcher.wait("indexed", files=1)
    assert e["xmp_labelled"] == 1


def test_cli_json_events_and_ctrl_c_exits_130(collection, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from facesearch.cli.main import app; app()", "watch", str(collection),
           "--index", str(tmp_path / "idx"), "--detector", "none", "--workers", "0", "--settle", "0.3", "--json"]
    # Ctrl-C live in the watcher, as in a terminal, even when the suite runs as a background job (whose
    # children inherit an ignored SIGINT: three runs under `nohup … &` hung here until the deadline).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = [_event(proc) for _ in range(2)]
        assert [e["event"] for e in lines] == ["indexed", "ready"] and lines[0]["files"] == 16
        shutil.copy(sorted((collection / "person_00").iterdir())[0], collection / "person_00" / "copy.png")
        e = _event(proc)
        assert (e["event"], e["files"]) == ("indexed", 1)
        proc.send_signal(signal.SIGINT)
        try:  # it stops in about a second; past the deadline its stacks (SIGABRT, the fault handler) say where
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            pytest.fail("watch did not stop within 30 s of Ctrl-C:\n" + proc.communicate(timeout=30)[1][-8000:])
        assert rc == 130
    finally:
        proc.kill()
    assert "Traceback" not in proc.stderr.read()


def _event(proc) -> dict:
    """The next JSON event on the watcher's stdout; where it ended instead, how (exit status, stderr)."""
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"watch ended (exit {proc.wait(30)}) before its next event:\n{proc.stderr.read()[-8000:]}")
    return json.loads(line)


def test_cli_refuses_a_file(collection, tmp_path):
    from typer.testing import CliRunner

    from facesearch.cli.main import app

    photo = sorted((collection / "person_00").iterdir())[0]
    r = CliRunner().invoke(app, ["watch", str(photo), "--index", str(tmp_path / "idx")])
    assert r.exit_code == 2 and "not a folder" in r.output


# --- moves out and back, a vanished root, symlink loops (issue 36, items 4 and 5) ----------------


def _people_cli(idx: Path, *args: str):
    from typer.testing import CliRunner

    from facesearch.cli.main import app

    r = CliRunner().invoke(app, ["people", "--index", str(idx), *args])
    assert r.exit_code == 0, r.output
    return r


def _people(idx: Path) -> list[dict]:
    return json.loads(_people_cli(idx, "--json").stdout)["people"]


def _name(idx: Path, person: int, name: str) -> None:
    _people_cli(idx, "name", str(person), name)


@pytest.fixture
def album(collection, tmp_path) -> Path:
    """One person's four photos alone in a folder, so they cluster as one person of their own."""
    folder = tmp_path / "album"
    folder.mkdir()
    (collection / "person_02").rename(folder / "trip")
    return folder


def test_folder_moved_out_and_back_within_the_grace_window_is_a_no_op(album, collection, tmp_path, monkeypatch):
    with Watcher(album, tmp_path / "idx", monkeypatch, grace=30.0) as w:  # a slow hand; the test never waits it out
        [person] = _people(tmp_path / "idx")
        _name(tmp_path / "idx", person["id"], "Ann")
        before = w.embedded
        (album / "trip").rename(tmp_path / "away")
        shutil.copy(collection / "person_00" / "000.png", album / "sentinel.png")  # another face: no move
        w.wait("indexed", files=1)  # the batch that saw the folder go was handled (and pruned nothing)
        (tmp_path / "away").rename(album / "trip")
        shutil.copy(collection / "person_01" / "000.png", album / "sentinel2.png")
        w.wait("indexed", files=1)
        assert w.embedded == before + 2  # the sentinels only: the returning photos were never forgotten
        [ann] = [p for p in _people(tmp_path / "idx") if p["name"] == "Ann"]
        assert ann["id"] == person["id"] and sum("trip" in f["path"] for f in ann["faces"]) == 4


def test_folder_back_after_it_was_pruned_gets_its_person_and_name(album, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    with Watcher(album, idx, monkeypatch) as w:
        [person] = _people(idx)
        _name(idx, person["id"], "Ann")
        (album / "trip").rename(tmp_path / "away")
        w.wait("pruned", files=4)
        (tmp_path / "away").rename(album / "returned")
        w.wait("indexed", files=4)
        people = _people(idx)
        assert [(p["id"], p["name"]) for p in people] == [(person["id"], "Ann")]  # no ghost, no unnamed twin
        assert sum("returned" in f["path"] for f in people[0]["faces"]) == 4


def test_watched_root_moved_away_is_an_error_and_prunes_nothing(collection, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    with Watcher(collection, idx, monkeypatch) as w:
        collection.rename(tmp_path / "elsewhere")
        e, _ = w.wait("error")
        assert e["root"] == str(collection) and "nothing was pruned" in e["error"]
        w.quiet_for(4.0)  # over two grace windows (5 x 0.3 s): no prune, no second error for the same root
        with FaceIndex.open(idx, readonly=True) as store:
            assert len(store.file_paths()) == 16 and store.count() == 16


def test_symlink_loop_under_a_watched_root_indexes_nothing_twice(collection, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    with Watcher(collection, idx, monkeypatch) as w:
        (collection / "person_01" / "loop").symlink_to(collection, target_is_directory=True)  # a folder event
        shutil.copy(sorted((collection / "person_00").iterdir())[0], collection / "person_03" / "new.png")
        w.wait("indexed", files=1)
        with FaceIndex.open(idx, readonly=True) as store:
            paths = store.file_paths()
        assert len(paths) == 17 and not any("/loop/" in p for p in paths)
