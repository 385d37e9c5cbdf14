"""The move journal: every batch of moves can be undone, byte for byte, whatever stopped it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from facesearch.core import journal_file, safe_move
from facesearch.core.errors import FacesearchError
from facesearch.core.journal import MoveJournal, undo
from facesearch.core.journal_file import latest_journal, list_journals, read_journal

REPO = Path(__file__).resolve().parents[1]
MODES = (0o644, 0o600, 0o755, 0o640)


def make_tree(root: Path, n: int, seed: int, max_size: int = 4000) -> list[Path]:
    """``n`` files of random bytes and modes in nested folders; returns them sorted."""
    rng = random.Random(seed)
    files = []
    for i in range(n):
        p = root / f"d{i % 4}" / f"e{i % 3}" / f"f{i:03d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(0, max_size)))
        p.chmod(MODES[i % len(MODES)])
        files.append(p)
    return sorted(files)


def snapshot(root: Path) -> dict:
    """Relative path -> (sha256, mode) for files, ("link", target) for symlinks."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o7777)
    return out


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]


def parts_under(*roots: Path) -> list[Path]:
    return [p for r in roots for p in r.rglob("*.part")]


def records(path: Path, kind: str) -> list[dict]:
    return [r for r in read_journal(path) if r["type"] == kind]


def move_tree(j: MoveJournal, src_root: Path, dst_root: Path, files: list[Path]) -> None:
    for p in files:
        j.move(p, dst_root / p.relative_to(src_root))


def moved_batch(tmp_path: Path, n: int, seed: int):
    """``n`` photos moved from photos/ to dups/ under a fresh journal: (src, dst, snapshot before, journal)."""
    src, dst = tmp_path / "photos", tmp_path / "dups"
    files = make_tree(src, n, seed=seed)
    before = snapshot(src)
    j = MoveJournal.create(tmp_path / "journals", "dedupe", {})
    move_tree(j, src, dst, files)
    return src, dst, before, j


# --- 1. a clean batch ---------------------------------------------------------------------------

def test_clean_batch_then_undo_is_byte_identical(tmp_path):
    src, dst = tmp_path / "photos", tmp_path / "dups"
    files = make_tree(src, 20, seed=1)
    before = snapshot(src)
    dst.mkdir()
    j = MoveJournal.create(tmp_path / "journals", "dedupe", {"tau": 0.4})

    move_tree(j, src, dst, files)
    assert not files_under(src)
    assert snapshot(dst) == before  # moved as is: same bytes, same modes
    header = read_journal(j.path)[0]
    assert header["op"] == "dedupe" and header["tau"] == 0.4 and header["version"] == 1
    assert len(records(j.path, "intent")) == len(records(j.path, "done")) == 20
    assert {r["via"] for r in records(j.path, "done")} == {"rename"}

    result = undo(j.path)
    assert result == {"journal": str(j.path), "restored": 20, "cleaned": 0, "conflicts": [], "already": 0}
    assert snapshot(src) == before
    assert not files_under(dst)
    assert dst.is_dir() and not any(dst.iterdir())  # the folders the batch made are gone, dst itself kept
    assert read_journal(j.path)[-1]["type"] == "undone"


# --- 2. kill -9 at random moments ----------------------------------------------------------------

CHILD = r"""
import sys, time
from pathlib import Path
from facesearch.core import journal, safe_move
src, dst, jdir, seed, cross = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
if cross:  # same disk, but take the copy + verify + replace + unlink path
    safe_move._same_filesystem = lambda a, b: False
j = journal.MoveJournal.create(jdir, "killtest", {"seed": seed})
files = sorted(p for p in src.rglob("*") if p.is_file())
keeper = files[0]
for i, p in enumerate(files[1:], 1):
    target = dst / p.relative_to(src)
    if i % 5 == 0:
        j.symlink(p, keeper, target)
    else:
        j.move(p, target)
    time.sleep(0.004)
print("finished", flush=True)
"""

UNDO_CHILD = r"""
import sys
from facesearch.core import journal, safe_move
if sys.argv[2] == "1":
    safe_move._same_filesystem = lambda a, b: False
journal.undo(sys.argv[1])
"""


