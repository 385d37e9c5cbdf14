"""Write-ahead journal for file moves and rewrites: every destructive batch can be undone.

``dedupe`` moves duplicate photos away, or replaces them by a symlink to their
keeper. Each move is recorded in the journal (:mod:`facesearch.core.journal_file`,
which also describes the format) and fsynced *before* any file is touched, and every
step keeps a complete copy of the file on disk (:mod:`facesearch.core.safe_move`), so
:func:`undo` restores the original tree after a clean run, a kill -9 at any
instant, a full disk or a power cut.

An intent's ``made`` lists the folders the move had to create (undo removes them if empty).
Undo never trusts ``done``: for each intent, newest first, it looks at the disk,
and it only deletes a file when an identical copy exists at the original place.
"""

from __future__ import annotations

import contextlib
import errno
import os
from datetime import datetime, timezone
from pathlib import Path

from facesearch.core.atomic import fsync_dir
from facesearch.core.errors import FacesearchError, os_reason
from facesearch.core.journal_file import append, create_journal, read_journal
from facesearch.core.safe_move import (
    check_move, is_regular, linked_folder, missing_dirs, part_path, remove, same_content, transfer,
)
from facesearch.core.safe_write import (
    backup_path, check_writable, digest, digest_bytes, keep_backup, replace_bytes, undo_write,
)


