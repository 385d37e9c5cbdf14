"""Rewriting a file in place so that undo gets its old bytes back: the building blocks of a journaled
write (:meth:`facesearch.core.journal.MoveJournal.write`).

The old bytes are copied, verified, into a folder beside the journal before the file is replaced
(atomically, keeping its permission bits); undo judges each write by what is on disk now: it puts
the old bytes back only over the very bytes facesearch wrote, removes a file facesearch created, and
leaves anything changed since alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from facesearch.core.atomic import atomic_path, fsync_dir
from facesearch.core.errors import FacesearchError


def digest(path: Path) -> str | None:
    """SHA-256 of the file ``path`` (None when there is none); raises OSError if it cannot be read."""
    try:
        with open(path, "rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_writable(path: Path) -> None:
    """Refuse to rewrite anything but a regular file (or nothing): a symlink's target is not ours to change.
    A read-only file is refused too: replacing it through its folder would work, but its owner said no."""
    exists = os.path.lexists(path)
    if exists and not stat.S_ISREG(os.lstat(path).st_mode):
        raise FacesearchError(f"cannot write {path}: not a regular file",
                              hint="facesearch only writes regular files; symlinks and folders are left alone")
    if (exists and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK | os.X_OK):
        raise FacesearchError(f"cannot write {path}: {'the file' if exists else 'its folder'} is read-only",
                              hint="make it writable, or leave it out")


def backup_path(journal: Path, n: int) -> Path:
    """Where write ``n`` of ``journal`` keeps the old bytes: ``<journal>.d/<n>.bak``."""
    return journal.with_name(journal.stem + ".d") / f"{n}.bak"


def keep_backup(path: Path, backup: Path) -> None:
    """Copy ``path`` (bytes, mode, times) to ``backup`` and make it durable; OSError when the copy differs."""
    backup.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, backup)
    with open(backup, "rb+") as f:
        os.fsync(f.fileno())
    fsync_dir(backup.parent)
    if digest(backup) != digest(path):
        raise OSError(f"the backup of {path} differs from it")


def replace_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, keeping the permission bits an existing file had."""
    mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else None
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    if mode is not None:  # atomic_path gives a new file the umask's mode
        os.chmod(path, mode)


def undo_write(rec: dict) -> tuple[str, str | None]:
    """Revert one journaled write; ``(outcome, reason)``: ``restored``, ``already`` or ``conflict``."""
    path, backup = Path(rec["src"]), Path(rec["dst"]) if rec.get("dst") else None
    now = digest(path) if not os.path.islink(path) else "symlink"
    if now == rec.get("old"):
        _drop(backup)
        return "already", None  # never written, or undone before
    if now != rec.get("new"):
        return "conflict", f"{path} changed after facesearch wrote it; left alone"
    if backup is None:  # facesearch created it
        os.unlink(path)
        fsync_dir(path.parent)
        return "restored", None
    if digest(backup) != rec.get("old"):
        return "conflict", f"the backup {backup} is missing or damaged; {path} left as facesearch wrote it"
    with atomic_path(path) as tmp:
        shutil.copyfile(backup, tmp)
    shutil.copystat(backup, path)  # mode and times as they were too: the index sees the file unchanged
    _drop(backup)
    return "restored", None


def _drop(backup: Path | None) -> None:
    if backup is None:
        return
    try:
        os.unlink(backup)
        os.rmdir(backup.parent)  # only once the batch's last backup is gone
    except OSError:
        pass
