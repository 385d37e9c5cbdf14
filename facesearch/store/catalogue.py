"""The SQL catalogue of an open index: transactions, state, and reading files, faces, labels and runs.

**SQLite is the source of truth**: each face's embedding is stored there as a float32 BLOB.
Every transaction that changes faces bumps the ``generation`` counter in ``state``; the
vector store mirrors the catalogue and records the generation it holds. Writing files in
is :mod:`facesearch.store.writes`; this module owns the connection and everything else.

Label changes do not bump the generation: labels live only in SQLite, so they
never invalidate the FAISS cache (which would force a rebuild on next open).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from facesearch.core.errors import FacesearchError
from facesearch.store.records import STATUSES, FaceRow, FileRecord
from facesearch.store.sqlite import chunks, embeddings, from_db, placeholders as qs, to_db

PEOPLE_GENERATION = "people_generation"  # the index generation people were last clustered at (store/people.py)



def mark_people_stale(db: sqlite3.Connection) -> None:
    """Forget when people were last clustered: the next ``people`` clusters again (a name changed)."""
    db.execute("DELETE FROM state WHERE key = ?", (PEOPLE_GENERATION,))


FILE_COLS = "id, path, size, mtime_ns, hash, status, error, n_faces, label, indexed_at, run_id"


class Catalogue:
    """One open connection to ``meta.sqlite`` with the queries the index answers from it."""

    def __init__(self, folder: Path, db: sqlite3.Connection, dim: int, readonly: bool):
        self.folder = folder
        self.db: sqlite3.Connection | None = db
        self.dim = dim
        self.readonly = readonly
        self.run_id: int | None = None  # files written while a run is open carry its id

    # -- connection and transactions ------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.db is None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        db, self.db = self.db, None
        if db is not None:
            db.close()

    @contextmanager
    def read_transaction(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every read inside sees one committed state (WAL snapshot)."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")

    @contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate write transaction, committed on success and rolled back on any error."""
        self.require_writer()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def require_writer(self) -> None:
        """FacesearchError unless the index is open for writing."""
        if self.readonly:
            raise FacesearchError(f"index {self.folder} is open read-only", hint="open it without readonly=True")
        if self.db is None:
            raise FacesearchError(f"index {self.folder} is closed")

    # -- state ----------------------------------------------------------------------------

    def state(self, key: str) -> str | None:
        """A value of the ``state`` table (None when unset)."""
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def generation(self) -> int:
        """The counter every transaction that changes faces bumps."""
        return int(self.state("generation") or 0)

    @staticmethod
    def bump_generation(db: sqlite3.Connection) -> None:
        """Inside a write transaction that changed faces: the vector store must follow."""
        db.execute("UPDATE state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    # -- files ----------------------------------------------------------------------------

    def lookup_file(self, path: str | os.PathLike) -> FileRecord | None:
        """The stored record of ``path``, or None if it was never indexed."""
        row = self.db.execute(f"SELECT {FILE_COLS} FROM files WHERE path = ?", (to_db(path),)).fetchone()
        return FileRecord(row[0], from_db(row[1]), *row[2:]) if row else None

    def sidecar_signature(self, path: str | os.PathLike) -> str:
        """The signature of ``path``'s XMP sidecars when last indexed ("" for none, or never read)."""
        try:
            row = self.db.execute("SELECT s.signature FROM sidecars s JOIN files f ON f.id = s.file_id "
                                  "WHERE f.path = ?", (to_db(path),)).fetchone()
        except sqlite3.OperationalError:  # an older index opened read-only: no table yet
            return ""
        return row[0] if row else ""

    def set_sidecar_signature(self, path: str | os.PathLike, signature: str) -> None:
        """Record the signature of ``path``'s XMP sidecars (if ``path`` is indexed)."""
        with self.write_transaction() as db:
            row = db.execute("SELECT id FROM files WHERE path = ?", (to_db(path),)).fetchone()
            if row:
                replace_sidecars(db, row[0], signature)

    def file_paths(self, status: str | None = None) -> list[str]:
        """Indexed paths (optionally only those with ``status``), sorted."""
        if status is None:
            rows = self.db.execute("SELECT path FROM files ORDER BY path")
        else:
            rows = self.db.execute("SELECT path FROM files WHERE status = ? ORDER BY path", (status,))
        return [from_db(r[0]) for r in rows]

    def file_statuses(self) -> list[tuple[str, str]]:
        """``(path, status)`` of every indexed file, by path."""
        return [(from_db(p), s) for p, s in self.db.execute("SELECT path, status FROM files ORDER BY path")]

    def touch_file(self, path: str | os.PathLike, size: int, mtime_ns: int, hash: str | None = None) -> None:
        """Update the size/mtime (and, given one, the hash) of a file whose faces did not change."""
        with self.write_transaction() as db:
            db.execute("UPDATE files SET size = ?, mtime_ns = ?, hash = COALESCE(?, hash) WHERE path = ?",
                       (size, mtime_ns, hash, to_db(path)))

    def move_file(self, old: str | os.PathLike, new: str | os.PathLike, size: int, mtime_ns: int) -> bool:
        """Give the file ``old`` the path ``new`` (it was moved or renamed), keeping its faces, labels and
        people; False when ``old`` is not indexed or ``new`` already is."""
        with self.write_transaction() as db:
            if db.execute("SELECT 1 FROM files WHERE path = ?", (to_db(new),)).fetchone():
                return False
            cur = db.execute("UPDATE files SET path = ?, size = ?, mtime_ns = ? WHERE path = ?",
                             (to_db(new), size, mtime_ns, to_db(old)))
            return cur.rowcount == 1

    def paths_with_hash(self, digest: str) -> list[str]:
        """Indexed paths whose content hash is ``digest``."""
        return [from_db(r[0]) for r in self.db.execute("SELECT path FROM files WHERE hash = ? ORDER BY path",
                                                       (digest,))]

    def file_ids_under(self, path: str | os.PathLike) -> list[int]:
        """Ids of the file ``path`` and of every file under the folder ``path``."""
        base = to_db(path).rstrip(os.sep) or os.sep
        prefix = base if base.endswith(os.sep) else base + os.sep
        # [prefix, prefix with its last char + 1): all strings starting with prefix, index-friendly.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self.db.execute("SELECT id FROM files WHERE path = ? OR (path >= ? AND path < ?)",
                               (base, prefix, upper))
        return [r[0] for r in rows]

    def missing_files(self) -> list[tuple[int, str]]:
        """``(id, path)`` of the stored files whose path no longer exists on disk."""
        rows = [(fid, from_db(p)) for fid, p in self.db.execute("SELECT id, path FROM files ORDER BY path")]
        return [(fid, p) for fid, p in rows if not os.path.exists(p)]

    def check_files(self) -> dict:
        """``{"files_missing": [...], "files_changed": [...]}``: stored files against the disk."""
        missing, changed = [], []
        for stored, size, mtime_ns in self.db.execute("SELECT path, size, mtime_ns FROM files ORDER BY path"):
            path = from_db(stored)
            try:
                st = os.stat(path)
            except OSError:
                missing.append(path)
                continue
            if (size is not None and st.st_size != size) or (mtime_ns is not None and st.st_mtime_ns != mtime_ns):
                changed.append(path)
        return {"files_missing": missing, "files_changed": changed}

    # -- duplicates -----------------------------------------------------------------------

    def photo_hashes(self) -> list[tuple[str, int]]:
        """``(path, dhash)`` of every photo that has one (none in an index from before they existed)."""
        try:
            rows = self.db.execute("SELECT f.path, h.dhash FROM photo_hashes h JOIN files f ON f.id = h.file_id "
                                   "ORDER BY f.path").fetchall()
        except sqlite3.OperationalError:  # an older index opened read-only: no table yet
            return []
        return [(from_db(p), h) for p, h in rows]

    def exact_duplicate_files(self) -> list[list[str]]:
        """Groups of indexed paths with identical content hashes (each sorted, groups by first path)."""
        rows = self.db.execute(
            "SELECT hash, path FROM files WHERE hash IN "
            "(SELECT hash FROM files WHERE hash IS NOT NULL GROUP BY hash HAVING COUNT(*) > 1) "
            "ORDER BY hash, path").fetchall()
        groups: dict[str, list[str]] = {}
        for h, p in rows:
            groups.setdefault(h, []).append(from_db(p))
        return sorted(groups.values())

    # -- faces ----------------------------------------------------------------------------

    def count(self) -> int:
        """Number of stored faces."""
        return int(self.db.execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def count_labelled(self) -> int:
        """Faces that carry a name: the gallery a query names from (a photo's name is on one face only,
        :mod:`facesearch.store.labels`)."""
        return int(self.db.execute("SELECT COUNT(*) FROM faces WHERE label IS NOT NULL").fetchone()[0])

    def count_faces_under(self, path: str | os.PathLike) -> int:
        """Faces of the file ``path``, or of all files under the folder ``path``."""
        return sum(self.db.execute(f"SELECT COUNT(*) FROM faces WHERE file_id IN ({qs(c)})", c).fetchone()[0]
                   for c in chunks(self.file_ids_under(path)))

    def face_rows(self, ids: Iterable[int]) -> dict[int, FaceRow]:
        """Face id -> its row, for those of ``ids`` that exist."""
        out: dict[int, FaceRow] = {}
        for c in chunks(sorted(set(ids))):
            for r in self.db.execute(
                    "SELECT fa.id, fa.file_id, fi.path, fa.x1, fa.y1, fa.x2, fa.y2, fa.score, fa.landmarks, "
                    f"fa.label, fi.size, fi.mtime_ns FROM faces fa JOIN files fi ON fi.id = "
                    f"fa.file_id WHERE fa.id IN ({qs(c)})", c):
                out[r[0]] = FaceRow(r[0], r[1], from_db(r[2]), (r[3], r[4], r[5], r[6]), r[7],
                                    json.loads(r[8]) if r[8] else None, r[9], r[10], r[11])
        return out

    def all_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, X)``: every face id (int64, ascending) and its embedding (float32, (n, dim))."""
        rows = self.db.execute("SELECT id, emb FROM faces ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        X = embeddings((r[1] for r in rows), self.dim)
        return ids, X

    # -- labels ---------------------------------------------------------------------------

    def set_label(self, target: str | os.PathLike | int | Iterable[int], label: str | None) -> int:
        """Label faces (and, for a path, its files); ``label=None`` clears. The number of faces labelled."""
        with self.write_transaction() as db:
            if isinstance(target, (str, os.PathLike)):
                file_ids = self.file_ids_under(target)
                for c in chunks(file_ids):
                    db.execute(f"UPDATE files SET label = ? WHERE id IN ({qs(c)})", (label, *c))
                n = _update_labels(db, "file_id", file_ids, label)
            else:
                ids = [int(target)] if isinstance(target, (int, np.integer)) else [int(i) for i in target]
                n = _update_labels(db, "id", ids, label)
            if n:  # a label pins its faces to that name's person: `people` must cluster again to show it
                mark_people_stale(db)
            return n

    def labels_by_path(self) -> dict[str, str]:
        """Path -> label: the file's label, else the one label all its labelled faces share."""
        rows = self.db.execute(
            "SELECT f.path, COALESCE(f.label, (SELECT CASE WHEN COUNT(DISTINCT label) = 1 THEN MAX(label) END "
            "FROM faces WHERE file_id = f.id AND label IS NOT NULL)) FROM files f ORDER BY f.path")
        return {from_db(p): lab for p, lab in rows if lab is not None}

    # -- runs and counts ------------------------------------------------------------------

    def begin_run(self, args: dict) -> int:
        """Record the start of an indexing run; files written until :meth:`end_run` carry its id."""
        with self.write_transaction() as db:
            cur = db.execute("INSERT INTO runs(started, args) VALUES (?, ?)", (time.time(), _json(args)))
        self.run_id = int(cur.lastrowid)
        return self.run_id

    def end_run(self, run_id: int, summary: dict) -> None:
        """Record the end of run ``run_id`` with its summary."""
        with self.write_transaction() as db:
            db.execute("UPDATE runs SET finished = ?, summary = ? WHERE id = ?", (time.time(), _json(summary), run_id))
        if self.run_id == run_id:
            self.run_id = None

    def last_run(self) -> dict | None:
        """The latest run's id, times, arguments and summary (None before the first run)."""
        row = self.db.execute("SELECT id, started, finished, args, summary FROM runs ORDER BY id DESC LIMIT 1"
                              ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "started": row[1], "finished": row[2],
                "args": json.loads(row[3]) if row[3] else None, "summary": json.loads(row[4]) if row[4] else None}

    def counts(self) -> dict:
        """Files (in all and by status), faces, labelled faces and distinct labels."""
        q = self.db.execute
        by_status = {s: 0 for s in STATUSES} | dict(q("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
        labelled = q("SELECT COUNT(*), COUNT(DISTINCT label) FROM faces WHERE label IS NOT NULL").fetchone()
        return {"files": sum(by_status.values()), "files_by_status": by_status, "faces": self.count(),
                "labelled_faces": labelled[0], "labels": labelled[1]}


def replace_sidecars(db: sqlite3.Connection, file_id: int, signature: str) -> None:
    """Record the signature of a file's XMP sidecars ("" when it has none: no row)."""
    db.execute("DELETE FROM sidecars WHERE file_id = ?", (file_id,))
    if signature:
        db.execute("INSERT INTO sidecars(file_id, signature) VALUES (?, ?)", (file_id, signature))


def _update_labels(db: sqlite3.Connection, column: str, ids: list[int], label: str | None) -> int:
    """Set the label of the faces whose ``column`` (``id`` or ``file_id``) is in ``ids``; how many."""
    return sum(db.execute(f"UPDATE faces SET label = ? WHERE {column} IN ({qs(c)})", (label, *c)).rowcount
               for c in chunks(ids))


def _json(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)
