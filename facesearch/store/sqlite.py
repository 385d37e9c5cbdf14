"""The index's SQLite database: schema, connection, path encoding and parameter chunks.

Shared by every module that writes SQL against ``meta.sqlite`` (the catalogue, the
people tables), so the connection settings and the encoding of file names have one home.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from facesearch.core.errors import FacesearchError

CHUNK = 900  # SQLite host-parameter limit is 999 on old builds
# Set once an index's photo names follow the one-face rule (facesearch.store.labels): a new index
# starts so; one made before has its names re-placed by the first writing command.
LABELS_PLACED = "labels_placed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER, mtime_ns INTEGER, hash TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'bad', 'noface')), error TEXT,
    n_faces INTEGER NOT NULL DEFAULT 0, label TEXT, indexed_at REAL, run_id INTEGER);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE TABLE IF NOT EXISTS faces(
    id INTEGER PRIMARY KEY AUTOINCREMENT, file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL, score REAL, landmarks TEXT, label TEXT, emb BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS faces_file ON faces(file_id);
CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, started REAL, finished REAL, args TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT);
""" + "\n" + """
CREATE TABLE IF NOT EXISTS photo_hashes(
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE, dhash INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS people(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS face_people(
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
    pinned INTEGER NOT NULL DEFAULT 0, not_people TEXT);
CREATE INDEX IF NOT EXISTS face_people_person ON face_people(person_id);
CREATE TABLE IF NOT EXISTS sidecars(
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE, signature TEXT NOT NULL);
""" + "\n" + """
CREATE TABLE IF NOT EXISTS removed_files(
    id INTEGER PRIMARY KEY, hash TEXT NOT NULL, path TEXT NOT NULL, label TEXT, faces TEXT NOT NULL,
    removed_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS removed_files_hash ON removed_files(hash);
CREATE TABLE IF NOT EXISTS video_faces(
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE, time_s REAL NOT NULL,
    track INTEGER NOT NULL, start_s REAL NOT NULL, end_s REAL NOT NULL);
CREATE INDEX IF NOT EXISTS faces_labelled ON faces(label) WHERE label IS NOT NULL;
"""
# Added after format 1 shipped: writers create them on open, readers of an older index see no
# hashes, no people (facesearch.store.people), no sidecars (a photo without one reads as such) and no
# forgotten files kept for their return (facesearch.store.removed; only writers read them), and no
# clips' moments (facesearch.store.moments: an older index has photos only). faces_labelled: every
# query counts the named faces (the gallery its tau is chosen for); without it that count read the
# whole faces table: 4.9 ms a query at 10,000 faces, 0.003 ms with it.
PHOTO_HASHES = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS photo_hashes"):]


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL and foreign keys."""
    try:
        db = _open(path, readonly)
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a damaged file fails here, not mid-command
    except sqlite3.DatabaseError as e:
        raise FacesearchError(f"the index database {path} is damaged or not an index ({e})",
                              hint="nothing was changed; rebuild it: move the index folder aside and re-run "
                                   "`facesearch index` on your photo folders (labels: `facesearch export` first "
                                   "if it still opens)") from e
    except sqlite3.Error as e:
        raise FacesearchError(f"cannot open the index database {path}: {e}",
                              hint="check the folder's permissions, or rebuild the index") from e
    return db


def _open(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        # A folder nobody may write (a read-only mount, a copy on a DVD) has no WAL to wait
        # for, and SQLite could not create its -shm file there: open it as immutable.
        mode = "mode=ro" if os.access(path.parent, os.W_OK) else "immutable=1"
        return sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, isolation_level=None)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
    return db


def create_schema(db: sqlite3.Connection, fmt: int) -> None:
    """Tables of a new index, with a fresh identity and generation 0."""
    with db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO state(key, value) VALUES (?, ?)",
                       [("uuid", uuid.uuid4().hex), ("generation", "0"), ("format", str(fmt)),
                        (LABELS_PLACED, "1")])


def has_our_schema(path: Path) -> bool:
    """Whether the database at ``path`` is one :func:`create_schema` made: our tables and our state keys.

    Opens ``path`` for writing (SQLite may replay its WAL into it): give it a copy of a file not known
    to be ours. A file that is not SQLite at all is simply not ours.
    """
    try:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            state = dict(db.execute("SELECT key, value FROM state WHERE key IN ('format', 'uuid')")) \
                if {"files", "faces", "state"} <= tables else {}
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return set(state) == {"format", "uuid"} and str(state["format"]).isdigit()


# SQLite TEXT must be valid UTF-8, but a POSIX file name is bytes: Python keeps the bytes that are
# not UTF-8 as lone surrogates U+DC80-U+DCFF (PEP 383). They are stored as U+10FF80-U+10FFFF
# (private use), char for char, so folder prefixes still match. Valid names are stored unchanged.
_TO_DB = {c: 0x10FF00 + (c - 0xDC00) for c in range(0xDC80, 0xDD00)}
_FROM_DB = {v: k for k, v in _TO_DB.items()}


def to_db(path: str | os.PathLike) -> str:
    """A file name as stored in the ``path`` columns."""
    return os.fspath(path).translate(_TO_DB)


def from_db(text: str) -> str:
    """A stored ``path`` back as the file name Python opens."""
    return text.translate(_FROM_DB)


def embeddings(blobs, dim: int) -> np.ndarray:
    """Stored ``emb`` BLOBs (little-endian float32) as one (n, dim) float32 matrix."""
    return np.frombuffer(b"".join(blobs), dtype="<f4").astype(np.float32).reshape(-1, dim)


def chunks(seq: Sequence, n: int = CHUNK) -> Iterator[list]:
    """``seq`` in lists of at most ``n``: one ``IN (...)`` each stays within SQLite's parameter limit."""
    seq = list(seq)
    for s in range(0, len(seq), n):
        yield seq[s : s + n]


def placeholders(chunk: Sequence) -> str:
    """``?, ?, ...`` for each item of ``chunk`` (an ``IN (...)`` list)."""
    return ", ".join("?" * len(chunk))