class MoveJournal:
    """An open journal: :meth:`move` and :meth:`symlink` are the only ways a batch touches files."""

    def __init__(self, path: Path, journal_id: str):
        self._path = Path(path)
        self._id = journal_id
        self._n = 0

    @classmethod
    def create(cls, folder: os.PathLike, op: str, meta: dict | None = None) -> MoveJournal:
        """Start ``folder/<op>-<UTC time>-<id>.jsonl`` (folder made if needed) with a header line.

        ``op`` names the batch (``dedupe``); ``meta`` (JSON-able) is copied into the header.
        The header is fsynced, file and folder, before this returns.
        """
        path, jid = create_journal(folder, op, meta)
        return cls(path, jid)

    @property
    def path(self) -> Path:
        """Where the journal is; ``facesearch undo <path>`` reverts its batch."""
        return self._path

    def move(self, src: os.PathLike, dst: os.PathLike, within: os.PathLike | None = None) -> dict:
        """Move the file ``src`` to ``dst`` (never overwriting), so that :func:`undo` can put it back.

        Same filesystem: one rename. Across filesystems: copy to a hidden ``.part`` file beside
        ``dst``, fsync, check size and SHA-256, rename it into place, then delete ``src``.
        Raises :class:`FacesearchError`, with ``src`` intact, when ``src`` is not a regular file,
        ``dst`` exists or the transfer fails (disk full, permissions).
        With ``within``, refused too when a folder below ``within`` on the way to ``dst`` is a symlink
        (checked before and again after its folders are made), so nothing lands outside ``within``.
        Returns ``{"src", "dst", "n", "via"}`` (``via``: ``"rename"`` or ``"copy"``).
        """
        src, dst, root = _abspath(src), _abspath(dst), within and _abspath(within)
        check_move(src, dst)
        if linked_folder(dst, root):
            raise FacesearchError(f"cannot move {src}: {linked_folder(dst, root)} is a symlink (or not a folder), "
                                  f"and the move must stay inside {root}", hint="nothing was moved; choose another "
                                  "destination, or replace the link by a real folder")
        n, tmp = self._intent("move", src, dst)
        via = self._transfer(n, src, dst, tmp, root)
        self._append({"type": "done", "n": n, "via": via})
        return {"src": str(src), "dst": str(dst), "n": n, "via": via}

    def symlink(self, path: os.PathLike, target: os.PathLike, backup: os.PathLike) -> dict:
        """Replace the file ``path`` by a symlink to ``target``, keeping the original at ``backup``.

        The original goes to ``backup`` exactly as :meth:`move` would move it; :func:`undo`
        removes the link and moves the original back. The link holds ``target``'s absolute path.
        Returns ``{"path", "target", "backup", "n", "via"}``.
        """
        path, target, backup = _abspath(path), _abspath(target), _abspath(backup)
        check_move(path, backup)
        if not target.is_file() or os.path.samefile(target, path):
            raise FacesearchError(f"cannot link {path} to {target}: the target must be another existing file",
                                  hint="the keeper must exist and differ from the duplicate")
        n, tmp = self._intent("symlink", path, backup, target=str(target))
        via = self._transfer(n, path, backup, tmp)
        self._link(n, path, target, backup)
        self._append({"type": "done", "n": n, "via": via})
        return {"path": str(path), "target": str(target), "backup": str(backup), "n": n, "via": via}

    def write(self, path: os.PathLike, data: bytes) -> dict:
        """Replace the file ``path`` by ``data`` (or create it), so that :func:`undo` puts its old bytes
        back (or removes the file this created). The old bytes are first copied, verified, beside the
        journal (:func:`~facesearch.core.safe_write.backup_path`). Returns ``{"path", "n", "created"}``.
        """
        path = _abspath(path)
        check_writable(path)
        n, self._n = self._n, self._n + 1
        old = digest(path)
        backup = backup_path(self._path, n) if old is not None else None
        self._append({"type": "intent", "n": n, "kind": "write", "src": str(path), "dst": backup and str(backup),
                      "old": old, "new": digest_bytes(data)})
        try:
            if backup is not None:
                keep_backup(path, backup)
            replace_bytes(path, data)
        except OSError as e:
            self._failed(n, e)
            raise FacesearchError(f"could not write {path}: {os_reason(e)}",
                                  hint=f"{path} is unchanged; {self._undo_hint()}") from e
        self._append({"type": "done", "n": n})
        return {"path": str(path), "n": n, "created": old is None}

    def _intent(self, kind: str, src: Path, dst: Path, **extra) -> tuple[int, Path]:
        """Journal what is about to happen, durably, before anything on disk changes."""
        n, self._n = self._n, self._n + 1
        tmp = part_path(dst, f"move-{self._id}-{n}")
        made = [str(d) for d in missing_dirs(dst.parent)]
        self._append({"type": "intent", "n": n, "kind": kind, "src": str(src), "dst": str(dst),
                      "tmp": str(tmp), "made": made, **extra})
        return n, tmp

    def _transfer(self, n: int, src: Path, dst: Path, tmp: Path, root: Path | None = None) -> str:
        """Make ``dst``'s folders and move; a failure is journaled and leaves ``src`` in place."""
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if linked_folder(dst, root):  # planted while the folders were made
                raise OSError(errno.ELOOP, f"{linked_folder(dst, root)} became a symlink", str(dst))
            if os.path.lexists(dst):  # appeared after the check: still never overwrite
                raise FileExistsError(errno.EEXIST, "the destination already exists", str(dst))
            return transfer(src, dst, tmp)
        except OSError as e:
            self._failed(n, e)
            raise FacesearchError(f"could not move {src} to {dst}: {os_reason(e)}",
                                  hint=f"{src} is untouched; {self._undo_hint()}") from e

    def _link(self, n: int, path: Path, target: Path, backup: Path) -> None:
        """Create the symlink; if the filesystem refuses (FAT has none), put the original back."""
        try:
            os.symlink(target, path)
            fsync_dir(path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):  # if this fails too, undo still has the intent
                transfer(backup, path, part_path(path, f"undo-{self._id}-{n}"))
            self._failed(n, e)
            raise FacesearchError(f"could not create a symlink at {path}: {os_reason(e)}",
                                  hint=f"move the duplicates instead of linking them; {self._undo_hint()}") from e

    def _append(self, record: dict) -> None:
        try:
            append(self._path, record)
        except OSError as e:
            raise FacesearchError(f"cannot write to the journal {self._path}: {os_reason(e)}",
                                  hint=f"free space or fix permissions, then {self._undo_hint()}") from e

    def _failed(self, n: int, e: OSError) -> None:
        # Best effort: undo reads the disk, not this record, so losing it loses nothing.
        with contextlib.suppress(OSError):
            append(self._path, {"type": "failed", "n": n, "error": os_reason(e)})

    def _undo_hint(self) -> str:
        return f"`facesearch undo {self._path}` puts back every file moved so far"