def _spawn(script: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_journal(jdir: Path, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = list_journals(jdir)
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"child exited before writing a journal: {proc.stderr.read().decode()}")
        time.sleep(0.002)
    pytest.fail("child wrote no journal in 20 s")


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL ``proc``; True if it was still running (a mid-run kill)."""
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    return running


@pytest.mark.slow
def test_kill_9_at_random_moments_then_undo(tmp_path):
    mid_run = 0
    for seed in range(10):
        rng = random.Random(seed)
        root = tmp_path / f"trial{seed}"
        src, dst, jdir = root / "photos", root / "dups", root / "journals"
        make_tree(src, 200, seed=seed, max_size=20000)
        before = snapshot(src)
        cross = seed % 2  # half the trials take the cross-filesystem copy path

        proc = _spawn(CHILD, src, dst, jdir, seed, cross)
        path = _wait_for_journal(jdir, proc)
        time.sleep(rng.uniform(0.05, 0.6))
        mid_run += _kill(proc)

        if seed % 3 == 0:  # kill an undo too: undo must survive its own kill -9
            undoer = _spawn(UNDO_CHILD, path, cross)
            time.sleep(rng.uniform(0.05, 0.3))
            _kill(undoer)
        result = undo(path)
        assert result["conflicts"] == [], (seed, result)
        assert snapshot(src) == before, seed
        assert not files_under(dst), seed
        assert not parts_under(root), seed
    assert mid_run >= 5, f"only {mid_run} of 10 kills landed mid-run"


# --- 3. across filesystems -----------------------------------------------------------------------

@pytest.fixture()
def other_fs(tmp_path, request) -> Path:
    """A folder on /dev/shm (tmpfs), which is another filesystem than tmp_path here."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is missing or on the same filesystem as tmp_path")
    folder = Path(tempfile.mkdtemp(prefix="facesearch-test-", dir=shm))
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    return folder


def test_cross_filesystem_moves_copy_verify_and_undo(tmp_path, other_fs):
    src = tmp_path / "photos"
    files = make_tree(src, 8, seed=3)
    before = snapshot(src)
    j = MoveJournal.create(tmp_path / "journals", "dedupe", {})

    move_tree(j, src, other_fs / "dups", files)
    assert {r["via"] for r in records(j.path, "done")} == {"copy"}
    assert snapshot(other_fs / "dups") == before  # copy2 kept the modes; the bytes were verified
    assert not files_under(src) and not parts_under(src, other_fs)

    result = undo(j.path)
    assert result["restored"] == 8 and result["conflicts"] == []
    assert snapshot(src) == before
    assert not files_under(other_fs) and not parts_under(src, other_fs)


# --- 4. disk full in the middle of a copy -------------------------------------------------------

