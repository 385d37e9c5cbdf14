"""The indexing pipeline: incremental runs, bad files, crash safety, maintenance."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch.indexing import maintenance
from facesearch.people import labels
from facesearch.store.face_index import FaceIndex
from facesearch.indexing.run import IndexOptions, index_collection
from facesearch.people.labels import index_and_place
from facesearch.models.weights_meta import read_meta, resolve_weights
from facesearch.photos.synthetic import make_identity_folder


def run(paths, index, **kw):
    kw.setdefault("detector", "none")
    kw.setdefault("workers", 0)
    return index_and_place(IndexOptions(paths=[str(p) for p in paths], index=Path(index), **kw))


def test_incremental_add_change_delete_prune(collection, tmp_path):
    idx = tmp_path / "idx"
    s = run([collection], idx, label_from_folder=True)
    assert (s.scanned, s.new, s.faces, s.bad) == (16, 16, 16, 0)
    s = run([collection], idx)
    assert (s.unchanged, s.new, s.updated, s.faces) == (16, 0, 0, 0)
    victim = sorted((collection / "person_00").iterdir())[0]
    Image.open(sorted((collection / "person_01").iterdir())[0]).save(victim)  # content changes
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
    s = run([collection], idx)
    assert (s.updated, s.unchanged) == (1, 15)
    gone = sorted((collection / "person_02").iterdir())[0]
    gone.unlink()
    s = run([collection], idx, prune=True)
    assert s.pruned == 1
    info = maintenance.info(idx)
    assert info["files"] == 15 and info["faces"] == 15


def test_touched_but_identical_file_is_not_reembedded(collection, tmp_path):
    idx = tmp_path / "idx"
    run([collection], idx)
    f = sorted((collection / "person_00").iterdir())[0]
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    s = run([collection], idx)
    assert (s.updated, s.unchanged) == (0, 16)


def test_remove_label_export_verify_rebuild(collection, tmp_path):
    idx = tmp_path / "idx"
    run([collection], idx)
    assert maintenance.remove(idx, [str(collection / "person_03")])["removed_files"] == 4
    assert labels.label(idx, str(collection / "person_00"), "alice")["labelled_faces"] == 4
    out = maintenance.export(idx, str(tmp_path / "e.npz"))
    data = np.load(tmp_path / "e.npz")
    dim = read_meta(resolve_weights(None))["config"]["embedding_dim"]
    assert out["rows"] == 12 and data["emb"].shape == (12, dim)
    assert (data["labels"] == "alice").sum() == 4
    assert list(data["ids"]) == sorted(data["ids"])  # stable order
    assert maintenance.verify(idx)["ok"]
    maintenance.rebuild(idx, index_type="flat")
    assert maintenance.info(idx)["faces"] == 12


def _png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def make_bad_corpus(root: Path) -> tuple[set[str], set[str]]:
    """Good and bad files of every awkward kind; returns (good names, bad names)."""
    root.mkdir(parents=True)
    face = make_identity_folder(root.parent / "src", 1, 1, seed=3)
    src = Image.open(next((face / "person_00").iterdir())).convert("RGB")
    src.save(root / "ok.jpg")
    src.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray((np.asarray(src.convert("L")).astype(np.uint16) * 257)).save(root / "sixteen.png")
    src.convert("RGBA").save(root / "rgba.png")
    src.save(root / "anim.gif", save_all=True, append_images=[src.rotate(90)])
    src.save(root / "фото_ü.jpg")
    data = (root / "ok.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    (root / "huge.png").write_bytes(_png_header(100_000, 100_000))
    good = {"ok.jpg", "cmyk.jpg", "sixteen.png", "rgba.png", "anim.gif", "фото_ü.jpg"}
    bad = {"truncated.jpg", "zero.jpg", "text.jpg", "huge.png"}
    if os.geteuid() != 0:  # root reads anything, so an unreadable file needs a normal user
        shutil.copy(root / "ok.jpg", root / "unreadable.jpg")
        os.chmod(root / "unreadable.jpg", 0)
        bad.add("unreadable.jpg")
    return good, bad


def test_bad_files_are_skipped_and_listed(tmp_path):
    good, bad = make_bad_corpus(tmp_path / "mixed")
    s = run([tmp_path / "mixed"], tmp_path / "idx")
    assert {Path(b["path"]).name for b in s.bad_files} == bad
    assert s.faces == len(good) and s.bad == len(bad)
    s2 = run([tmp_path / "mixed"], tmp_path / "idx")  # not retried until they change
    assert s2.unchanged == len(good) + len(bad) and s2.bad == 0


@pytest.mark.slow
def test_killed_run_leaves_a_loadable_index_and_resumes(tmp_path):
    photos = make_identity_folder(tmp_path / "photos", n_people=20, per_person=20, size=96, seed=5)
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-m", "facesearch", "index", str(photos), "--index", str(idx),
           "--detector", "none", "--workers", "0", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not _has_faces(idx):
        time.sleep(0.02)
    # The kill must land mid-run, else this would only test a finished index.
    assert proc.poll() is None, "the indexer finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert maintenance.verify(idx)["ok"]  # whatever was committed is consistent
    committed = maintenance.info(idx)["faces"]
    assert 0 < committed < 400
    s = run([photos], idx)
    assert s.unchanged == committed and s.new == 400 - committed
    assert maintenance.info(idx)["faces"] == 400 and maintenance.verify(idx)["ok"]


def _has_faces(idx: Path) -> bool:
    if not FaceIndex.exists(idx):
        return False
    try:
        with FaceIndex.open(idx, readonly=True) as s:
            return s.count() > 0
    except Exception:
        return False


def test_multi_face_photo_with_real_detector(tmp_path):
    from facesearch.photos.synthetic import compose_photo, make_identities, render_face

    rng = np.random.default_rng(0)
    faces = [render_face(p, rng, size=150) for p in make_identities(3, seed=11)]
    photo, boxes = compose_photo(faces, (640, 400), rng)
    (tmp_path / "in").mkdir()
    photo.save(tmp_path / "in" / "group.png")
    s = run([tmp_path / "in"], tmp_path / "idx", detector="auto")
    assert s.faces >= 2  # HOG finds ~90% of drawn faces; all 3 usually


def test_rebuild_with_new_weights_keeps_labels(collection, tmp_path):
    from facesearch.models import create_embedder, save_weights

    idx = tmp_path / "idx"
    run([collection], idx, label_from_folder=True)
    old_id = maintenance.info(idx)["manifest"]["model_id"]
    tiny = save_weights(create_embedder("resnet10t", embedding_dim=16, input_size=32).eval(), tmp_path / "tiny")
    out = maintenance.rebuild(idx, weights=str(tiny), detector="none", workers=0)
    info = maintenance.info(idx)
    assert out["rebuilt"] == "embeddings" and info["faces"] == 16
    assert info["manifest"]["model_id"] != old_id and info["manifest"]["dim"] == 16
    assert info["labels"] == 4 and maintenance.verify(idx)["ok"]


def test_a_fifo_named_on_the_command_line_is_reported_not_waited_on(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: the run must not hang holding the lock."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    good = make_identity_folder(tmp_path / "photos", n_people=1, per_person=1, seed=3)
    cmd = [sys.executable, "-m", "facesearch", "index", str(fifo), str(good), "--index", str(tmp_path / "idx"),
           "--detector", "none", "--workers", "0", "--json", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["faces"] == 1 and [b["path"] for b in summary["bad_files"]] == [str(fifo)]
    assert "not a regular file" in summary["bad_files"][0]["error"]


def test_unknown_detector_stops_before_any_worker_or_index(tmp_path, collection):
    from facesearch.core.errors import FacesearchError

    with pytest.raises(FacesearchError, match="unknown face detector 'mtcnn'"):
        index_collection(IndexOptions(paths=[collection], index=tmp_path / "idx", detector="mtcnn", workers=2))
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("engine, address, message", [("spark", None, "unknown engine 'spark'"),
                                                      ("local", "auto", "for the ray engine only")])
def test_engine_options_are_checked_before_any_index(tmp_path, collection, engine, address, message):
    from facesearch.core.errors import FacesearchError

    with pytest.raises(FacesearchError, match=message):
        index_collection(IndexOptions(paths=[collection], index=tmp_path / "idx", engine=engine, address=address))
    assert not (tmp_path / "idx").exists()


def test_rebuild_refuses_concurrent_writes_instead_of_losing_them(collection, tmp_path, monkeypatch):
    from facesearch.core.errors import FacesearchError
    from facesearch.models import create_embedder, save_weights

    idx = tmp_path / "idx"
    run([collection], idx, label_from_folder=True)
    tiny = save_weights(create_embedder("resnet10t", embedding_dim=16, input_size=32).eval(), tmp_path / "tiny")
    probe = str(sorted((collection / "person_01").iterdir())[0])
    attempts = []

    def index_and_meanwhile_label(opts, *a, **kw):  # another process labels while the rebuild runs
        try:
            labels.label(idx, probe, "renamed")
            attempts.append("labelled")
        except FacesearchError as e:
            attempts.append(e.message)
        return index_collection(opts, *a, **kw)

    monkeypatch.setattr(maintenance, "index_collection", index_and_meanwhile_label)
    out = maintenance.rebuild(idx, weights=str(tiny), detector="none", workers=0)
    assert len(attempts) == 1 and "locked" in attempts[0]  # refused, not accepted and then lost
    assert out["summary"]["index"] == str(idx)  # not the .rebuild folder
    assert labels.label(idx, probe, "renamed")["labelled_faces"] == 1  # writable again after the swap


@pytest.mark.slow
def test_ctrl_c_stops_workers_cleanly_with_exit_130(tmp_path):
    # Enough photos that the first commit comes long before the last (the signal must land mid-run).
    photos = make_identity_folder(tmp_path / "photos", n_people=40, per_person=20, size=96, seed=6)
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-m", "facesearch", "index", str(photos), "--index", str(idx), "--detector", "auto",
           "--workers", "2"]
    # Its own group, so the signal reaches it and its workers; and Ctrl-C live in it, as in a terminal,
    # even when this test runs in a background job (whose children inherit an ignored SIGINT).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not _has_faces(idx):
        time.sleep(0.05)
    assert proc.poll() is None, "the indexer finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=60)  # no deadlock
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "interrupted" in err
    assert maintenance.verify(idx)["ok"]


def test_only_the_files_fault_is_permanent(collection, tmp_path, monkeypatch):
    """A bug or MemoryError on one file is reported and retried next run, not stored as a bad file."""
    from facesearch.indexing import detection as pipeline

    victim = str(sorted((collection / "person_02").iterdir())[1])
    real = pipeline.extract_faces

    def flaky(img, detector, align):
        if pipeline.load_array(victim).shape == img.shape and (pipeline.load_array(victim) == img).all():
            raise MemoryError("simulated")
        return real(img, detector, align)

    monkeypatch.setattr(pipeline, "extract_faces", flaky)
    s = run([collection], tmp_path / "idx")
    assert s.failed == 1 and s.failed_files[0]["path"] == victim and s.bad == 0 and s.faces == 15
    monkeypatch.setattr(pipeline, "extract_faces", real)
    again = run([collection], tmp_path / "idx")
    assert again.new == 1 and again.faces == 1 and maintenance.info(tmp_path / "idx")["faces"] == 16


def test_unreadable_folder_is_in_the_summary(collection, tmp_path, monkeypatch):
    locked = collection / "person_03"
    real = os.scandir

    def scandir(path="."):  # root reads any folder here, so refuse one the way a permission would
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    s = run([collection], tmp_path / "idx")
    assert s.faces == 12 and s.bad == 1
    (bad,) = s.bad_files
    assert bad["path"] == str(locked) and bad["error"].startswith("unreadable folder:") and "Permission denied" in bad["error"]


def make_odd_shapes(root: Path) -> set[str]:
    """Images the detector finds odd: a single pixel, a 100000x10 strip, a 300-page TIFF."""
    root.mkdir(parents=True)
    Image.new("RGB", (1, 1), (200, 150, 100)).save(root / "pixel.png")
    Image.new("L", (100_000, 10), 128).save(root / "strip.png")
    pages = [Image.new("L", (32, 32), k % 256) for k in range(300)]
    pages[0].save(root / "pages.tif", save_all=True, append_images=pages[1:])
    return {"pixel.png", "strip.png", "pages.tif"}


def test_odd_shapes_are_no_face_or_a_one_line_reason(tmp_path):
    names = make_odd_shapes(tmp_path / "odd")
    s = run([tmp_path / "odd"], tmp_path / "idx", detector="auto")
    assert s.failed == 0 and s.noface + s.bad == len(names)
    for b in s.bad_files:
        assert "\n" not in b["error"] and len(b["error"]) < 300, b


def test_file_names_that_are_not_utf8_are_indexed_losslessly(collection, tmp_path):
    """Old zip files and cameras leave names like b"bad_\\xff.png"; one must not abort the run."""
    from typer.testing import CliRunner

    from facesearch.cli.main import app

    first = sorted((collection / "person_01").iterdir())[0]
    odd = os.fsdecode(os.fsencode(str(first.parent)) + b"/bad_\xff.png")  # a lone surrogate in Python
    os.rename(first, odd)
    idx = tmp_path / "idx"
    s = run([collection], idx, label_from_folder=True)
    assert s.bad == 0 and s.faces == 16
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.lookup_file(odd) is not None and odd in store.file_paths()
    assert maintenance.verify(idx)["ok"]  # the stored name finds the file on disk again
    r = CliRunner().invoke(app, ["query", odd, "--index", str(idx), "--detector", "none", "--top", "1"])
    assert r.exit_code == 0, r.output
    assert "bad_\\xff.png" in r.stdout.replace("\n", "")  # shown escaped, not a crash
    assert maintenance.remove(idx, [odd])["removed_files"] == 1


def test_detection_workers_start_before_the_model_loads(collection, tmp_path, monkeypatch):
    """Their start-up (imports, detector models) overlaps the model's loading, not follows it."""
    import multiprocessing as mp

    from facesearch.indexing import run as pipeline

    seen = []
    real = pipeline._engine
    monkeypatch.setattr(pipeline, "_engine", lambda opts, weights: seen.append(len(mp.active_children())) or real(opts, weights))
    s = run([collection], tmp_path / "idx", workers=2)
    assert seen == [2] and (s.new, s.faces) == (16, 16)
    seen.clear()
    s = run([collection], tmp_path / "idx2", workers=0)  # in this process: no pool to start
    assert seen == [0] and (s.new, s.faces) == (16, 16)
