"""``FaceIndex``: an index folder holding SQLite metadata, a FAISS index and a manifest.

Folder layout::

    manifest.json      model id + config (with its τ calibration), metric "l2", dim, index type, version
    meta.sqlite        files, faces (with embeddings), runs, state   (WAL mode)
    faces.faiss        FAISS index over face ids: a derived cache
    faces.faiss.json   stamp: the SQLite generation the cache was built from
    lock               flock'ed by the one writer

Consistency: **SQLite is the source of truth**; each face's embedding is stored
there as a float32 BLOB. Every transaction that changes faces bumps the
``generation`` counter in ``state``. ``faces.faiss`` is written (atomically)
only at :meth:`FaceIndex.flush` / :meth:`FaceIndex.close`, then its stamp. When
the index is loaded and the stamp does not name the current generation (killed
between a commit and a flush, a crash between the two files, a truncated or
foreign file), FAISS is rebuilt from the SQLite embeddings. So FAISS and SQLite
always agree, and indexing never pays for a FAISS write per batch.

Label changes do not bump the generation: labels live only in SQLite, so they
never invalidate the FAISS cache (which would force a rebuild on next open).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import faiss
import numpy as np

from facesearch import __version__
from facesearch.atomic import atomic_path, atomic_write_json
from facesearch.errors import FacesearchError, IndexMissingError, ModelMismatchError
from facesearch.index import ops
from facesearch.index.lock import WriterLock

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DB = "meta.sqlite"
FAISS_FILE = "faces.faiss"
STAMP = "faces.faiss.json"
FORMAT = 1
STATUSES = ("ok", "bad", "noface")
LABEL_CARRY_IOU = 0.5  # a re-detected face keeps the label of an old face it overlaps this much
_CHUNK = 900  # SQLite host-parameter limit is 999 on old builds

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
"""
# Added after format 1 shipped: writers create them on open, readers of an older index see no
# hashes and no people (facesearch.index.people).
PHOTO_HASHES = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS photo_hashes"):]


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    """One indexed file as last seen: the incremental-indexing key is (size, mtime_ns, hash)."""

    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    hash: str | None
    status: str
    error: str | None
    n_faces: int
    label: str | None
    indexed_at: float | None
    run_id: int | None


@dataclass
class FaceRecord:
    """A detected face to store (any object with ``box``/``score``/``landmarks`` works too)."""

    box: tuple[float, float, float, float]
    score: float | None = None
    landmarks: Any = None
    label: str | None = None


@dataclass
class FileUpdate:
    """One file's new state for :meth:`FaceIndex.write_batch` (a dict with these keys works too)."""

    path: str
    size: int | None
    mtime_ns: int | None
    hash: str | None = None
    status: str = "ok"
    error: str | None = None
    faces: Sequence[Any] = field(default_factory=list)
    embeddings: Any = None  # (len(faces), dim) float32
    label: str | None = None  # file-level label; None keeps the existing one
    dhash: int | None = None  # the whole photo's difference hash (imageio.dhash), for near-duplicate photos


@dataclass(frozen=True)
class Match:
    """A search hit. ``label`` is the face's label, else its file's label."""

    face_id: int
    distance: float
    path: str
    box: tuple[float, float, float, float]
    label: str | None

    @property
    def similarity(self) -> float:
        """Cosine similarity of the two unit embeddings: 1 - d^2/2."""
        return 1.0 - self.distance * self.distance / 2.0


@dataclass(frozen=True)
class FaceRow:
    """A stored face with its file. ``label`` is the face's label, else its file's label."""

    face_id: int
    file_id: int
    path: str
    box: tuple[float, float, float, float]
    score: float | None
    landmarks: Any
    label: str | None
    size: int | None
    mtime_ns: int | None


# --- the store ----------------------------------------------------------------------------


