"""Write-ahead journal for file moves: every destructive batch can be undone.

``dedupe`` moves duplicate photos away, or replaces them by a symlink to their
keeper. Each move is recorded in a JSON-lines journal and fsynced *before* any
file is touched, and every step keeps a complete copy of the file on disk, so
:func:`undo` restores the original tree after a clean run, a kill -9 at any
instant, a full disk or a power cut.

One journal per batch, ``<folder>/<op>-<UTC time>-<id>.jsonl``, one record a line::

    {"type": "header", "op": "dedupe", "created": "...", "version": 1, "id": "a1b2c3", **meta}
    {"type": "intent", "n": 0, "kind": "move", "src": "/abs/a.jpg", "dst": "/abs/dups/a.jpg",
     "tmp": "/abs/dups/.a.jpg.facesearch-move-a1b2c3-0.part", "made": ["/abs/dups"]}
    {"type": "done", "n": 0, "via": "rename"}        # "copy" across filesystems
    {"type": "failed", "n": 1, "error": "No space left on device"}
    {"type": "intent", "n": 2, "kind": "symlink", "src": ..., "dst": <backup>, "tmp": ...,
     "made": [...], "target": "/abs/keeper.jpg"}
    {"type": "undone", "at": "...", "restored": 2, "cleaned": 0, "conflicts": 0}

``made`` lists the folders the move had to create (undo removes them if empty).
Undo never trusts ``done``: for each intent, newest first, it looks at the disk,
and it only deletes a file when an identical copy exists at the original place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path

from facesearch.core.atomic import _fsync_dir
from facesearch.core.errors import FacesearchError

VERSION = 1
SUFFIX = ".jsonl"
_OP_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*-(?P<ts>\d{8}T\d{6}\.\d{6}Z)-[0-9a-f]{6}\.jsonl$")
_RESERVED = frozenset({"type", "op", "created", "version", "id"})


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
        if not _OP_RE.match(op):
            raise ValueError(f"journal op must be lowercase letters, digits, '-' or '_': {op!r}")
        if _RESERVED & set(meta or {}):
            raise ValueError(f"journal meta may not set {sorted(_RESERVED & set(meta))}")
        folder, now, jid = Path(folder), datetime.now(timezone.utc), secrets.token_hex(3)
        path = folder / f"{op}-{now:%Y%m%dT%H%M%S.%fZ}-{jid}{SUFFIX}"
        header = {"type": "header", "op": op, "created": now.isoformat(timespec="milliseconds"),
                  "version": VERSION, "id": jid, **(meta or {})}
        data = _encode(header)  # before creating the file: bad meta must not leave an empty journal
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_new(path, data)
        except OSError as e:
            raise FacesearchError(f"cannot create a journal in {folder}: {_reason(e)}",
                                  hint="the journal folder must be writable; nothing was moved") from e
        _fsync_dir(folder)
        return cls(path, jid)

    @property
    def path(self) -> Path:
        """Where the journal is; ``facesearch undo <path>`` reverts its batch."""
        return self._path

    def move(self, src: os.PathLike, dst: os.PathLike) -> dict:
        """Move the file ``src`` to ``dst`` (never overwriting), so that :func:`undo` can put it back.

        Same filesystem: one rename. Across filesystems: copy to a hidden ``.part`` file beside
        ``dst``, fsync, check size and SHA-256, rename it into place, then delete ``src``.
        Raises :class:`FacesearchError`, with ``src`` intact, when ``src`` is not a regular file,
        ``dst`` exists or the transfer fails (disk full, permissions).
        Returns ``{"src", "dst", "n", "via"}`` (``via``: ``"rename"`` or ``"copy"``).
        """
        src, dst = _abspath(src), _abspath(dst)
        _check_move(src, dst)
        n, tmp = self._intent("move", src, dst)
        via = self._transfer(n, src, dst, tmp)
        self._append({"type": "done", "n": n, "via": via})
        return {"src": str(src), "dst": str(dst), "n": n, "via": via}

    def symlink(self, path: os.PathLike, target: os.PathLike, backup: os.PathLike) -> dict:
        """Replace the file ``path`` by a symlink to ``target``, keeping the original at ``backup``.

        The original goes to ``backup`` exactly as :meth:`move` would move it; :func:`undo`
        removes the link and moves the original back. The link holds ``target``'s absolute path.
        Returns ``{"path", "target", "backup", "n", "via"}``.
        """
        path, target, backup = _abspath(path), _abspath(target), _abspath(backup)
        _check_move(path, backup)
        if not target.is_file() or os.path.samefile(target, path):
            raise FacesearchError(f"cannot link {path} to {target}: the target must be another existing file",
                                  hint="the keeper must exist and differ from the duplicate")
        n, tmp = self._intent("symlink", path, backup, target=str(target))
        via = self._transfer(n, path, backup, tmp)
        self._link(n, path, target, backup)
        self._append({"type": "done", "n": n, "via": via})
        return {"path": str(path), "target": str(target), "backup": str(backup), "n": n, "via": via}

    def _intent(self, kind: str, src: Path, dst: Path, **extra) -> tuple[int, Path]:
        """Journal what is about to happen, durably, before anything on disk changes."""
        n, self._n = self._n, self._n + 1
        tmp = _part_path(dst, f"move-{self._id}-{n}")
        made = [str(d) for d in _missing_dirs(dst.parent)]
        self._append({"type": "intent", "n": n, "kind": kind, "src": str(src), "dst": str(dst),
                      "tmp": str(tmp), "made": made, **extra})
        return n, tmp

    def _transfer(self, n: int, src: Path, dst: Path, tmp: Path) -> str:
        """Make ``dst``'s folders and move; a failure is journaled and leaves ``src`` in place."""
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(dst):  # appeared after the check: still never overwrite
                raise FileExistsError(errno.EEXIST, "the destination already exists", str(dst))
            return _transfer(src, dst, tmp)
        except OSError as e:
            self._failed(n, e)
            raise FacesearchError(f"could not move {src} to {dst}: {_reason(e)}",
                                  hint=f"{src} is untouched; {self._undo_hint()}") from e

    def _link(self, n: int, path: Path, target: Path, backup: Path) -> None:
        """Create the symlink; if the filesystem refuses (FAT has none), put the original back."""
        try:
            os.symlink(target, path)
            _fsync_dir(path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):  # if this fails too, undo still has the intent
                _transfer(backup, path, _part_path(path, f"undo-{self._id}-{n}"))
            self._failed(n, e)
            raise FacesearchError(f"could not create a symlink at {path}: {_reason(e)}",
                                  hint=f"move the duplicates instead of linking them; {self._undo_hint()}") from e

    def _append(self, record: dict) -> None:
        try:
            _append(self._path, record)
        except OSError as e:
            raise FacesearchError(f"cannot write to the journal {self._path}: {_reason(e)}",
                                  hint=f"free space or fix permissions, then {self._undo_hint()}") from e

    def _failed(self, n: int, e: OSError) -> None:
        # Best effort: undo reads the disk, not this record, so losing it loses nothing.
        with contextlib.suppress(OSError):
            _append(self._path, {"type": "failed", "n": n, "error": _reason(e)})

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
        _append(path, {"type": "undone", "at": _now(), **summary, "conflicts": len(tally["conflicts"])})
    except OSError as e:
        raise FacesearchError(f"files restored, but cannot write to the journal {path}: {_reason(e)}",
                              hint="running undo again is harmless") from e
    return tally


