"""``FaceIndex``: an index folder holding the SQLite catalogue, a manifest and a vector store.

Folder layout::

    manifest.json      model id + config (with its τ calibration), metric "l2", dim, index type,
                       vector backend ("vectors"), version
    meta.sqlite        the catalogue: files, faces (with embeddings), labels, people, runs, state (WAL)
    faces.faiss(.json) the FAISS vector store's cache and its stamp (facesearch.store.vectors.faiss_store)
    milvus.db/, milvus.json  or an embedded Milvus Lite store (facesearch.store.vectors.milvus_store)
    lock               flock'ed by the one writer

Consistency: **SQLite is the source of truth**; each face's embedding is stored
there as a float32 BLOB. Every transaction that changes faces bumps the
``generation`` counter in ``state`` and is then mirrored into the vector store
(:mod:`facesearch.store.vectors.base`), a derived copy that records the generation it
holds and is rebuilt from SQLite whenever it lags or looks wrong.

Label changes do not bump the generation: labels live only in SQLite, so they
never invalidate the FAISS cache (which would force a rebuild on next open).
"""

from __future__ import annotations

import datetime as _dt
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

import numpy as np

from facesearch import __version__
from facesearch.core.atomic import atomic_write_json, read_json_dict
from facesearch.core.errors import FacesearchError, IndexMissingError, ModelMismatchError
from facesearch.store.vectors import ops
from facesearch.store.lock import WriterLock
from facesearch.store.vectors.base import DEFAULT_BACKEND, VectorStore, check_backend
from facesearch.store.vectors.factory import open_vectors

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DB = "meta.sqlite"
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
# hashes and no people (facesearch.store.people).
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
    dhash: int | None = None  # the whole photo's difference hash (photos.load.dhash), for near-duplicate photos


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
        self._run_id: int | None = None
        # Opened lazily by the store itself: info/label never touch the vectors.
        self.vectors: VectorStore = open_vectors(manifest.get("vectors", DEFAULT_BACKEND), self)

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
               index_type: str = "auto", overwrite: bool = False, vectors: str = DEFAULT_BACKEND) -> "FaceIndex":
        """A new, empty index opened for writing. Refuses an existing index unless ``overwrite``.

        ``model_config`` (the weights' config, with its τ calibration) is recorded in the
        manifest: commands take their thresholds from there (:mod:`facesearch.eval.tau`).
        ``vectors`` names the vector store (:func:`facesearch.store.vectors.base.check_backend`).
        """
        folder = Path(folder)
        vectors = check_backend(vectors)
        if index_type != "auto":
            ops.resolve_index_type(index_type, 0)  # validates the name
        if cls.exists(folder) and not overwrite:
            raise FacesearchError(f"an index already exists at {folder}",
                                  hint="open it instead, or choose another folder")
        folder.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(folder).acquire()
        try:
            # Manifest first: an interrupted create leaves a folder that exists() rejects.
            for name in (MANIFEST, DB, DB + "-wal", DB + "-shm"):
                (folder / name).unlink(missing_ok=True)
            db = _connect(folder / DB, readonly=False)
            with db:
                db.executescript(SCHEMA)
                db.executemany("INSERT INTO state(key, value) VALUES (?, ?)",
                               [("uuid", uuid.uuid4().hex), ("generation", "0"), ("format", str(FORMAT))])
            manifest = {
                "format": FORMAT, "model_id": model_id, "model_config": model_config, "metric": "l2",
                "dim": int(dim), "facesearch_version": __version__, "index_type": index_type,
                "vectors": vectors,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            atomic_write_json(folder / MANIFEST, manifest)
        except BaseException:
            lock.release()
            raise
        store = cls(folder, db, manifest, readonly=False, lock=lock)
        try:
            store.vectors = open_vectors(vectors, store, create=True)
        except BaseException:
            store.close()
            raise
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
        """Make the vector store durable where it lags behind SQLite (writers only)."""
        self.vectors.flush()

    def close(self) -> None:
        """Flush (writers), close the database and release the lock. Idempotent."""
        if self._db is None:
            return
        try:
            self.flush()
        finally:
            self.vectors.close()
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
        self.vectors.load()
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
        self.vectors.apply(np.setdiff1d(gone, flat_ids), flat_ids[keep], X[keep] if X is not None else None)
        return new_ids

    def remove_paths(self, paths: Iterable[str | os.PathLike]) -> int:
        """Forget files: each path is a file or a folder (everything under it). Number of files removed."""
        self.vectors.load()  # removals are mirrored in the vector store, not paid for by a rebuild later
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
            self.vectors.load()
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

    def faces_by_file(self) -> dict[str, tuple[str, list]]:
        """Every indexed path -> ``(status, [(box, embedding)] sorted by box)``: the whole index in a
        form two indexes of the same photos compare by (engines, vector stores)."""
        ids, X = self.all_embeddings()
        faces: dict[str, list] = {}
        for row, x in zip(self.faces(ids), X):
            faces.setdefault(row.path, []).append((row.box, x))
        rows = self._db.execute("SELECT path, status FROM files ORDER BY path")
        return {p: (status, sorted(faces.get(p, []), key=lambda f: f[0]))
                for p, status in ((_from_db(r[0]), r[1]) for r in rows)}

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
        D, I = self.vectors.search(xq, k)
        rows = self._face_rows(np.unique(I[I >= 0]).tolist())
        return [[Match(int(i), float(d), rows[i].path, rows[i].box, rows[i].label)
                 for d, i in zip(drow, irow) if i >= 0 and int(i) in rows]
                for drow, irow in zip(D, I)]

    def range_pairs(self, tau: float, k_cap: int = ops.RANGE_K_CAP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All face-id pairs ``i < j`` within L2 distance ``tau``: ``(i, j, d)`` sorted by (i, j).

        Exact up to AUTO_FLAT_MAX faces (or whenever the FAISS index is flat); beyond,
        the vector store's approximate search finds the candidates; ``d`` is always exact.
        """
        return self.vectors.range_pairs(tau, k_cap)

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
        vectors = self.vectors.describe()
        return {
            "files": sum(by_status.values()), "files_by_status": by_status, "faces": self.count(),
            "labelled_faces": labelled[0], "labels": labelled[1], "index_type": vectors["index_type"],
            "index_type_requested": self._manifest.get("index_type"), "vectors": vectors["backend"],
            "faiss_cache_current": vectors["faiss_cache_current"],
            "bytes_on_disk": sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file()),
            "last_run": self._last_run(),
        }

    # -- maintenance ----------------------------------------------------------------------

    def verify(self, fix: bool = False) -> dict:
        """Check the vector store's ids and vectors against SQLite, and stored files against the disk.

        ``fix`` (writers) rebuilds and rewrites the vector store when it is stale
        or inconsistent. Vanished files are only reported: :meth:`prune_missing`
        removes them.
        """
        if fix:
            self._require_writer()
        report = self.vectors.check(fix)
        report.update(self._check_files())
        report["ok"] = report["faiss_ok"] and not report["files_missing"] and not report["files_changed"]
        return report

    def rebuild_vectors(self, index_type: str | None = None) -> dict:
        """Rebuild the vector store from the SQLite embeddings; optionally change the FAISS index type."""
        self._require_writer()
        if index_type is not None:
            if index_type != "auto":
                ops.resolve_index_type(index_type, 0)
            self._manifest["index_type"] = index_type
            atomic_write_json(self.folder / MANIFEST, self._manifest)
        return self.vectors.rebuild()

    @property
    def rebuilt_reason(self) -> str | None:
        """Why the vector store was rebuilt (or bypassed) when opened, if it was."""
        return self.vectors.rebuilt_reason

    # -- the vector store's view of the catalogue (facesearch.store.vectors.base.VectorSource) --

    def generation(self) -> int:
        """The counter every transaction that changes faces bumps."""
        return int(self._state("generation") or 0)

    def uuid(self) -> str:
        """This index's identity: a re-created index gets a new one."""
        return self._state("uuid") or ""

    def embeddings_snapshot(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(generation, ids, X)`` read in one transaction, so they agree while a writer commits."""
        with self._snapshot():
            gen = self.generation()
            ids, X = self.all_embeddings()
        return gen, ids, X

    def index_type(self) -> str:
        """The FAISS index type the manifest asks for (``auto`` by default)."""
        return self._manifest.get("index_type", "auto")

    def _after_removal(self, face_ids: list[int]) -> None:
        if face_ids:
            self.vectors.apply(np.asarray(face_ids, np.int64), np.zeros(0, np.int64), None)

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
    manifest = read_json_dict(folder / MANIFEST)
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