class FaceIndex:
    """An index folder opened for reading or (by one process at a time) writing.

    Use :meth:`create` or :meth:`open`, then as a context manager (or call
    :meth:`close`): closing a writer flushes the FAISS cache and drops the lock.
    """

    def __init__(self, folder: Path, db: sqlite3.Connection, manifest: dict, readonly: bool,
                 lock: WriterLock | None):
        self.folder = folder
        self.readonly = readonly
        self._db = db
        self._manifest = manifest
        self._lock = lock
        self._index: faiss.Index | None = None  # loaded lazily: info/label never need it
        self._index_stale = False  # in-memory index must be rebuilt from SQLite (HNSW removals)
        self._saved_generation: int | None = None  # generation that faces.faiss on disk holds
        self._index_generation: int | None = None  # generation the in-memory index reflects
        self._run_id: int | None = None
        self.rebuilt_reason: str | None = None  # why the FAISS cache was rebuilt on load, if it was

    # -- lifecycle ------------------------------------------------------------------------

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        """True when ``folder`` holds an index (manifest and database)."""
        folder = Path(folder)
        return (folder / MANIFEST).is_file() and (folder / DB).is_file()

    @staticmethod
    def model_of(folder: str | os.PathLike) -> str | None:
        """The model id an existing index was built with (None when there is no index)."""
        return _read_manifest(Path(folder))["model_id"] if FaceIndex.exists(folder) else None

    @classmethod
    def create(cls, folder: str | os.PathLike, model_id: str, model_config: dict, dim: int,
               index_type: str = "auto", overwrite: bool = False) -> "FaceIndex":
        """A new, empty index opened for writing. Refuses an existing index unless ``overwrite``.

        ``model_config`` (the weights' config, with its τ calibration) is recorded in the
        manifest: commands take their thresholds from there (:mod:`facesearch.eval.tau`).
        """
        folder = Path(folder)
        if index_type != "auto":
            ops.resolve_index_type(index_type, 0)  # validates the name
        if cls.exists(folder) and not overwrite:
            raise FacesearchError(f"an index already exists at {folder}",
                                  hint="open it instead, or choose another folder")
        folder.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(folder).acquire()
        try:
            # Manifest first: an interrupted create leaves a folder that exists() rejects.
            for name in (MANIFEST, DB, DB + "-wal", DB + "-shm", FAISS_FILE, STAMP):
                (folder / name).unlink(missing_ok=True)
            db = _connect(folder / DB, readonly=False)
            with db:
                db.executescript(SCHEMA)
                db.executemany("INSERT INTO state(key, value) VALUES (?, ?)",
                               [("uuid", uuid.uuid4().hex), ("generation", "0"), ("format", str(FORMAT))])
            manifest = {
                "format": FORMAT, "model_id": model_id, "model_config": model_config, "metric": "l2",
                "dim": int(dim), "facesearch_version": __version__, "index_type": index_type,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            atomic_write_json(folder / MANIFEST, manifest)
        except BaseException:
            lock.release()
            raise
        store = cls(folder, db, manifest, readonly=False, lock=lock)
        store._index = ops.build_index(np.zeros((0, int(dim)), np.float32), [], index_type)
        store._index_generation = 0
        return store

    @classmethod
    def open(cls, folder: str | os.PathLike, model_id: str | None = None, readonly: bool = False) -> "FaceIndex":
        """Open an existing index; writers take the folder lock.

        Raises IndexMissingError when there is no index, ModelMismatchError when
        ``model_id`` is given and differs from the one the index was built with.
        """
        folder = Path(folder)
        if not cls.exists(folder):
            raise IndexMissingError(f"no face index at {folder}", hint="build one first: facesearch index PATH")
        manifest = _read_manifest(folder)
        _check_model(manifest, model_id, folder)
        lock = None if readonly else WriterLock(folder).acquire()
        try:
            db = _connect(folder / DB, readonly=readonly)
            if not readonly:
                db.executescript(PHOTO_HASHES)
        except BaseException:
            if lock:
                lock.release()
            raise
        return cls(folder, db, manifest, readonly=readonly, lock=lock)

    def check_model(self, model_id: str) -> None:
        """Raise ModelMismatchError unless the index was built with ``model_id``."""
        _check_model(self._manifest, model_id, self.folder)

    @property
    def manifest(self) -> dict:
        """A copy of the manifest."""
        return json.loads(json.dumps(self._manifest))

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    def flush(self) -> None:
        """Write the FAISS cache and its stamp if they lag behind SQLite (writers only)."""
        if self.readonly or (self._index is None and not self._index_stale):
            return  # nothing loaded means nothing changed in FAISS
        self._ensure_index()
        changed = self._maybe_switch_type()
        gen = self._generation()
        if self._saved_generation == gen and not changed:
            return
        t0 = time.perf_counter()
        data = faiss.serialize_index(self._index)
        with atomic_path(self.folder / FAISS_FILE) as tmp:
            data.tofile(tmp)
        # The stamp goes second: a crash between the two leaves an old stamp -> rebuild. Its
        # checksum makes a replaced or altered cache file a rebuild too, not silently wrong answers.
        atomic_write_json(self.folder / STAMP, {
            "generation": gen, "uuid": self._state("uuid"), "ntotal": int(self._index.ntotal),
            "index_type": ops.index_type_of(self._index), "blake2b": _digest(data)})
        self._saved_generation = gen
        log.debug("wrote FAISS cache (%d faces, generation %d) in %.3fs", self._index.ntotal, gen,
                  time.perf_counter() - t0)

    def close(self) -> None:
        """Flush (writers), close the database and release the lock. Idempotent."""
        if self._db is None:
            return
        try:
            self.flush()
        finally:
            self._db.close()
            self._db = None
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> "FaceIndex":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # committed batches are safe in SQLite; never mask the original error
            self.close()
        except Exception:
            log.exception("closing the index after an error failed")

    def __del__(self) -> None:
        # A store dropped without close(): release the database and the lock, skip the flush
        # (the stamp makes the next open rebuild from SQLite, so nothing is lost).
        db = getattr(self, "_db", None)
        if db is not None:
            self._db = None
            try:
                db.close()
            finally:
                if self._lock is not None:
                    self._lock.release()

    # -- files ----------------------------------------------------------------------------

    def lookup_file(self, path: str | os.PathLike) -> FileRecord | None:
        """The stored record of ``path``, or None if it was never indexed."""
        row = self._db.execute(f"SELECT {_FILE_COLS} FROM files WHERE path = ?", (_to_db(path),)).fetchone()
        return FileRecord(row[0], _from_db(row[1]), *row[2:]) if row else None

    def file_info(self, path: str | os.PathLike) -> dict:
        """``path``'s size, mtime_ns, hash, status, n_faces and label ({} if not indexed)."""
        rec = self.lookup_file(path)
        if rec is None:
            return {}
        return {"size": rec.size, "mtime_ns": rec.mtime_ns, "hash": rec.hash, "status": rec.status,
                "n_faces": rec.n_faces, "label": rec.label}

    def file_paths(self, status: str | None = None) -> list[str]:
        """Indexed paths (optionally only those with ``status``), sorted."""
        if status is None:
            rows = self._db.execute("SELECT path FROM files ORDER BY path")
        else:
            rows = self._db.execute("SELECT path FROM files WHERE status = ? ORDER BY path", (status,))
        return [_from_db(r[0]) for r in rows]

    def upsert_file(self, path: str | os.PathLike, size: int | None, mtime_ns: int | None, hash: str | None,
                    status: str, error: str | None, faces: Sequence[Any], embeddings, label: str | None = None
                    ) -> list[int]:
        """Store ``path`` with ``faces``, replacing its previous faces in one transaction; new face ids."""
        return self.write_batch([FileUpdate(os.fspath(path), size, mtime_ns, hash, status, error,
                                            faces, embeddings, label)])[0]

    def mark_bad(self, path: str | os.PathLike, size: int | None, mtime_ns: int | None, error: str) -> None:
        """Record ``path`` as unreadable (dropping any faces it had), so unchanged bad files are skipped."""
        self.upsert_file(path, size, mtime_ns, None, "bad", error, [], None)

    def touch_file(self, path: str | os.PathLike, size: int, mtime_ns: int) -> None:
        """Update the size/mtime of an unchanged file (same hash) without touching its faces."""
        with self._write_txn() as db:
            db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, _to_db(path)))

    def write_batch(self, items: Iterable[FileUpdate | dict]) -> list[list[int]]:
        """Store many files in one transaction; the new face ids of each, in order.

        A file with status ``ok`` and no faces is stored as ``noface``. Labels of
        re-detected faces carry over from old faces they overlap (IoU >= 0.5).
        """
        updates = [self._validated(_as_update(it)) for it in items]
        if not updates:
            return []
        self._load_index()
        removed, new_ids = [], []
        with self._write_txn() as db:
            next_id = _next_face_id(db)
            for u in updates:
                old, ids = self._write_file(db, u, next_id)
                next_id += len(ids)
                removed.extend(old)
                new_ids.append(ids)
            if removed or any(new_ids):
                self._bump_generation(db)
        flat_ids = np.array([i for ids in new_ids for i in ids], dtype=np.int64)
        X = np.concatenate([u.embeddings for u in updates]) if len(flat_ids) else None
        # A path given twice in one batch: its first faces were added and deleted in the txn.
        gone = np.asarray(removed, dtype=np.int64)
        keep = ~np.isin(flat_ids, gone)
        self._apply_delta(np.setdiff1d(gone, flat_ids), flat_ids[keep], X[keep] if X is not None else None)
        return new_ids

    def remove_paths(self, paths: Iterable[str | os.PathLike]) -> int:
        """Forget files: each path is a file or a folder (everything under it). Number of files removed."""
        self._load_index()  # removals are mirrored in FAISS, not paid for by a rebuild later
        with self._write_txn() as db:
            file_ids = sorted({fid for p in paths for fid in _file_ids_under(db, _to_db(p))})
            face_ids = self._delete_files(db, file_ids)
        self._after_removal(face_ids)
        return len(file_ids)

    def prune_missing(self) -> list[str]:
        """Forget files whose path no longer exists on disk; the pruned paths."""
        rows = [(fid, _from_db(p)) for fid, p in self._db.execute("SELECT id, path FROM files ORDER BY path")]
        gone = [(fid, p) for fid, p in rows if not os.path.exists(p)]
        if gone:
            self._load_index()
            with self._write_txn() as db:
                face_ids = self._delete_files(db, [fid for fid, _ in gone])
            self._after_removal(face_ids)
        return [p for _, p in gone]

    def photo_hashes(self) -> list[tuple[str, int]]:
        """``(path, dhash)`` of every photo that has one (none in an index from before they existed)."""
        try:
            rows = self._db.execute("SELECT f.path, h.dhash FROM photo_hashes h JOIN files f ON f.id = h.file_id "
                                    "ORDER BY f.path").fetchall()
        except sqlite3.OperationalError:  # an older index opened read-only: no table yet
            return []
        return [(_from_db(p), h) for p, h in rows]

    def exact_duplicate_files(self) -> list[list[str]]:
        """Groups of indexed paths with identical content hashes (each sorted, groups by first path)."""
        rows = self._db.execute(
            "SELECT hash, path FROM files WHERE hash IN "
            "(SELECT hash FROM files WHERE hash IS NOT NULL GROUP BY hash HAVING COUNT(*) > 1) "
            "ORDER BY hash, path").fetchall()
        groups: dict[str, list[str]] = {}
        for h, p in rows:
            groups.setdefault(h, []).append(_from_db(p))
        return sorted(groups.values())

    # -- labels ---------------------------------------------------------------------------

    def set_label(self, target: str | os.PathLike | int | Iterable[int], label: str | None) -> int:
        """Label faces; ``label=None`` clears. Returns the number of faces labelled.

        ``target`` is a path (a file or a folder: all faces of the files under
        it, and the files themselves) or face id(s).
        """
        with self._write_txn() as db:
            if isinstance(target, (str, os.PathLike)):
                file_ids = _file_ids_under(db, _to_db(target))
                for chunk in _chunks(file_ids):
                    db.execute(f"UPDATE files SET label = ? WHERE id IN ({_qs(chunk)})", (label, *chunk))
                return sum(db.execute(f"UPDATE faces SET label = ? WHERE file_id IN ({_qs(c)})",
                                      (label, *c)).rowcount for c in _chunks(file_ids))
            ids = [int(target)] if isinstance(target, (int, np.integer)) else [int(i) for i in target]
            return sum(db.execute(f"UPDATE faces SET label = ? WHERE id IN ({_qs(c)})", (label, *c)).rowcount
                       for c in _chunks(ids))

    def labels_by_path(self) -> dict[str, str]:
        """Path -> label: the file's label, else the one label all its labelled faces share."""
        rows = self._db.execute(
            "SELECT f.path, COALESCE(f.label, (SELECT CASE WHEN COUNT(DISTINCT label) = 1 THEN MAX(label) END "
            "FROM faces WHERE file_id = f.id AND label IS NOT NULL)) FROM files f ORDER BY f.path")
        return {_from_db(p): lab for p, lab in rows if lab is not None}

    # -- faces ----------------------------------------------------------------------------

    def count(self) -> int:
        """Number of stored faces."""
        return int(self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def count_labelled(self) -> int:
        """Faces that carry a name (their own label, else their file's): the gallery a query names from."""
        return int(self._db.execute(
            "SELECT COUNT(*) FROM faces fa JOIN files f ON f.id = fa.file_id "
            "WHERE COALESCE(fa.label, f.label) IS NOT NULL").fetchone()[0])

    def count_faces_under(self, path: str | os.PathLike) -> int:
        """Faces of the file ``path``, or of all files under the folder ``path``."""
        ids = _file_ids_under(self._db, _to_db(path))
        return sum(self._db.execute(f"SELECT COUNT(*) FROM faces WHERE file_id IN ({_qs(c)})", c).fetchone()[0]
                   for c in _chunks(ids))

    def faces(self, ids: Iterable[int]) -> list[FaceRow]:
        """Rows for face ``ids``, in the order given; KeyError for unknown ids."""
        ids = [int(i) for i in ids]
        rows = self._face_rows(ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise KeyError(f"unknown face ids: {missing[:10]}")
        return [rows[i] for i in ids]

    def all_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, X)``: every face id (int64, ascending) and its embedding (float32, (n, dim))."""
        rows = self._db.execute("SELECT id, emb FROM faces ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        X = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(np.float32).reshape(-1, self.dim)
        return ids, X

    # -- search ---------------------------------------------------------------------------

    def search(self, xq, k: int) -> list[list[Match]]:
        """The ``k`` nearest stored faces of each query embedding, nearest first."""
        xq = ops.as_matrix(xq, self.dim)
        D, I = ops.search(self._ensure_index(), xq, k)
        rows = self._face_rows(np.unique(I[I >= 0]).tolist())
        return [[Match(int(i), float(d), rows[i].path, rows[i].box, rows[i].label)
                 for d, i in zip(drow, irow) if i >= 0 and int(i) in rows]
                for drow, irow in zip(D, I)]

    def range_pairs(self, tau: float, k_cap: int = ops.RANGE_K_CAP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All face-id pairs ``i < j`` within L2 distance ``tau``: ``(i, j, d)`` sorted by (i, j).

        Exact up to AUTO_FLAT_MAX faces (or whenever the index is flat); beyond,
        it uses the approximate index (see :func:`ops.range_pairs`).
        """
        ids, X, index = self._consistent_snapshot()
        if ops.is_exact(index) or len(ids) > ops.AUTO_FLAT_MAX:
            return ops.range_pairs(index, tau, xb=X, ids=ids, k_cap=k_cap)
        return ops.range_pairs(X, tau, ids=ids)

    # -- runs and stats -------------------------------------------------------------------

    def begin_run(self, args: dict) -> int:
        """Record the start of an indexing run; files written until :meth:`end_run` carry its id."""
        with self._write_txn() as db:
            cur = db.execute("INSERT INTO runs(started, args) VALUES (?, ?)", (time.time(), _json(args)))
        self._run_id = int(cur.lastrowid)
        return self._run_id

    def end_run(self, run_id: int, summary: dict) -> None:
        """Record the end of run ``run_id`` with its summary."""
        with self._write_txn() as db:
            db.execute("UPDATE runs SET finished = ?, summary = ? WHERE id = ?", (time.time(), _json(summary), run_id))
        if self._run_id == run_id:
            self._run_id = None

    def stats(self) -> dict:
        """Counts by status, faces, labels, index type, bytes on disk and the last run."""
        q = self._db.execute
        by_status = {s: 0 for s in STATUSES} | dict(q("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
        labelled = q("SELECT COUNT(*), COUNT(DISTINCT COALESCE(fa.label, fi.label)) FROM faces fa "
                     "JOIN files fi ON fi.id = fa.file_id WHERE COALESCE(fa.label, fi.label) IS NOT NULL").fetchone()
        stamp = _read_json(self.folder / STAMP) or {}
        index_type = ops.index_type_of(self._index) if self._index is not None else stamp.get("index_type")
        return {
            "files": sum(by_status.values()), "files_by_status": by_status, "faces": self.count(),
            "labelled_faces": labelled[0], "labels": labelled[1], "index_type": index_type,
            "index_type_requested": self._manifest.get("index_type"),
            "faiss_cache_current": stamp.get("generation") == self._generation()
                                   and stamp.get("uuid") == self._state("uuid"),
            "bytes_on_disk": sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file()),
            "last_run": self._last_run(),
        }

    # -- maintenance ----------------------------------------------------------------------

    def verify(self, fix: bool = False) -> dict:
        """Check FAISS ids and vectors against SQLite, and stored files against the disk.

        ``fix`` (writers) rebuilds and rewrites the FAISS cache when it is stale
        or inconsistent. Vanished files are only reported: :meth:`prune_missing`
        removes them.
        """
        ids, X, index = self._consistent_snapshot()
        report = self._check_faiss(index, ids, X)
        report.update(self._check_files())
        # Current = the file on disk was loaded (or written) at this generation, not just stamped.
        report["faiss_cache_current"] = self._saved_generation == self._generation()
        report["rebuilt_on_load"] = self.rebuilt_reason
        report["fixed"] = False
        if fix and (not report["faiss_ok"] or not report["faiss_cache_current"]):
            self.rebuild_faiss()
            report.update(self._check_faiss(self._index, ids, X), fixed=True, faiss_cache_current=True)
        report["ok"] = report["faiss_ok"] and not report["files_missing"] and not report["files_changed"]
        return report

    def rebuild_faiss(self, index_type: str | None = None) -> dict:
        """Rebuild the FAISS index from the SQLite embeddings and write it; optionally change its type."""
        self._require_writer()
        if index_type is not None:
            if index_type != "auto":
                ops.resolve_index_type(index_type, 0)
            self._manifest["index_type"] = index_type
            atomic_write_json(self.folder / MANIFEST, self._manifest)
        t0 = time.perf_counter()
        self._rebuild()
        self._saved_generation = None  # force the write
        self.flush()
        return {"index_type": ops.index_type_of(self._index), "faces": int(self._index.ntotal),
                "seconds": round(time.perf_counter() - t0, 3)}

    # -- internals: FAISS cache -----------------------------------------------------------

    def _load_index(self) -> None:
        """Load the index if not yet loaded; a stale one is fine (writes only mirror deltas into it)."""
        if self._index is None:
            self._load_or_rebuild()

    def _ensure_index(self) -> faiss.Index:
        """The current in-memory FAISS index, loaded from the cache or rebuilt from SQLite."""
        self._load_index()
        if self._index_stale:
            self._rebuild()
        return self._index

    def _consistent_snapshot(self) -> tuple[np.ndarray, np.ndarray, faiss.Index]:
        """``(ids, X, index)`` that agree, even for a reader while a writer commits."""
        index = self._ensure_index()
        with self._snapshot():
            gen = self._generation()
            ids, X = self.all_embeddings()
        if self._index_generation != gen:  # a writer committed since we loaded
            self._index = ops.build_index(X, ids, self._manifest.get("index_type", "auto"))
            self._index_generation, index = gen, self._index
        return ids, X, index

    def _load_or_rebuild(self) -> None:
        reason = self._cache_problem()
        if reason is None:
            self._saved_generation = self._index_generation = self._generation()
            return
        # Expected for readers while a writer is mid-run; worth a warning for a writer (a crash).
        log.log(logging.INFO if self.readonly else logging.WARNING,
                "FAISS cache of %s is %s; rebuilding it from SQLite", self.folder, reason)
        self.rebuilt_reason = reason
        self._rebuild()

    def _cache_problem(self) -> str | None:
        """Load faces.faiss into self._index if its stamp is current; else say what is wrong."""
        stamp = _read_json(self.folder / STAMP)
        if stamp is None or not (self.folder / FAISS_FILE).is_file():
            return "missing"
        if stamp.get("uuid") != self._state("uuid") or stamp.get("generation") != self._generation():
            return "stale"
        raw = np.fromfile(self.folder / FAISS_FILE, dtype=np.uint8)
        if stamp.get("blake2b") != _digest(raw):
            return "altered (its checksum does not match the stamp)"
        try:
            index = faiss.deserialize_index(raw)
        except Exception as e:  # truncated or corrupt: faiss raises RuntimeError
            return f"unreadable ({str(e).splitlines()[0][:80]})"
        if index.d != self.dim or index.ntotal != self.count():
            return "inconsistent"
        self._index = index
        return None

    def _rebuild(self) -> None:
        t0 = time.perf_counter()
        with self._snapshot():
            gen = self._generation()
            ids, X = self.all_embeddings()
        self._index = ops.build_index(X, ids, self._manifest.get("index_type", "auto"))
        self._index_generation = gen
        self._index_stale = False
        log.debug("rebuilt FAISS from %d SQLite embeddings in %.3fs", len(ids), time.perf_counter() - t0)

    def _maybe_switch_type(self) -> bool:
        """Rebuild when the face count calls for another type, or IVF lists became too few."""
        n = self._index.ntotal
        want = ops.resolve_index_type(self._manifest.get("index_type", "auto"), n)
        have = ops.index_type_of(self._index)
        grown = have in ("ivf", "ivfpq") and ops.ivf_nlist(n) >= 2 * faiss.extract_index_ivf(self._index).nlist
        if want == have and not grown:
            return False
        log.info("rebuilding FAISS index: %s -> %s for %d faces", have, want, n)
        self._rebuild()
        return True

    def _apply_delta(self, removed, ids, X: np.ndarray | None) -> None:
        """Mirror a committed transaction in the in-memory index (or mark it for rebuild)."""
        self._index_generation = self._generation()
        if self._index_stale:
            return  # the rebuild will read everything from SQLite anyway
        try:
            if len(removed) and not ops.remove_ids(self._index, np.asarray(removed, np.int64)):
                self._index_stale = True  # HNSW cannot delete: rebuild from SQLite when next read/flushed
                return
            if len(ids):
                self._index.add_with_ids(ops.as_matrix(X, self.dim), np.asarray(ids, np.int64))
        except Exception:  # SQLite is committed and authoritative; never fail the batch on the cache
            log.exception("updating the in-memory FAISS index failed; it will be rebuilt")
            self._index_stale = True

    def _after_removal(self, face_ids: list[int]) -> None:
        if face_ids:
            self._apply_delta(face_ids, [], None)

    def _check_faiss(self, index: faiss.Index, ids: np.ndarray, X: np.ndarray) -> dict:
        fids, FX = ops.index_vectors(index)
        missing, extra = np.setdiff1d(ids, fids), np.setdiff1d(fids, ids)
        exact_vectors = ops.index_type_of(index) != "ivfpq"  # PQ codes are lossy by design
        mismatch = 0
        if exact_vectors and not len(missing) and not len(extra) and len(ids):
            order = np.argsort(fids)
            mismatch = int((np.abs(FX[order] - X).max(axis=1) > 1e-6).sum())
        return {"faces": int(len(ids)), "faiss_ntotal": int(index.ntotal), "faiss_missing": missing[:100].tolist(),
                "faiss_extra": extra[:100].tolist(), "vectors_checked": exact_vectors,
                "vector_mismatches": mismatch, "index_type": ops.index_type_of(index),
                "faiss_ok": not len(missing) and not len(extra) and mismatch == 0}

    def _check_files(self) -> dict:
        missing, changed = [], []
        for stored, size, mtime_ns in self._db.execute("SELECT path, size, mtime_ns FROM files ORDER BY path"):
            path = _from_db(stored)
            try:
                st = os.stat(path)
            except OSError:
                missing.append(path)
                continue
            if (size is not None and st.st_size != size) or (mtime_ns is not None and st.st_mtime_ns != mtime_ns):
                changed.append(path)
        return {"files_missing": missing, "files_changed": changed}

    # -- internals: SQLite ----------------------------------------------------------------

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees one committed state (WAL snapshot)."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    @contextmanager
    def _write_txn(self) -> Iterator[sqlite3.Connection]:
        self._require_writer()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _require_writer(self) -> None:
        if self.readonly:
            raise FacesearchError(f"index {self.folder} is open read-only", hint="open it without readonly=True")
        if self._db is None:
            raise FacesearchError(f"index {self.folder} is closed")

    def _state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _generation(self) -> int:
        return int(self._state("generation") or 0)

    def _bump_generation(self, db: sqlite3.Connection) -> None:
        db.execute("UPDATE state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def _validated(self, u: FileUpdate) -> FileUpdate:
        if u.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {u.status!r}")
        faces = [_as_face(f) for f in u.faces]
        emb = np.zeros((0, self.dim), np.float32) if not faces else ops.as_matrix(u.embeddings, self.dim)
        if len(emb) != len(faces):
            raise ValueError(f"{u.path}: {len(faces)} faces but {len(emb)} embeddings")
        status = "noface" if u.status == "ok" and not faces else u.status
        return FileUpdate(os.fspath(u.path), u.size, u.mtime_ns, u.hash, status, u.error, faces, emb, u.label,
                          u.dhash)

    def _write_file(self, db: sqlite3.Connection, u: FileUpdate, next_id: int) -> tuple[list[int], list[int]]:
        """Upsert one file and replace its faces; (old face ids, new face ids)."""
        db.execute(
            "INSERT INTO files(path, size, mtime_ns, hash, status, error, n_faces, label, indexed_at, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
            "mtime_ns = excluded.mtime_ns, hash = excluded.hash, status = excluded.status, error = excluded.error, "
            "n_faces = excluded.n_faces, label = COALESCE(excluded.label, files.label), "
            "indexed_at = excluded.indexed_at, run_id = excluded.run_id",
            (_to_db(u.path), u.size, u.mtime_ns, u.hash, u.status, u.error, len(u.faces), u.label, time.time(),
             self._run_id))
        file_id = db.execute("SELECT id FROM files WHERE path = ?", (_to_db(u.path),)).fetchone()[0]
        db.execute("DELETE FROM photo_hashes WHERE file_id = ?", (file_id,))
        if u.dhash is not None:
            db.execute("INSERT INTO photo_hashes(file_id, dhash) VALUES (?, ?)", (file_id, u.dhash))
        old = db.execute("SELECT id, x1, y1, x2, y2, label FROM faces WHERE file_id = ?", (file_id,)).fetchall()
        old_people = db.execute(
            "SELECT fa.x1, fa.y1, fa.x2, fa.y2, fp.person_id, fp.pinned, fp.not_people FROM faces fa "
            "JOIN face_people fp ON fp.face_id = fa.id WHERE fa.file_id = ?", (file_id,)).fetchall()
        db.execute("DELETE FROM faces WHERE file_id = ?", (file_id,))
        labels = _carry_labels(old, u.faces)
        ids = list(range(next_id, next_id + len(u.faces)))
        db.executemany(
            "INSERT INTO faces(id, file_id, x1, y1, x2, y2, score, landmarks, label, emb) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(fid, file_id, *map(float, f.box), _opt_float(f.score), _landmarks_json(f.landmarks), lab,
              np.asarray(e, dtype="<f4").tobytes())
             for fid, f, lab, e in zip(ids, u.faces, labels, u.embeddings)])
        # A re-detected face keeps its person and the user's corrections (people survive re-indexing).
        db.executemany("INSERT INTO face_people(face_id, person_id, pinned, not_people) VALUES (?, ?, ?, ?)",
                       [(fid, *old_people[k][4:]) for fid, k in zip(ids, _carry_index([r[0:4] for r in old_people], u.faces))
                        if k is not None])
        return [r[0] for r in old], ids

    def _delete_files(self, db: sqlite3.Connection, file_ids: list[int]) -> list[int]:
        """Delete files and their faces; the deleted face ids. Bumps the generation if faces went."""
        face_ids: list[int] = []
        for c in _chunks(file_ids):
            face_ids += [r[0] for r in db.execute(f"SELECT id FROM faces WHERE file_id IN ({_qs(c)})", c)]
            db.execute(f"DELETE FROM faces WHERE file_id IN ({_qs(c)})", c)
            db.execute(f"DELETE FROM files WHERE id IN ({_qs(c)})", c)
        if face_ids:
            self._bump_generation(db)
        return face_ids

    def _face_rows(self, ids: list[int]) -> dict[int, FaceRow]:
        out: dict[int, FaceRow] = {}
        for c in _chunks(sorted(set(ids))):
            for r in self._db.execute(
                    "SELECT fa.id, fa.file_id, fi.path, fa.x1, fa.y1, fa.x2, fa.y2, fa.score, fa.landmarks, "
                    f"COALESCE(fa.label, fi.label), fi.size, fi.mtime_ns FROM faces fa JOIN files fi ON fi.id = "
                    f"fa.file_id WHERE fa.id IN ({_qs(c)})", c):
                out[r[0]] = FaceRow(r[0], r[1], _from_db(r[2]), (r[3], r[4], r[5], r[6]), r[7],
                                    json.loads(r[8]) if r[8] else None, r[9], r[10], r[11])
        return out

    def _last_run(self) -> dict | None:
        row = self._db.execute("SELECT id, started, finished, args, summary FROM runs ORDER BY id DESC LIMIT 1"
                               ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "started": row[1], "finished": row[2],
                "args": json.loads(row[3]) if row[3] else None, "summary": json.loads(row[4]) if row[4] else None}


# --- helpers ------------------------------------------------------------------------------

_FILE_COLS = "id, path, size, mtime_ns, hash, status, error, n_faces, label, indexed_at, run_id"

# SQLite TEXT must be valid UTF-8, but a POSIX file name is bytes: Python keeps the bytes that are
# not UTF-8 as lone surrogates U+DC80-U+DCFF (PEP 383). They are stored as U+10FF80-U+10FFFF
# (private use), char for char, so folder prefixes still match. Valid names are stored unchanged.
_TO_DB = {c: 0x10FF00 + (c - 0xDC00) for c in range(0xDC80, 0xDD00)}
_FROM_DB = {v: k for k, v in _TO_DB.items()}


def _digest(data: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(data)), digest_size=16).hexdigest()


