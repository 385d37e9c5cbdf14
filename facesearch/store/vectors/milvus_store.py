"""A Milvus vector store: Milvus Lite embedded in a file, or a Milvus server/cluster.

``milvus://``                 Milvus Lite in ``<index>/milvus.db`` (one process at a time);
``milvus://PATH.db``          Milvus Lite at PATH (relative to the working directory);
``milvus://HOST:PORT``        a Milvus server (``milvus+https://HOST:PORT`` for TLS).

Why Milvus (docs/scaling.md has the figures): the same ``pymilvus`` client talks
to the embedded engine in tests and to a distributed cluster in production
(IVF-PQ, DiskANN, sharding, replicas); Milvus Lite stores vectors with numpy and
FAISS, not pickle; Qdrant's local mode pickles points and inserted 100k vectors
~60x slower here.

Like the FAISS cache, the collection is a derived copy of the catalogue's
embeddings. ``milvus.json`` in the index folder records the catalogue generation
the collection holds; a writer that finds it behind (a crash between a commit
and its mirror, a server that was down) reloads the collection from SQLite, and
a reader that finds it behind (or cannot open it: Milvus Lite is locked by the
process writing it) searches an in-memory FAISS copy of SQLite instead, so
answers are never stale. The key is ``MILVUS_TOKEN`` in the environment, never
in the manifest.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from facesearch.core.atomic import atomic_write_json, read_json_dict
from facesearch.core.errors import FacesearchError, first_line
from facesearch.store.vectors import milvus_server as server
from facesearch.store.vectors.base import VectorSource
from facesearch.store.vectors.exact import as_matrix
from facesearch.store.vectors.ranges import range_pairs_knn

log = logging.getLogger(__name__)

STAMP = "milvus.json"
LITE_FILE = "milvus.db"
INSERT_CHUNK = 5_000  # rows per insert request: well under Milvus's 64 MB gRPC message cap
MAX_TOPK = 16_384  # Milvus's limit on k per query
SEARCH_BATCH = server.SEARCH_BATCH  # queries per search request at most
# Milvus Lite scores vectors not yet in an index by broadcasting (queries x rows x dim) floats: its
# batches are cut to this many bytes, or a 1,024-query batch over 100k faces asks for 49 GiB.
LITE_SEARCH_BYTES = 1 << 29


# Milvus Lite runs one server per file for the whole process, and releasing it stops it for every
# client of that file: the stores of this process that are connected to each file, so only the last
# one to close releases it (``serve`` searches while its own ``index`` job writes).
_LITE_USERS: Counter = Counter()
_LITE_LOCK = threading.Lock()


class MilvusVectors:
    """Face vectors in a Milvus collection named after the index's uuid."""

    kind = "milvus"

    def __init__(self, spec: str, source: VectorSource, create: bool = False):
        self.spec, self.source = spec, source
        self.uri, self.lite_path = resolve_uri(spec, Path(source.folder))
        self.rebuilt_reason: str | None = None
        self._client = None
        self._fallback = None  # an in-memory FAISS copy when a reader cannot use the collection
        self._stale = False  # a writer's mirror failed: reload the collection at flush
        self._checked = False
        if create:
            self._create()
            self._stamp(self.source.generation())

    # -- the VectorStore interface ---------------------------------------------------------

    def load(self) -> None:
        """Connect and check the collection holds the catalogue's generation (see the module doc)."""
        if self._checked:
            return
        self._checked = True
        problem = self._problem()
        if problem is None:
            return
        self.rebuilt_reason = problem
        if self.source.readonly or self._client is None:
            log.info("Milvus copy of %s is %s; searching an in-memory copy of SQLite", self.source.folder, problem)
            self._use_fallback()
        else:
            log.warning("Milvus copy of %s is %s; reloading it from SQLite", self.source.folder, problem)
            self._reload()

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.load()
        if self._fallback is not None:
            return self._fallback.search(xq, k)
        xq = as_matrix(xq, self.source.dim)
        if k <= 0 or not len(xq):
            return np.full((len(xq), max(k, 0)), np.inf, np.float32), np.full((len(xq), max(k, 0)), -1, np.int64)
        D2, I = self._knn(xq, min(k, MAX_TOPK), self.source.count())
        D = np.sqrt(np.maximum(D2, 0.0))
        D[I < 0] = np.inf
        return _pad(D, I, k)

    def range_pairs(self, tau: float, k_cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched k-NN queries with a growing k (Milvus has no all-pairs range join); ``d`` exact."""
        self.load()
        if self._fallback is not None:
            return self._fallback.range_pairs(tau, k_cap)
        _, ids, X = self.source.embeddings_snapshot()

        def knn(xq, k):  # ids the catalogue no longer has (a writer's removal in flight) are dropped
            D2, I = self._knn(xq, min(k, MAX_TOPK), len(ids))
            gone = ~np.isin(I, ids) & (I >= 0)
            D2[gone], I[gone] = np.inf, -1
            return D2, I

        return range_pairs_knn(knn, X, ids, tau, k_cap)

    def apply(self, removed, ids, X: np.ndarray | None) -> None:
        """Mirror one commit: delete, insert, then stamp the generation (a failure leaves it behind)."""
        if self._fallback is not None or self._client is None or self._stale:
            if self._fallback is not None:  # this process keeps searching what it wrote
                self._fallback.apply(removed, ids, X)
            self._stale = True  # the stamp stays behind: the next writer to open it reloads
            return
        try:
            if len(removed):
                self._client.delete(self.collection, ids=[int(i) for i in removed])
            self._insert(np.asarray(ids, np.int64), X)
            self._stamp(self.source.generation())
        except Exception as e:  # SQLite is committed and authoritative: reload at flush / next open
            log.warning("mirroring a commit into Milvus failed (%s); it will be reloaded from SQLite", _line(e))
            self._stale = True

    def flush(self) -> None:
        if self.source.readonly or not self._checked:
            return
        if self._stale and self._client is not None:
            self._reload()
        elif self._client is not None:
            self._client.flush(self.collection)
            self._wait_indexed()

    def check(self, fix: bool) -> dict:
        """Ids and vectors in the collection against SQLite; ``fix`` reloads it."""
        self.load()
        gen, ids, X = self.source.embeddings_snapshot()
        report = self._compare(ids, X) if self._fallback is None else _unchecked(ids, self.rebuilt_reason)
        report.update(faiss_cache_current=self._stamped() == gen, rebuilt_on_load=self.rebuilt_reason, fixed=False)
        if fix and (not report["faiss_ok"] or not report["faiss_cache_current"]):
            self.rebuild()
            report.update(self._compare(ids, X), fixed=True, faiss_cache_current=True)
        return report

    def rebuild(self) -> dict:
        """Reload the collection from SQLite (writers)."""
        t0 = time.perf_counter()
        n = self._reload()
        return {"index_type": "milvus", "faces": n, "seconds": round(time.perf_counter() - t0, 3)}

    def describe(self) -> dict:
        return {"backend": self.spec, "index_type": "milvus",
                "faiss_cache_current": self._stamped() == self.source.generation()}

    def close(self) -> None:
        """Let go of the client: a server's stays open for the process's next store (``serve`` opens
        the index per request); the last store of this process on an embedded Milvus Lite stops it,
        releasing its file lock."""
        if self._client is None:
            return
        client, self._client = self._client, None
        if self.lite_path is None:
            return
        client.close()
        with _LITE_LOCK:
            _LITE_USERS[self.lite_path] -= 1
            last = _LITE_USERS[self.lite_path] <= 0
            if last:
                del _LITE_USERS[self.lite_path]
        if last:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(self.lite_path))

    # -- internals -------------------------------------------------------------------------

    @property
    def collection(self) -> str:
        return "facesearch_" + self.source.uuid()[:16]

    def _problem(self) -> str | None:
        """Why the collection cannot answer for the catalogue now, or None."""
        error = self._connect()
        if error:
            return f"unavailable ({error})"
        try:
            if not self._client.has_collection(self.collection):
                return "missing"
            if self._stamped() != self.source.generation():
                return "stale"
            self._client.load_collection(self.collection)  # a restarted engine keeps collections released
        except Exception as e:  # a shared client whose server went away since: reconnect next time
            if self.lite_path is not None:
                raise
            server.forget_client(self.uri, _token())
            self._client = None
            return f"unavailable ({_line(e)})"
        return None

    def _connect(self, raise_errors: bool = False) -> str | None:
        try:
            from pymilvus import MilvusClient
        except ImportError as e:
            raise FacesearchError("this index keeps its vectors in Milvus, but pymilvus is not installed",
                                  hint="pip install 'facesearch[milvus]'") from e
        # Milvus Lite logs a full traceback when another process holds its file; we say it in one line.
        logging.getLogger("milvus_lite.server_manager").setLevel(logging.CRITICAL)
        try:
            if self.lite_path is None:  # a server: the process's one open client
                self._client = server.shared_client(self.uri, _token())
                return None
            self._client = MilvusClient(uri=self.uri, token=_token())
            if self.lite_path is not None:
                with _LITE_LOCK:
                    _LITE_USERS[self.lite_path] += 1
            return None
        except Exception as e:  # locked by another process, server down: the caller decides
            self._client = None
            if raise_errors:
                raise FacesearchError(f"cannot open Milvus at {self.uri}: {_line(e)}",
                                      hint="stop the process using it, or check the server") from e
            return _line(e)

    def _create(self) -> None:
        """An empty collection (connecting first if need be); the caller stamps it once it is filled."""
        self._checked = True
        if self._client is None:
            self._connect(raise_errors=True)
        self._client.drop_collection(self.collection)
        if self.lite_path is None:
            server.create_collection(self._client, self.collection, self.source.dim)
            return
        # pymilvus asks Milvus Lite for a timestamp it does not implement while it waits for the new
        # collection's index; the in-process server logs that refusal as an ERROR. Harmless: hide it.
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        self._client.create_collection(self.collection, dimension=self.source.dim, metric_type="L2",
                                       primary_field_name="id", id_type="int", auto_id=False,
                                       vector_field_name="vector")

    def _reload(self) -> int:
        """Drop and refill the collection from SQLite, then stamp it."""
        gen, ids, X = self.source.embeddings_snapshot()
        self._create()
        self._insert(ids, X)
        self._client.flush(self.collection)
        self._wait_indexed()
        self._stamp(gen)
        self._stale = False
        return len(ids)

    def _insert(self, ids: np.ndarray, X: np.ndarray | None) -> None:
        for s in range(0, len(ids), INSERT_CHUNK):
            rows = [{"id": int(i), "vector": v} for i, v in zip(ids[s:s + INSERT_CHUNK], X[s:s + INSERT_CHUNK])]
            self._client.insert(self.collection, rows)

    def _knn(self, xq: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances (Milvus's L2 metric) and ids, (nq, k), -1 / inf padded, over a
        collection of ``n`` vectors."""
        D2, I = np.full((len(xq), k), np.inf, np.float32), np.full((len(xq), k), -1, np.int64)
        batch, params = self._search_batch(n, k), self._search_params(k)
        for s in range(0, len(xq), batch):
            gen, consistency = self._consistency()
            hits = self._client.search(self.collection, data=xq[s:s + batch].tolist(), limit=k,
                                       output_fields=["id"], search_params=params, **consistency)
            if consistency:  # answered: later searches of this generation may be bounded
                server.searched(self.uri, self.collection, gen, consistency["consistency_level"])
            for r, row in enumerate(hits, s):
                for c, h in enumerate(row[:k]):
                    D2[r, c], I[r, c] = h["distance"], h["id"]
        return D2, I

    def _consistency(self) -> tuple[int | None, dict]:
        """(the stamped generation, the search's consistency argument): strong for the first search of
        what the stamp says the collection holds, bounded after (:func:`milvus_server.consistency`);
        Milvus Lite has no such levels."""
        if self.lite_path is not None:
            return None, {}
        gen = self._stamped()
        return gen, {"consistency_level": server.consistency(self.uri, self.collection, gen)}

    def _search_batch(self, n: int, k: int) -> int:
        if self.lite_path is None:
            return server.search_batch(k)
        per_query = 4 * self.source.dim * max(n, 1)
        return int(np.clip(LITE_SEARCH_BYTES // per_query, 1, SEARCH_BATCH))

    def _compare(self, ids: np.ndarray, X: np.ndarray) -> dict:
        got = self._vectors(ids)
        missing = np.array(sorted(set(ids.tolist()) - set(got)), np.int64)
        n = self._row_count()
        mismatch = sum(int(np.abs(np.asarray(got[i], np.float32) - x).max() > 1e-6)
                       for i, x in zip(ids.tolist(), X) if i in got)
        ok = not len(missing) and n == len(ids) and mismatch == 0
        return {"faces": int(len(ids)), "faiss_ntotal": n, "faiss_missing": missing[:100].tolist(),
                "faiss_extra": [], "vectors_checked": True, "vector_mismatches": mismatch,
                "index_type": "milvus", "faiss_ok": ok}

    def _row_count(self) -> int:
        if self.lite_path is None:
            return server.row_count(self._client, self.collection)
        return int(self._client.get_collection_stats(self.collection).get("row_count", 0))

    def _search_params(self, k: int) -> dict:
        return server.search_params(k) if self.lite_path is None else {"metric_type": "L2"}

    def _wait_indexed(self) -> None:
        """A server indexes flushed rows in the background: wait, so no query scans them. Past the
        wait's bound the command still succeeds (SQLite and the collection hold every row); queries
        scan what is not indexed yet until the server catches up."""
        if self.lite_path is None:
            try:
                server.wait_indexed(self._client, self.collection)
            except TimeoutError as e:
                log.warning("%s; queries scan the rows not indexed yet until it does", e)

    def _vectors(self, ids: np.ndarray) -> dict[int, list]:
        out = {}
        for s in range(0, len(ids), INSERT_CHUNK):
            for row in self._client.get(self.collection, ids=[int(i) for i in ids[s:s + INSERT_CHUNK]]):
                out[int(row["id"])] = row["vector"]
        return out

    def _stamp(self, generation: int) -> None:
        atomic_write_json(Path(self.source.folder) / STAMP, {
            "uuid": self.source.uuid(), "generation": int(generation), "collection": self.collection})

    def _stamped(self) -> int | None:
        stamp = read_json_dict(Path(self.source.folder) / STAMP) or {}
        return stamp.get("generation") if stamp.get("uuid") == self.source.uuid() else None

    def _use_fallback(self) -> None:
        from facesearch.store.vectors.faiss_store import FaissVectors

        self._fallback = FaissVectors.in_memory(self.source)


def resolve_uri(spec: str, folder: Path) -> tuple[str, Path | None]:
    """``(uri for MilvusClient, the Milvus Lite file or None for a server)``."""
    scheme, _, rest = spec.partition("://")
    if not rest or rest.endswith(".db"):
        path = (folder / LITE_FILE) if not rest else Path(rest).expanduser().resolve()
        return str(path), path
    return ("https://" if scheme == "milvus+https" else "http://") + rest, None


def _pad(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if D.shape[1] >= k:
        return D, I
    extra = k - D.shape[1]
    return (np.pad(D, ((0, 0), (0, extra)), constant_values=np.inf),
            np.pad(I, ((0, 0), (0, extra)), constant_values=-1))


def _unchecked(ids: np.ndarray, reason: str | None) -> dict:
    """A reader that could not open the collection cannot check it: say so, do not claim it is fine."""
    return {"faces": int(len(ids)), "faiss_ntotal": None, "faiss_missing": [], "faiss_extra": [],
            "vectors_checked": False, "vector_mismatches": 0, "index_type": "milvus",
            "faiss_ok": reason is None}


def _token() -> str:
    return os.environ.get("MILVUS_TOKEN", "")


def _line(e: BaseException) -> str:
    return first_line(e)[:160]  # gRPC errors can carry a whole status dump on one line