def read_journal(journal_path: os.PathLike) -> list[dict]:
    """All records of a journal in order, header first. A line cut short by a kill is skipped."""
    path = Path(journal_path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FacesearchError(f"cannot read the journal {path}: {_reason(e)}",
                              hint="give the path of a .jsonl journal written by facesearch") from e
    records = []
    for line in raw.split(b"\n"):
        # Every action follows a complete, fsynced intent, so a partial line never hides a move.
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict):
                records.append(rec)
    if not records or records[0].get("type") != "header":
        raise FacesearchError(f"{path} is not a facesearch journal", hint="give the path of a .jsonl journal")
    if records[0].get("version", 0) > VERSION:
        raise FacesearchError(f"{path} was written by a newer facesearch", hint="undo it with that version")
    return records


def list_journals(folder: os.PathLike) -> list[Path]:
    """The journals in ``folder``, newest first (by the UTC time in their names)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(m["ts"], p.name, p) for p in folder.iterdir() if (m := _NAME_RE.match(p.name)) and p.is_file()]
    return [p for _, _, p in sorted(found, reverse=True)]


def latest_journal(folder: os.PathLike) -> Path | None:
    """The newest journal in ``folder`` that has not been undone yet, or None."""
    for path in list_journals(folder):
        # An unreadable journal is one killed while writing its header: nothing was moved under it.
        with contextlib.suppress(FacesearchError):
            if not any(r.get("type") == "undone" for r in read_journal(path)):
                return path
    return None


# --- undo, one intent at a time ---------------------------------------------------------------

def _undo_intent(rec: dict, jid: str, tally: dict) -> None:
    """Revert one intent, whatever stage it reached; an I/O error becomes a conflict, not a stop."""
    src, dst = Path(rec["src"]), Path(rec["dst"])
    back = _part_path(src, f"undo-{jid}-{rec['n']}")  # the return trip's part file, beside src
    try:
        tally["cleaned"] += _remove(Path(rec["tmp"])) + _remove(back)
        if rec.get("kind") == "symlink" and not _remove_link(rec, tally):
            return
        _restore(rec, src, dst, back, tally)
        for folder in rec.get("made", []):
            with contextlib.suppress(OSError):  # only if empty: the user may have put files there
                os.rmdir(folder)
    except OSError as e:
        _conflict(tally, rec, f"could not restore: {_reason(e)}")


def _remove_link(rec: dict, tally: dict) -> bool:
    """Remove the symlink the journal made; False (a conflict) if another symlink replaced it."""
    path = Path(rec["src"])
    if not os.path.islink(path):
        return True  # never made, or already removed: the original may still need moving back
    if os.readlink(path) != rec["target"]:
        _conflict(tally, rec, f"{path} is now a symlink to {os.readlink(path)}; left alone")
        return False
    os.unlink(path)
    _fsync_dir(path.parent)
    tally["cleaned"] += 1
    return True


def _restore(rec: dict, src: Path, dst: Path, back: Path, tally: dict) -> None:
    """Bring the file at ``dst`` back to ``src``, judging only by what exists now."""
    have_src, have_dst = os.path.lexists(src), os.path.lexists(dst)
    if have_src and not have_dst:
        tally["already"] += 1  # never moved, failed, or undone before
    elif have_dst and not have_src:
        if not _is_regular(dst):
            return _conflict(tally, rec, f"{dst} is no longer a regular file; left alone")
        src.parent.mkdir(parents=True, exist_ok=True)
        _transfer(dst, src, back)
        tally["restored"] += 1
    elif have_src:
        # A cross-filesystem copy finished but the kill came before src was deleted.
        if not _same_content(src, dst):
            return _conflict(tally, rec, "both exist and differ; both kept")
        os.unlink(dst)
        _fsync_dir(dst.parent)
        tally["cleaned"] += 1
    else:
        _conflict(tally, rec, "neither exists any more")


def _conflict(tally: dict, rec: dict, reason: str) -> None:
    tally["conflicts"].append({"n": rec.get("n"), "src": rec["src"], "dst": rec["dst"], "reason": reason})


# --- moving one file --------------------------------------------------------------------------

def _check_move(src: Path, dst: Path) -> None:
    """Refuse before journaling: undo would take a pre-existing identical ``dst`` for our copy."""
    try:
        st = os.lstat(src)
    except OSError as e:
        raise FacesearchError(f"cannot move {src}: {_reason(e)}", hint="check the path; nothing was moved") from e
    if not stat.S_ISREG(st.st_mode):
        raise FacesearchError(f"cannot move {src}: not a regular file",
                              hint="only regular files are moved; symlinks and folders are left alone")
    if os.path.lexists(dst):
        raise FacesearchError(f"cannot move {src}: {dst} already exists",
                              hint="facesearch never overwrites a file; choose an empty destination folder")


def _transfer(src: Path, dst: Path, tmp: Path) -> str:
    """Move ``src`` to ``dst``; at every instant a complete copy exists at ``src`` or ``dst``."""
    if _same_filesystem(src, dst.parent):
        try:
            os.rename(src, dst)
        except OSError as e:
            if e.errno != errno.EXDEV:  # same device, other mount (bind mounts): copy instead
                raise
        else:
            _fsync_dirs(dst.parent, src.parent)
            return "rename"
    _copy_verified(src, tmp)
    os.replace(tmp, dst)
    _fsync_dirs(dst.parent)  # dst must be durable before the only other copy goes
    os.unlink(src)
    _fsync_dirs(src.parent)
    return "copy"


def _copy_verified(src: Path, tmp: Path) -> None:
    """Copy ``src`` to ``tmp`` and check it; a failure removes ``tmp`` (undo removes a killed one)."""
    try:
        _copy_file(src, tmp)
        if _digest(tmp) != _digest(src):
            raise OSError(errno.EIO, "the copy differs from the original")
    except BaseException:  # Ctrl-C too: never leave a half-written part file behind
        _remove(tmp)
        raise


def _copy_file(src: Path, tmp: Path) -> None:
    """Copy bytes, mode and times, then fsync, so the copy survives a power cut. Tests patch this."""
    shutil.copy2(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())


def _same_filesystem(path: Path, folder: Path) -> bool:
    """Whether ``path`` can be renamed into ``folder``. Tests patch this to force the copy path."""
    return os.stat(path).st_dev == os.stat(folder).st_dev


# --- small helpers ----------------------------------------------------------------------------

def _append(path: Path, record: dict) -> None:
    """Append one record with O_APPEND and fsync it before returning."""
    data = _encode(record)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        if not _ends_a_line(fd):
            data = b"\n" + data  # a kill cut the last line short: start ours on a fresh line
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_a_line(fd: int) -> bool:
    """Whether the file is empty or ends with a newline (O_APPEND writes go to the end anyway)."""
    if os.fstat(fd).st_size == 0:
        return True
    os.lseek(fd, -1, os.SEEK_END)
    return os.read(fd, 1) == b"\n"


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)  # EXCL: never reuse one
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _encode(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return os.stat(path).st_size, h.hexdigest()


def _same_content(a: Path, b: Path) -> bool:
    """Identical regular files that are not one file under two names (deleting one would lose it)."""
    if not (_is_regular(a) and _is_regular(b)) or os.path.samefile(a, b):
        return False
    return _digest(a) == _digest(b)


def _is_regular(path: Path) -> bool:
    return stat.S_ISREG(os.lstat(path).st_mode)


def _remove(path: Path) -> int:
    """Delete ``path`` if it is there; 1 if something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


def _missing_dirs(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first (the order to rmdir them)."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _part_path(near: Path, tag: str) -> Path:
    # Hidden, beside the final name (same filesystem, so os.replace is atomic); the name is
    # cut so that even 4-byte UTF-8 characters keep the part name under the 255-byte limit.
    return near.parent / f".{near.name[:40]}.facesearch-{tag}.part"


def _fsync_dirs(*folders: Path) -> None:
    for folder in dict.fromkeys(folders):
        _fsync_dir(folder)


def _abspath(path: os.PathLike) -> Path:
    # abspath, not resolve: a symlinked folder in the path must stay as the user named it.
    return Path(os.path.abspath(path))


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