def _to_db(path: str | os.PathLike) -> str:
    return os.fspath(path).translate(_TO_DB)


def _from_db(text: str) -> str:
    return text.translate(_FROM_DB)


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL and foreign keys."""
    try:
        if readonly:
            # A folder nobody may write (a read-only mount, a copy on a DVD) has no WAL to wait
            # for, and SQLite could not create its -shm file there: open it as immutable.
            mode = "mode=ro" if os.access(path.parent, os.W_OK) else "immutable=1"
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, isolation_level=None)
        else:
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
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


def _read_manifest(folder: Path) -> dict:
    manifest = _read_json(folder / MANIFEST)
    if manifest is None or "model_id" not in manifest or "dim" not in manifest:
        raise FacesearchError(f"the index manifest {folder / MANIFEST} is unreadable",
                              hint=f"rebuild the index: facesearch index PATH --index {folder}")
    if int(manifest.get("format", 1)) > FORMAT:
        raise FacesearchError(f"index {folder} was written by a newer facesearch",
                              hint="upgrade facesearch (pip install -U facesearch)")
    return manifest


def _check_model(manifest: dict, model_id: str | None, folder: Path) -> None:
    if model_id is not None and manifest.get("model_id") != model_id:
        raise ModelMismatchError(
            f"index {folder} was built with model {manifest.get('model_id')}, not {model_id}",
            hint=f"use the weights it was built with, or re-embed: facesearch rebuild --weights ... --index {folder}")


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _json(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)


def _as_update(item: FileUpdate | dict) -> FileUpdate:
    return item if isinstance(item, FileUpdate) else FileUpdate(**item)


def _as_face(f: Any) -> FaceRecord:
    if isinstance(f, FaceRecord):
        return f
    if isinstance(f, dict):
        return FaceRecord(**f)
    return FaceRecord(tuple(f.box), getattr(f, "score", None), getattr(f, "landmarks", None),
                      getattr(f, "label", None))


def _opt_float(x) -> float | None:
    return None if x is None else float(x)


def _landmarks_json(lm) -> str | None:
    return None if lm is None else json.dumps(np.round(np.asarray(lm, dtype=np.float64), 2).tolist())


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _carry_labels(old_rows: list[tuple], faces: list[FaceRecord]) -> list[str | None]:
    """New faces' labels: their own, else that of the best-overlapping labelled old face."""
    labelled = [r for r in old_rows if r[5] is not None]
    best = _carry_index([r[1:5] for r in labelled], faces)
    return [f.label if f.label is not None else (labelled[k][5] if k is not None else None)
            for f, k in zip(faces, best)]