def undo(journal_path: os.PathLike) -> dict:
    """Put back every file the journal moved, newest first, whether or not the move finished.

    Safe to repeat, and safe after a kill -9 of the batch or of an earlier undo: each intent
    is judged by what is on disk. Only ``dst`` files with an identical copy at ``src`` are
    deleted; anything else unexpected is left alone and listed in ``conflicts``.
    Returns ``{"journal", "restored", "cleaned", "conflicts", "already"}``: files moved back,
    leftovers removed (verified duplicate copies, ``.part`` files, our symlinks), conflicts
    (``{"n", "src", "dst", "reason"}``) and intents that needed nothing.
    """
    path = Path(journal_path)
    records = read_journal(path)
    jid = str(records[0].get("id", "0"))
    tally = {"journal": str(path), "restored": 0, "cleaned": 0, "conflicts": [], "already": 0}
    for rec in reversed([r for r in records if r.get("type") == "intent"]):
        _undo_intent(rec, jid, tally)
    summary = {k: tally[k] for k in ("restored", "cleaned", "already")}
    try:
        append(path, {"type": "undone", "at": _now(), **summary, "conflicts": len(tally["conflicts"])})
    except OSError as e:
        raise FacesearchError(f"files restored, but cannot write to the journal {path}: {os_reason(e)}",
                              hint="running undo again is harmless") from e
    return tally


# --- undo, one intent at a time ---------------------------------------------------------------

def _undo_intent(rec: dict, jid: str, tally: dict) -> None:
    """Revert one intent, whatever stage it reached; an I/O error becomes a conflict, not a stop."""
    if rec.get("kind") == "write":
        return _undo_write(rec, tally)
    src, dst = Path(rec["src"]), Path(rec["dst"])
    back = part_path(src, f"undo-{jid}-{rec['n']}")  # the return trip's part file, beside src
    try:
        tally["cleaned"] += remove(Path(rec["tmp"])) + remove(back)
        if rec.get("kind") == "symlink" and not _remove_link(rec, tally):
            return
        _restore(rec, src, dst, back, tally)
        for folder in rec.get("made", []):
            with contextlib.suppress(OSError):  # only if empty: the user may have put files there
                os.rmdir(folder)
    except OSError as e:
        _conflict(tally, rec, f"could not restore: {os_reason(e)}")


def _undo_write(rec: dict, tally: dict) -> None:
    try:
        outcome, reason = undo_write(rec)
    except OSError as e:
        outcome, reason = "conflict", f"could not restore: {os_reason(e)}"
    if outcome == "conflict":
        _conflict(tally, rec, reason)
    else:
        tally[outcome] += 1


def _remove_link(rec: dict, tally: dict) -> bool:
    """Remove the symlink the journal made; False (a conflict) if another symlink replaced it."""
    path = Path(rec["src"])
    if not os.path.islink(path):
        return True  # never made, or already removed: the original may still need moving back
    if os.readlink(path) != rec["target"]:
        _conflict(tally, rec, f"{path} is now a symlink to {os.readlink(path)}; left alone")
        return False
    os.unlink(path)
    fsync_dir(path.parent)
    tally["cleaned"] += 1
    return True


def _restore(rec: dict, src: Path, dst: Path, back: Path, tally: dict) -> None:
    """Bring the file at ``dst`` back to ``src``, judging only by what exists now."""
    have_src, have_dst = os.path.lexists(src), os.path.lexists(dst)
    if have_src and not have_dst:
        tally["already"] += 1  # never moved, failed, or undone before
    elif have_dst and not have_src:
        if not is_regular(dst):
            return _conflict(tally, rec, f"{dst} is no longer a regular file; left alone")
        src.parent.mkdir(parents=True, exist_ok=True)
        transfer(dst, src, back)
        tally["restored"] += 1
    elif have_src:
        # A cross-filesystem copy finished but the kill came before src was deleted.
        if not same_content(src, dst):
            return _conflict(tally, rec, "both exist and differ; both kept")
        os.unlink(dst)
        fsync_dir(dst.parent)
        tally["cleaned"] += 1
    else:
        _conflict(tally, rec, "neither exists any more")


def _conflict(tally: dict, rec: dict, reason: str) -> None:
    tally["conflicts"].append({"n": rec.get("n"), "src": rec["src"], "dst": rec["dst"], "reason": reason})


def _abspath(path: os.PathLike) -> Path:
    # abspath, not resolve: a symlinked folder in the path must stay as the user named it.
    return Path(os.path.abspath(path))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