def test_disk_full_mid_copy_keeps_src_and_undo_restores_the_rest(tmp_path, monkeypatch):
    src, dst = tmp_path / "photos", tmp_path / "dups"
    files = make_tree(src, 5, seed=4)
    files[2].write_bytes(os.urandom(5000))  # big enough that "half" is a real partial file
    before = snapshot(src)
    real_copy, calls = safe_move._copy_file, []

    def copy_until_full(a: Path, tmp: Path) -> None:
        calls.append(a)
        if len(calls) != 3:
            return real_copy(a, tmp)
        tmp.write_bytes(a.read_bytes()[: a.stat().st_size // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safe_move, "_same_filesystem", lambda a, b: False)
    monkeypatch.setattr(safe_move, "_copy_file", copy_until_full)
    j = MoveJournal.create(tmp_path / "journals", "dedupe", {})
    with pytest.raises(FacesearchError) as err:
        move_tree(j, src, dst, files)

    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert f"facesearch undo {j.path}" in err.value.hint
    assert snapshot(src)[str(files[2].relative_to(src))] == before[str(files[2].relative_to(src))]
    assert not parts_under(tmp_path)
    assert [(r["n"], r["error"]) for r in records(j.path, "failed")] == [(2, "No space left on device")]

    result = undo(j.path)
    assert (result["restored"], result["already"], result["conflicts"]) == (2, 1, [])
    assert snapshot(src) == before
    assert not files_under(dst)


# --- 5. killed after the copy, before the unlink ------------------------------------------------

def _hand_made_intent(tmp_path: Path, dst_bytes: bytes) -> tuple[Path, Path, Path, Path]:
    """The disk as a kill between copy and unlink leaves it: src, dst (and a stale part file)."""
    src, dst = tmp_path / "photos" / "a.jpg", tmp_path / "dups" / "a.jpg"
    src.parent.mkdir()
    dst.parent.mkdir()
    src.write_bytes(b"original bytes" * 100)
    dst.write_bytes(dst_bytes)
    j = MoveJournal.create(tmp_path / "journals", "dedupe", {})
    tmp = dst.parent / ".a.jpg.facesearch-move-x-0.part"
    tmp.write_bytes(b"orig")
    journal_file.append(j.path, {"type": "intent", "n": 0, "kind": "move", "src": str(src), "dst": str(dst),
                                 "tmp": str(tmp), "made": []})
    return j.path, src, dst, tmp


def test_both_exist_identical_undo_removes_dst_keeps_src(tmp_path):
    path, src, dst, tmp = _hand_made_intent(tmp_path, b"original bytes" * 100)
    result = undo(path)
    assert (result["restored"], result["cleaned"], result["conflicts"]) == (0, 2, [])  # dst and the part
    assert src.read_bytes() == b"original bytes" * 100
    assert not dst.exists() and not tmp.exists()


def test_both_exist_but_differ_is_a_conflict_and_both_are_kept(tmp_path):
    path, src, dst, _ = _hand_made_intent(tmp_path, b"something else")
    result = undo(path)
    assert [c["reason"] for c in result["conflicts"]] == ["both exist and differ; both kept"]
    assert src.read_bytes() == b"original bytes" * 100 and dst.read_bytes() == b"something else"


# --- 6. a journal cut short by a kill -----------------------------------------------------------

def test_garbled_last_line_is_skipped(tmp_path):
    src, dst, before, j = moved_batch(tmp_path, 3, seed=6)
    with open(j.path, "ab") as f:
        f.write(b'{"type": "intent", "n": 3, "kind": "move", "src": "/pho')

    result = undo(j.path)
    assert (result["restored"], result["conflicts"]) == (3, [])
    assert snapshot(src) == before
    assert read_journal(j.path)[-1]["type"] == "undone"  # written on a fresh line after the fragment


# --- 7. no overwrite, idempotent undo, symlinks, finding journals -------------------------------

def test_refuses_to_overwrite_and_journals_nothing(tmp_path):
    src, dst = tmp_path / "a.jpg", tmp_path / "dups" / "a.jpg"
    dst.parent.mkdir()
    src.write_bytes(b"mine")
    dst.write_bytes(b"theirs")
    j = MoveJournal.create(tmp_path / "journals", "dedupe", {})
    with pytest.raises(FacesearchError, match="already exists"):
        j.move(src, dst)
    assert src.read_bytes() == b"mine" and dst.read_bytes() == b"theirs"
    assert records(j.path, "intent") == []  # so undo can never take dst for our copy
    with pytest.raises(FacesearchError, match="not a regular file"):
        j.move(tmp_path / "dups", tmp_path / "elsewhere")


def test_undo_twice_is_harmless(tmp_path):
    src, dst, before, j = moved_batch(tmp_path, 6, seed=7)
    assert undo(j.path)["restored"] == 6
    again = undo(j.path)
    assert (again["restored"], again["cleaned"], again["already"], again["conflicts"]) == (0, 0, 6, [])
    assert snapshot(src) == before
    assert len(records(j.path, "undone")) == 2


def test_symlink_round_trip(tmp_path):
    tree = tmp_path / "photos"
    keeper, dup = tree / "keeper.jpg", tree / "sub" / "dup.jpg"
    dup.parent.mkdir(parents=True)
    keeper.write_bytes(b"keeper bytes")
    dup.write_bytes(b"duplicate bytes")
    dup.chmod(0o600)
    before = snapshot(tree)
    backup = tmp_path / "backup" / "sub" / "dup.jpg"
    j = MoveJournal.create(tmp_path / "journals", "dedupe", {})

    out = j.symlink(dup, keeper, backup)
    assert out["n"] == 0 and dup.is_symlink() and os.readlink(dup) == str(keeper)
    assert dup.read_bytes() == b"keeper bytes" and backup.read_bytes() == b"duplicate bytes"
    with pytest.raises(FacesearchError, match="not a regular file"):  # a link is never moved again
        j.symlink(dup, keeper, tmp_path / "backup" / "again.jpg")

    result = undo(j.path)
    assert (result["restored"], result["cleaned"], result["conflicts"]) == (1, 1, [])  # 1 cleaned: the link
    assert snapshot(tree) == before and not dup.is_symlink()
    assert not (tmp_path / "backup").exists()  # the folders the batch made are gone too


def test_list_and_latest_journal(tmp_path):
    folder = tmp_path / "journals"
    assert list_journals(folder) == [] and latest_journal(folder) is None
    older, newer = MoveJournal.create(folder, "dedupe", {}), MoveJournal.create(folder, "dedupe", {})
    older.write(tmp_path / "a.txt", b"a")
    newer.write(tmp_path / "b.txt", b"b")
    older, newer = older.path, newer.path
    empty = MoveJournal.create(folder, "dedupe", {}).path  # refused before its first file: nothing to undo
    (folder / "notes.txt").write_text("not a journal")
    assert list_journals(folder) == [empty, newer, older]
    assert latest_journal(folder) == newer
    undo(newer)
    assert latest_journal(folder) == older
    undo(older)
    assert latest_journal(folder) is None


def test_create_checks_op_and_meta(tmp_path):
    with pytest.raises(ValueError):
        MoveJournal.create(tmp_path, "../evil", {})
    with pytest.raises(ValueError):
        MoveJournal.create(tmp_path, "dedupe", {"type": "x"})
    (tmp_path / "x.jsonl").write_text('{"type": "intent"}\n')
    with pytest.raises(FacesearchError, match="not a facesearch journal"):
        undo(tmp_path / "x.jsonl")
    assert json.loads(MoveJournal.create(tmp_path, "dedupe", {"k": 1}).path.read_text())["k"] == 1