def _carry_index(old_boxes: list[tuple], faces: list[FaceRecord]) -> list[int | None]:
    """For each new face, the index of the old box it overlaps most, if by LABEL_CARRY_IOU."""
    out = []
    for f in faces:
        ious = [_iou(b, f.box) for b in old_boxes]
        k = int(np.argmax(ious)) if ious else None
        out.append(k if k is not None and ious[k] >= LABEL_CARRY_IOU else None)
    return out


def _next_face_id(db: sqlite3.Connection) -> int:
    """The next face id: never reuses a deleted one (AUTOINCREMENT's sqlite_sequence)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'faces'").fetchone()
    return (row[0] if row else 0) + 1


def _file_ids_under(db: sqlite3.Connection, path: str) -> list[int]:
    """Ids of the file ``path`` and of every file under the folder ``path``."""
    base = path.rstrip(os.sep) or os.sep
    prefix = base if base.endswith(os.sep) else base + os.sep
    # [prefix, prefix with its last char + 1): all strings starting with prefix, index-friendly.
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    rows = db.execute("SELECT id FROM files WHERE path = ? OR (path >= ? AND path < ?)", (base, prefix, upper))
    return [r[0] for r in rows]


def _chunks(seq: Sequence, n: int = _CHUNK) -> Iterator[list]:
    seq = list(seq)
    for s in range(0, len(seq), n):
        yield seq[s : s + n]


def _qs(chunk: Sequence) -> str:
    return ", ".join("?" * len(chunk))
