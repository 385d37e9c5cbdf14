"""The journal file format: a JSON-lines write-ahead log, one per destructive batch.

``<folder>/<op>-<UTC time>-<id>.jsonl``, a header line and then one record a line::

    {"type": "header", "op": "dedupe", "created": "...", "version": 1, "id": "a1b2c3", **meta}
    {"type": "intent", "n": 0, "kind": "move", "src": "/abs/a.jpg", "dst": "/abs/dups/a.jpg",
     "tmp": "/abs/dups/.a.jpg.facesearch-move-a1b2c3-0.part", "made": ["/abs/dups"]}
    {"type": "done", "n": 0, "via": "rename"}        # "copy" across filesystems
    {"type": "failed", "n": 1, "error": "No space left on device"}
    {"type": "intent", "n": 2, "kind": "symlink", "src": ..., "dst": <backup>, "tmp": ...,
     "made": [...], "target": "/abs/keeper.jpg"}
    {"type": "intent", "n": 3, "kind": "write", "src": "/abs/a.jpg.xmp", "dst": "<journal>.d/3.bak",
     "old": "<sha256 of the old bytes, or null: the file is new>", "new": "<sha256 of the bytes written>"}
    {"type": "undone", "at": "...", "restored": 2, "cleaned": 0, "conflicts": 0}

Every record is fsynced before :func:`append` returns, so what the log says was intended
is on disk before the action it announces. What the records *mean* (moving files and putting
them back) is :mod:`facesearch.core.journal`'s job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

from facesearch.core.atomic import fsync_dir
from facesearch.core.errors import FacesearchError, os_reason

VERSION = 1
SUFFIX = ".jsonl"
_OP_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*-(?P<ts>\d{8}T\d{6}\.\d{6}Z)-[0-9a-f]{6}\.jsonl$")
_RESERVED = frozenset({"type", "op", "created", "version", "id"})


def create_journal(folder: os.PathLike, op: str, meta: dict | None = None) -> tuple[Path, str]:
    """Start ``folder/<op>-<UTC time>-<id>.jsonl`` (folder made if needed) with a header line.

    ``op`` names the batch (``dedupe``); ``meta`` (JSON-able) is copied into the header.
    The header is fsynced, file and folder, before this returns ``(path, id)``.
    Raises ``ValueError`` for a bad ``op`` or ``meta``, :class:`FacesearchError` when unwritable.
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
        raise FacesearchError(f"cannot create a journal in {folder}: {os_reason(e)}",
                              hint="the journal folder must be writable; nothing was moved") from e
    fsync_dir(folder)
    return path, jid


def append(path: os.PathLike, record: dict) -> None:
    """Append one record with O_APPEND and fsync it before returning; raises ``OSError``."""
    data = _encode(record)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        if not _ends_a_line(fd):
            data = b"\n" + data  # a kill cut the last line short: start ours on a fresh line
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_journal(journal_path: os.PathLike) -> list[dict]:
    """All records of a journal in order, header first. A line cut short by a kill is skipped."""
    path = Path(journal_path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FacesearchError(f"cannot read the journal {path}: {os_reason(e)}",
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
    """The newest journal in ``folder`` that has something to undo and has not been undone yet, or None."""
    for path in list_journals(folder):
        # An unreadable journal is one killed while writing its header: nothing was moved under it.
        with contextlib.suppress(FacesearchError):
            types = {r.get("type") for r in read_journal(path)}
            # A journal with no intent touched nothing (a batch refused before its first file): undoing
            # it would use up the one `undo` the user has, and leave the batch before it in place.
            if "intent" in types and "undone" not in types:
                return path
    return None


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
