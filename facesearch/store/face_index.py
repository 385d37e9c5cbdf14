"""``FaceIndex``: an index folder holding the SQLite catalogue, a manifest and a vector store.

The public face of the store; the work is done by its parts:

- :mod:`facesearch.store.folder`: the folder, its manifest and writer lock (create, open);
- :mod:`facesearch.store.catalogue`: the SQLite catalogue (the source of truth) and its reads;
- :mod:`facesearch.store.writes` and :mod:`facesearch.store.carry`: files written in, with the
  labels and people of re-detected faces carried over;
- :mod:`facesearch.store.vectors`: the vector store, a derived copy of the catalogue's embeddings.

Every transaction that changes faces bumps the catalogue's generation and is then mirrored
into the vector store, which records the generation it holds and is rebuilt from SQLite
whenever it lags or looks wrong.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from facesearch.store import folder as index_folder
from facesearch.store import moments, writes
from facesearch.store.catalogue import Catalogue
from facesearch.store.folder import DB, FORMAT, MANIFEST  # noqa: F401  (public names of this module)
from facesearch.store.records import STATUSES, FaceRecord, FaceRow, FileRecord, FileUpdate, Match, as_update
from facesearch.store.vectors import ops
from facesearch.store.vectors.base import DEFAULT_BACKEND, VectorStore
from facesearch.store.vectors.factory import open_vectors

__all__ = ["DB", "FORMAT", "MANIFEST", "STATUSES", "FaceIndex", "FaceRecord", "FaceRow", "FileRecord",
           "FileUpdate", "Match"]

log = logging.getLogger(__name__)


class FaceIndex:
    """An index folder opened for reading or (by one process at a time) writing.

    Use :meth:`create` or :meth:`open`, then as a context manager (or call
    :meth:`close`): closing a writer flushes the FAISS cache and drops the lock.
    """

    def __init__(self, opened: index_folder.Opened):
        self.folder: Path = opened.folder
        self.readonly = opened.readonly
        self.catalogue = Catalogue(opened.folder, opened.db, int(opened.manifest["dim"]), opened.readonly)
        self._manifest = opened.manifest
        self._lock = opened.lock
        # Opened lazily by the store itself: info/label never touch the vectors.
        self.vectors: VectorStore = open_vectors(opened.manifest.get("vectors", DEFAULT_BACKEND), self)

    # -- lifecycle ------------------------------------------------------------------------

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        """True when ``folder`` holds an index (manifest and database)."""
        return index_folder.exists(folder)

    @staticmethod
    def model_of(folder: str | os.PathLike) -> str | None:
        """The model id an existing index was built with (None when there is no index)."""
        return index_folder.read_manifest(Path(folder))["model_id"] if index_folder.exists(folder) else None

    @classmethod
    def create(cls, folder: str | os.PathLike, model_id: str, model_config: dict, dim: int,
               index_type: str = "auto", overwrite: bool = False, vectors: str = DEFAULT_BACKEND) -> "FaceIndex":
        """A new, empty index opened for writing. Refuses an existing index unless ``overwrite``.

        ``model_config`` (the weights' config, with its τ calibration) is recorded in the
        manifest: commands take their thresholds from there (:mod:`facesearch.eval.tau`).
        ``vectors`` names the vector store (:func:`facesearch.store.vectors.base.check_backend`).
        """
        opened = index_folder.create(folder, model_id, model_config, dim, index_type, overwrite, vectors)
        store = cls(opened)
        try:
            store.vectors = open_vectors(opened.manifest["vectors"], store, create=True)
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
        return cls(index_folder.open_existing(folder, model_id, readonly))

    def check_model(self, model_id: str) -> None:
        """Raise ModelMismatchError unless the index was built with ``model_id``."""
        index_folder.check_model(self._manifest, model_id, self.folder)

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
        if self.catalogue.closed:
            return
        try:
            self.flush()
        finally:
            self.vectors.close()
            self._release()

    def _release(self) -> None:
        try:
            self.catalogue.close()
        finally:
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
        catalogue = getattr(self, "catalogue", None)
        if catalogue is not None and not catalogue.closed:
            self._release()

    # -- transactions (for the other tables of the catalogue: facesearch.store.people) ------

    @contextmanager
    def read_transaction(self) -> Iterator[sqlite3.Connection]:
        """The database inside one read transaction: every read sees one committed state."""
        with self.catalogue.read_transaction() as db:
            yield db

    @contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """The database inside one write transaction (writers only): committed on success, else rolled back.

        Only for tables the vector store does not mirror (labels, people): faces change through
        :meth:`write_batch` and :meth:`remove_paths`.
        """
        with self.catalogue.write_transaction() as db:
            yield db

    def state(self, key: str) -> str | None:
        """A value the catalogue keeps in its ``state`` table (None when unset)."""
        return self.catalogue.state(key)

    # -- files ----------------------------------------------------------------------------

    def lookup_file(self, path: str | os.PathLike) -> FileRecord | None:
        """The stored record of ``path``, or None if it was never indexed."""
        return self.catalogue.lookup_file(path)

    def file_info(self, path: str | os.PathLike) -> dict:
        """``path``'s size, mtime_ns, hash, status, n_faces and label ({} if not indexed)."""
        rec = self.lookup_file(path)
        if rec is None:
            return {}
        return {"size": rec.size, "mtime_ns": rec.mtime_ns, "hash": rec.hash, "status": rec.status,
                "n_faces": rec.n_faces, "label": rec.label}

    def file_paths(self, status: str | None = None) -> list[str]:
        """Indexed paths (optionally only those with ``status``), sorted."""
        return self.catalogue.file_paths(status)

    def upsert_file(self, path: str | os.PathLike, size: int | None, mtime_ns: int | None, hash: str | None,
                    status: str, error: str | None, faces: Sequence[Any], embeddings, label: str | None = None
                    ) -> list[int]:
        """Store ``path`` with ``faces``, replacing its previous faces in one transaction; new face ids."""
        return self.write_batch([FileUpdate(os.fspath(path), size, mtime_ns, hash, status, error,
                                            faces, embeddings, label)])[0]

    def mark_bad(self, path: str | os.PathLike, size: int | None, mtime_ns: int | None, error: str) -> None:
        """Record ``path`` as unreadable (dropping any faces it had), so unchanged bad files are skipped."""
        self.upsert_file(path, size, mtime_ns, None, "bad", error, [], None)

    def touch_file(self, path: str | os.PathLike, size: int, mtime_ns: int, hash: str | None = None) -> None:
        """Update the size/mtime (and, given one, the hash) of a file whose faces did not change."""
        self.catalogue.touch_file(path, size, mtime_ns, hash)

    def write_batch(self, items: Iterable[FileUpdate | dict]) -> list[list[int]]:
        """Store many files in one transaction; the new face ids of each, in order.

        A file with status ``ok`` and no faces is stored as ``noface``. Labels of
        re-detected faces carry over from old faces they overlap (IoU >= 0.5).
        """
        updates = [writes.validated(as_update(it), self.dim) for it in items]
        if not updates:
            return []
        self.vectors.load()
        removed, new_ids = writes.write_files(self.catalogue, updates)
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
        n_files, face_ids = writes.remove_under(self.catalogue, paths)
        self._after_removal(face_ids)
        return n_files

    def prune_missing(self) -> list[str]:
        """Forget files whose path no longer exists on disk; the pruned paths."""
        gone = self.catalogue.missing_files()
        if gone:
            self.vectors.load()
            self._after_removal(writes.remove_files(self.catalogue, [fid for fid, _ in gone]))
        return [p for _, p in gone]

    def _after_removal(self, face_ids: list[int]) -> None:
        if face_ids:
            self.vectors.apply(np.asarray(face_ids, np.int64), np.zeros(0, np.int64), None)

    def photo_hashes(self) -> list[tuple[str, int]]:
        """``(path, dhash)`` of every photo that has one (none in an index from before they existed)."""
        return self.catalogue.photo_hashes()

    def moments(self, face_ids=None) -> dict:
        """``{face id: Moment}`` for those of ``face_ids`` that are clips' faces, every clip's face when None
        (:mod:`facesearch.store.moments`)."""
        return moments.read(self.catalogue.db, face_ids)

    def exact_duplicate_files(self) -> list[list[str]]:
        """Groups of indexed paths with identical content hashes (each sorted, groups by first path)."""
        return self.catalogue.exact_duplicate_files()

    # -- labels ---------------------------------------------------------------------------

    def set_label(self, target: str | os.PathLike | int | Iterable[int], label: str | None) -> int:
        """Label faces; ``label=None`` clears. Returns the number of faces labelled.

        ``target`` is a path (a file or a folder: all faces of the files under
        it, and the files themselves) or face id(s).
        """
        return self.catalogue.set_label(target, label)

    def labels_by_path(self) -> dict[str, str]:
        """Path -> label: the file's label, else the one label all its labelled faces share."""
        return self.catalogue.labels_by_path()

    # -- faces ----------------------------------------------------------------------------

    def count(self) -> int:
        """Number of stored faces."""
        return self.catalogue.count()

    def count_labelled(self) -> int:
        """Faces that carry a name (their own label, else their file's): the gallery a query names from."""
        return self.catalogue.count_labelled()

    def count_faces_under(self, path: str | os.PathLike) -> int:
        """Faces of the file ``path``, or of all files under the folder ``path``."""
        return self.catalogue.count_faces_under(path)

    def faces(self, ids: Iterable[int]) -> list[FaceRow]:
        """Rows for face ``ids``, in the order given; KeyError for unknown ids."""
        ids = [int(i) for i in ids]
        rows = self.catalogue.face_rows(ids)
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
        return {p: (status, sorted(faces.get(p, []), key=lambda f: f[0]))
                for p, status in self.catalogue.file_statuses()}

    def all_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, X)``: every face id (int64, ascending) and its embedding (float32, (n, dim))."""
        return self.catalogue.all_embeddings()

    # -- search ---------------------------------------------------------------------------

    def search(self, xq, k: int) -> list[list[Match]]:
        """The ``k`` nearest stored faces of each query embedding, nearest first."""
        xq = ops.as_matrix(xq, self.dim)
        D, I = self.vectors.search(xq, k)
        rows = self.catalogue.face_rows(np.unique(I[I >= 0]).tolist())
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
        return self.catalogue.begin_run(args)

    def end_run(self, run_id: int, summary: dict) -> None:
        """Record the end of run ``run_id`` with its summary."""
        self.catalogue.end_run(run_id, summary)

    def stats(self) -> dict:
        """Counts by status, faces, labels, index type, bytes on disk and the last run."""
        vectors = self.vectors.describe()
        return {
            **self.catalogue.counts(), "index_type": vectors["index_type"],
            "index_type_requested": self._manifest.get("index_type"), "vectors": vectors["backend"],
            "faiss_cache_current": vectors["faiss_cache_current"],
            "bytes_on_disk": sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file()),
            "last_run": self.catalogue.last_run(),
        }

    # -- maintenance ----------------------------------------------------------------------

    def verify(self, fix: bool = False) -> dict:
        """Check the vector store's ids and vectors against SQLite, and stored files against the disk.

        ``fix`` (writers) rebuilds and rewrites the vector store when it is stale
        or inconsistent. Vanished files are only reported: :meth:`prune_missing`
        removes them.
        """
        if fix:
            self.catalogue.require_writer()
        report = self.vectors.check(fix)
        report.update(self.catalogue.check_files())
        report["ok"] = report["faiss_ok"] and not report["files_missing"] and not report["files_changed"]
        return report

    def rebuild_vectors(self, index_type: str | None = None) -> dict:
        """Rebuild the vector store from the SQLite embeddings; optionally change the FAISS index type."""
        self.catalogue.require_writer()
        if index_type is not None:
            index_folder.check_index_type(index_type)
            self._manifest["index_type"] = index_type
            index_folder.write_manifest(self.folder, self._manifest)
        return self.vectors.rebuild()

    @property
    def rebuilt_reason(self) -> str | None:
        """Why the vector store was rebuilt (or bypassed) when opened, if it was."""
        return self.vectors.rebuilt_reason

    # -- the vector store's view of the catalogue (facesearch.store.vectors.base.VectorSource) --

    def generation(self) -> int:
        """The counter every transaction that changes faces bumps."""
        return self.catalogue.generation()

    def uuid(self) -> str:
        """This index's identity: a re-created index gets a new one."""
        return self.catalogue.state("uuid") or ""

    def embeddings_snapshot(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(generation, ids, X)`` read in one transaction, so they agree while a writer commits."""
        with self.catalogue.read_transaction():
            gen = self.generation()
            ids, X = self.all_embeddings()
        return gen, ids, X

    def index_type(self) -> str:
        """The FAISS index type the manifest asks for (``auto`` by default)."""
        return self._manifest.get("index_type", "auto")
