"""The default vector store: an in-process FAISS index, cached in the index folder.

``faces.faiss`` is written (atomically) only at :meth:`FaissVectors.flush`, then
its stamp ``faces.faiss.json`` naming the catalogue generation it holds. When
the cache is loaded and the stamp does not name the current generation (killed
between a commit and a flush, a crash between the two files, a truncated or
foreign file), FAISS is rebuilt from the catalogue's embeddings. So FAISS and
SQLite always agree, and indexing never pays for a FAISS write per batch.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

import faiss
import numpy as np

from facesearch.core.atomic import atomic_path, atomic_write_json, read_json_dict
from facesearch.core.errors import first_line
from facesearch.store.vectors import build, introspect, knn, ranges
from facesearch.store.vectors.base import VectorSource
from facesearch.store.vectors.exact import as_matrix

log = logging.getLogger(__name__)

FAISS_FILE = "faces.faiss"
STAMP = "faces.faiss.json"

# The last index a reader loaded in this process, keyed by what fixes its contents: a service
# opens the index read-only for every query (so it sees what an `index` run commits meanwhile),
# and re-reading, hashing and deserialising faces.faiss each time cost 3 ms a query at 1,000
# faces and grows with the index. Readers never change an index, so they can share one.
_reader_cache: dict = {}
_reader_lock = threading.Lock()


class FaissVectors:
    """FAISS over a catalogue's faces: loaded lazily, mirrored per commit, written on flush."""

    kind = "faiss"

    def __init__(self, source: VectorSource):
        self.source = source
        self._index: faiss.Index | None = None  # loaded lazily: info/label never need it
        self._stale = False  # in-memory index must be rebuilt from SQLite (HNSW removals)
        self._saved_generation: int | None = None  # generation that faces.faiss on disk holds
        self._index_generation: int | None = None  # generation the in-memory index reflects
        self.rebuilt_reason: str | None = None  # why the cache was rebuilt on load, if it was

    @classmethod
    def create(cls, source: VectorSource) -> "FaissVectors":
        """An empty index for a new catalogue (its old cache files removed)."""
        for name in (FAISS_FILE, STAMP):
            (source.folder / name).unlink(missing_ok=True)
        store = cls(source)
        store._index = build.build_index(np.zeros((0, source.dim), np.float32), [], source.index_type())
        store._index_generation = 0
        return store

    @classmethod
    def in_memory(cls, source: VectorSource) -> "FaissVectors":
        """A copy of the catalogue's vectors built now, never read from or written to the folder's cache."""
        store = cls(source)
        store._rebuild()
        return store

    # -- the VectorStore interface ---------------------------------------------------------

    def load(self) -> None:
        """Load the index if not yet loaded; a stale one is fine (writes only mirror deltas into it)."""
        if self._index is None:
            self._load_or_rebuild()

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return knn.search(self.current(), xq, k)

    def range_pairs(self, tau: float, k_cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact up to AUTO_FLAT_MAX faces (or whenever the index is flat); beyond, approximate."""
        ids, X, index = self._consistent_snapshot()
        if introspect.is_exact(index) or len(ids) > build.AUTO_FLAT_MAX:
            return ranges.range_pairs(index, tau, xb=X, ids=ids, k_cap=k_cap)
        return ranges.range_pairs(X, tau, ids=ids)

    def apply(self, removed, ids, X: np.ndarray | None) -> None:
        """Mirror a committed transaction in the in-memory index (or mark it for rebuild)."""
        self._index_generation = self.source.generation()
        if self._stale or self._index is None:
            return  # the rebuild / load will read everything from SQLite anyway
        try:
            if len(removed) and not build.remove_ids(self._index, np.asarray(removed, np.int64)):
                self._stale = True  # HNSW cannot delete: rebuild from SQLite when next read/flushed
                return
            if len(ids):
                self._index.add_with_ids(as_matrix(X, self.source.dim), np.asarray(ids, np.int64))
        except Exception:  # SQLite is committed and authoritative; never fail the batch on the cache
            log.exception("updating the in-memory FAISS index failed; it will be rebuilt")
            self._stale = True

    def flush(self) -> None:
        """Write the cache and its stamp if they lag behind SQLite (writers only)."""
        if self.source.readonly or (self._index is None and not self._stale):
            return  # nothing loaded means nothing changed in FAISS
        self.current()
        changed = self._maybe_switch_type()
        gen = self.source.generation()
        if self._saved_generation == gen and not changed:
            return
        t0 = time.perf_counter()
        data = faiss.serialize_index(self._index)
        with atomic_path(self.source.folder / FAISS_FILE) as tmp:
            data.tofile(tmp)
        # The stamp goes second: a crash between the two leaves an old stamp -> rebuild. Its
        # checksum makes a replaced or altered cache file a rebuild too, not silently wrong answers.
        atomic_write_json(self.source.folder / STAMP, {
            "generation": gen, "uuid": self.source.uuid(), "ntotal": int(self._index.ntotal),
            "index_type": introspect.index_type_of(self._index), "blake2b": _digest(data)})
        self._saved_generation = gen
        log.debug("wrote FAISS cache (%d faces, generation %d) in %.3fs", self._index.ntotal, gen,
                  time.perf_counter() - t0)

    def check(self, fix: bool) -> dict:
        """FAISS ids and vectors against SQLite; ``fix`` rebuilds and rewrites a stale or wrong cache."""
        ids, X, index = self._consistent_snapshot()
        report = _compare(index, ids, X)
        # Current = the file on disk was loaded (or written) at this generation, not just stamped.
        report["faiss_cache_current"] = self._saved_generation == self.source.generation()
        report["rebuilt_on_load"] = self.rebuilt_reason
        report["fixed"] = False
        if fix and (not report["faiss_ok"] or not report["faiss_cache_current"]):
            self.rebuild()
            report.update(_compare(self._index, ids, X), fixed=True, faiss_cache_current=True)
        return report

    def rebuild(self) -> dict:
        """Rebuild from the SQLite embeddings (in the manifest's index type) and write it."""
        t0 = time.perf_counter()
        self._rebuild()
        self._saved_generation = None  # force the write
        self.flush()
        return {"index_type": introspect.index_type_of(self._index), "faces": int(self._index.ntotal),
                "seconds": round(time.perf_counter() - t0, 3)}

    def describe(self) -> dict:
        stamp = _read_stamp(self.source.folder)
        index_type = introspect.index_type_of(self._index) if self._index is not None else stamp.get("index_type")
        return {"backend": self.kind, "index_type": index_type,
                "faiss_cache_current": stamp.get("generation") == self.source.generation()
                                       and stamp.get("uuid") == self.source.uuid()}

    def close(self) -> None:
        """Nothing to release: the index is process memory."""

    def current(self) -> faiss.Index:
        """The current in-memory FAISS index, loaded from the cache or rebuilt from SQLite."""
        self.load()
        if self._stale:
            self._rebuild()
        return self._index

    # -- internals -------------------------------------------------------------------------

    def _consistent_snapshot(self) -> tuple[np.ndarray, np.ndarray, faiss.Index]:
        """``(ids, X, index)`` that agree, even for a reader while a writer commits."""
        index = self.current()
        gen, ids, X = self.source.embeddings_snapshot()
        if self._index_generation != gen:  # a writer committed since we loaded
            self._index = build.build_index(X, ids, self.source.index_type())
            self._index_generation, index = gen, self._index
        return ids, X, index

    def _load_or_rebuild(self) -> None:
        key = self._reader_key()
        with _reader_lock:
            hit = _reader_cache.get("entry") if key is not None else None
        if hit is not None and hit[0] == key:
            self._index, self._index_generation, self._saved_generation = hit[1], key[2], hit[2]
            return
        self._load_or_rebuild_uncached()
        if key is not None:
            with _reader_lock:
                _reader_cache["entry"] = (key, self._index, self._saved_generation)

    def _reader_key(self) -> tuple | None:
        """What the loaded index of a read-only open depends on; None for writers (they change it)."""
        if not self.source.readonly:
            return None
        src = self.source
        # The files' identity too: a writer that rewrites the cache (verify --fix) or anyone who
        # alters it makes the next reader load and check it afresh.
        files = tuple(_file_state(src.folder / name) for name in (FAISS_FILE, STAMP))
        return (str(src.folder.resolve()), src.uuid(), src.generation(), src.count(), src.dim, src.index_type(), files)

    def _load_or_rebuild_uncached(self) -> None:
        reason = self._cache_problem()
        if reason is None:
            self._saved_generation = self._index_generation = self.source.generation()
            return
        # Expected for readers while a writer is mid-run; worth a warning for a writer (a crash).
        log.log(logging.INFO if self.source.readonly else logging.WARNING,
                "FAISS cache of %s is %s; rebuilding it from SQLite", self.source.folder, reason)
        self.rebuilt_reason = reason
        self._rebuild()

    def _cache_problem(self) -> str | None:
        """Load faces.faiss into self._index if its stamp is current; else say what is wrong."""
        folder = self.source.folder
        stamp = _read_stamp(folder)
        if not stamp or not (folder / FAISS_FILE).is_file():
            return "missing"
        if stamp.get("uuid") != self.source.uuid() or stamp.get("generation") != self.source.generation():
            return "stale"
        raw = np.fromfile(folder / FAISS_FILE, dtype=np.uint8)
        if stamp.get("blake2b") != _digest(raw):
            return "altered (its checksum does not match the stamp)"
        try:
            index = faiss.deserialize_index(raw)
        except Exception as e:  # truncated or corrupt: faiss raises RuntimeError
            return f"unreadable ({first_line(e)[:80]})"
        if index.d != self.source.dim or index.ntotal != self.source.count():
            return "inconsistent"
        self._index = index
        return None

    def _rebuild(self) -> None:
        t0 = time.perf_counter()
        gen, ids, X = self.source.embeddings_snapshot()
        self._index = build.build_index(X, ids, self.source.index_type())
        self._index_generation = gen
        self._stale = False
        log.debug("rebuilt FAISS from %d SQLite embeddings in %.3fs", len(ids), time.perf_counter() - t0)

    def _maybe_switch_type(self) -> bool:
        """Rebuild when the face count calls for another type, or IVF lists became too few."""
        n = self._index.ntotal
        want = build.resolve_index_type(self.source.index_type(), n)
        have = introspect.index_type_of(self._index)
        grown = have in ("ivf", "ivfpq") and build.ivf_nlist(n) >= 2 * faiss.extract_index_ivf(self._index).nlist
        if want == have and not grown:
            return False
        log.info("rebuilding FAISS index: %s -> %s for %d faces", have, want, n)
        self._rebuild()
        return True


def _compare(index: faiss.Index, ids: np.ndarray, X: np.ndarray) -> dict:
    fids, FX = introspect.index_vectors(index)
    missing, extra = np.setdiff1d(ids, fids), np.setdiff1d(fids, ids)
    exact_vectors = introspect.index_type_of(index) != "ivfpq"  # PQ codes are lossy by design
    mismatch = 0
    if exact_vectors and not len(missing) and not len(extra) and len(ids):
        order = np.argsort(fids)
        mismatch = int((np.abs(FX[order] - X).max(axis=1) > 1e-6).sum())
    return {"faces": int(len(ids)), "faiss_ntotal": int(index.ntotal), "faiss_missing": missing[:100].tolist(),
            "faiss_extra": extra[:100].tolist(), "vectors_checked": exact_vectors,
            "vector_mismatches": mismatch, "index_type": introspect.index_type_of(index),
            "faiss_ok": not len(missing) and not len(extra) and mismatch == 0}


def _digest(data: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(data)), digest_size=16).hexdigest()


def _file_state(path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_stamp(folder) -> dict:
    return read_json_dict(folder / STAMP) or {}
