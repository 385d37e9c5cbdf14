"""The ``backends`` part of bench/scale.py: FAISS, Milvus Lite and a Milvus server on the same vectors.

The stores are driven through facesearch's own seam (``facesearch.store.vectors.base``)
over an in-memory catalogue of synthetic face-like vectors (``_common.face_embeddings``,
256-d like the default fused model's, identities of ~8 photos) with 1 % planted
near-duplicates, so what is timed is what ``query`` and ``dedupe`` would run. Per size:

* insert: all vectors mirrored into the store (FAISS: ``auto`` index type, as an
  index of that size gets it; Milvus Lite embedded, its ``AUTOINDEX``; a Milvus server,
  ``milvus_server.INDEX``), then ``flush`` (``index_s``: the server builds its index
  there, FAISS writes its cache);
* recall@10 of 200 new photos of known identities against numpy's exact search,
  and single-query latency p50/p95 (what one ``query`` face pays); fewer for
  Milvus Lite at 1M (see ``LITE_SCAN_QUERY_ROWS``), the row says how many;
* dedupe: the all-pairs pass at the dedupe τ (``range_pairs``), pairs found and,
  up to ``EXACT_PAIRS_MAX`` vectors, pair recall against the exact pairs. Where a
  full pass would take too long (Milvus at 1M), the pass runs on a slice of the
  queries and the time is extrapolated, and the row says so.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import _common as C

from facesearch.store.vectors import exact, ops, ranges  # noqa: E402  (_common puts the repo on sys.path)

QUERIES = 200
K = 10
DUP_SHARE = 0.01
EXACT_PAIRS_MAX = 200_000  # numpy's exact all-pairs is O(n^2): fine at 100k, hours at 1M
FULL_MILVUS_DEDUPE_MAX = 50_000  # beyond, time a slice of the queries and extrapolate (20k: 73 s)
FULL_SERVER_DEDUPE_MAX = 200_000  # a server's full pass beyond: a 20,000-query slice, extrapolated
SERVER_DEDUPE_SLICE = 20_000
# Milvus Lite scans the rows it has not indexed yet (all of them, right after a bulk insert: its HNSW
# build runs in the background, ~100 s at 100k here): each query costs ~2 ms per 1,000 rows, so the
# number of timed queries and of dedupe rows is cut to keep each size's scans to minutes.
LITE_SCAN_QUERY_ROWS = 20_000_000  # queries x rows timed for latency: 200 at 100k, 20 at 1M
LITE_SCAN_DEDUPE_ROWS = 100_000_000  # dedupe slice: 1,000 queries at 100k, 100 at 1M
INSERT_CHUNK = 50_000
DIM = 256
STORES = ("faiss", "milvus", "milvus-server")  # milvus: Milvus Lite, embedded
# Queries per server search request tried for the dedupe pass (k starts at RANGE_K_CAP = 16): the
# request size milvus_server.SEARCH_BATCH was chosen by (``batch_sweep``).
SWEEP_BATCHES = (64, 256, 1_024, 4_096)


@dataclass
class MemoryCatalogue:
    """A stand-in for the SQLite catalogue: the VectorSource the stores read from."""

    folder: Path
    dim: int
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    X: np.ndarray = None
    readonly: bool = False
    gen: int = 0
    _uuid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def generation(self) -> int:
        return self.gen

    def uuid(self) -> str:
        return self._uuid

    def count(self) -> int:
        return len(self.ids)

    def embeddings_snapshot(self):
        return self.gen, self.ids, self.X if self.X is not None else np.zeros((0, self.dim), np.float32)

    def index_type(self) -> str:
        return "auto"


def bench_backends(sizes: list[int], tau: float, seed: int = 0, work: Path | None = None,
                   milvus: str | None = None, dim: int = DIM, sweep: bool = False,
                   stores: tuple[str, ...] = STORES, previous: dict | None = None) -> dict:
    """FAISS, Milvus Lite and (given ``milvus``, a ``milvus://HOST:PORT`` server) the server at each
    size in ``sizes``: insert, index, recall@10, query p50/p95, dedupe. ``sweep``: also time the
    server's dedupe pass at each of SWEEP_BATCHES queries per request (the smallest size only).
    ``stores``: which of STORES to run; the rows of ``previous`` (an earlier result) for the others
    are kept, so one store can be measured alone at a size and sit beside the rest."""
    rows, swept = [], None
    backends = [b for b in STORES if b in stores and (milvus or b != "milvus-server")]
    for n in sizes:
        x, xq = _vectors(n, seed, dim)
        D, I = ops.exact_knn(xq, x, K)
        exact_pairs = _exact_pairs(x, tau) if n <= EXACT_PAIRS_MAX else None
        for backend in backends:
            with tempfile.TemporaryDirectory(prefix="facesearch-bench-vectors-", dir=work) as tmp:
                keep = backend == "milvus-server" and sweep and swept is None
                rows.append(_one(backend, x, xq, I, exact_pairs, tau, Path(tmp), milvus, keep))
                if keep:
                    swept = batch_sweep(rows[-1].pop("store"), rows[-1].pop("catalogue"), tau)
                print(rows[-1], flush=True)
    if previous:
        new = {(r["backend"], r["n"]) for r in rows}
        rows = [r for r in previous.get("rows", []) if (r["backend"], r["n"]) not in new] + rows
        rows.sort(key=lambda r: (r["n"], STORES.index(r["backend"]) if r["backend"] in STORES else 9))
    out = {**(previous or {}), "tau": tau, "queries": QUERIES, "k": K, "dim": dim, "dup_share": DUP_SHARE,
           "rows": rows, "ratios": _ratios(rows, "milvus")}
    if milvus:
        out["server"] = milvus
        out["server_ratios"] = _ratios(rows, "milvus-server")
    if swept:
        out["server_batch_sweep"] = swept
    return out


def batch_sweep(store, cat: "MemoryCatalogue", tau: float) -> list[dict]:
    """The server's dedupe pass at each request size of SWEEP_BATCHES (then the store is closed)."""
    from facesearch.store.vectors import milvus_server

    out, saved = [], (milvus_server.SEARCH_BATCH, milvus_server.HITS_PER_REQUEST)
    try:
        for batch in SWEEP_BATCHES:
            milvus_server.SEARCH_BATCH, milvus_server.HITS_PER_REQUEST = batch, batch * ops.RANGE_K_CAP
            t0 = time.perf_counter()
            i, _, _ = store.range_pairs(tau, ops.RANGE_K_CAP)
            out.append({"queries_per_request": batch, "dedupe_s": round(time.perf_counter() - t0, 2),
                        "pairs": int(len(i))})
            print(out[-1], flush=True)
    finally:
        milvus_server.SEARCH_BATCH, milvus_server.HITS_PER_REQUEST = saved
        store.close()
    return out


def _one(backend: str, x: np.ndarray, xq: np.ndarray, I_true: np.ndarray, exact_pairs, tau: float,
         folder: Path, milvus: str | None, keep: bool = False) -> dict:
    from facesearch.store.vectors.factory import open_vectors

    cat = MemoryCatalogue(folder, x.shape[1])
    spec = {"faiss": "faiss", "milvus": f"milvus://{folder / 'm.db'}"}.get(backend, milvus)
    store = open_vectors(spec, cat, create=True)
    lite = getattr(store, "lite_path", None) is not None
    t0 = time.perf_counter()
    for s in range(0, len(x), INSERT_CHUNK):
        e = min(s + INSERT_CHUNK, len(x))
        cat.ids, cat.X, cat.gen = np.arange(e, dtype=np.int64), x[:e], cat.gen + 1
        store.apply(np.zeros(0, np.int64), cat.ids[s:e], x[s:e])
    insert_s = time.perf_counter() - t0
    store.flush()
    index_s = time.perf_counter() - t0 - insert_s
    store.search(xq[:1], K)  # first query loads / warms the collection
    n_q = min(QUERIES, max(20, LITE_SCAN_QUERY_ROWS // len(x))) if lite else QUERIES
    I_true = I_true[:n_q]
    lat, found = [], []
    for q in xq[:n_q]:
        t = time.perf_counter()
        _, I = store.search(q[None], K)
        lat.append(time.perf_counter() - t)
        found.append(I[0])
    recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, I_true)]))
    row = {"backend": backend, "uri": spec if backend == "milvus-server" else None,
           "n": len(x), "index": _index_name(backend, store),
           "insert_s": round(insert_s, 2), "insert_per_s": round(len(x) / insert_s), "index_s": round(index_s, 2),
           "queries": n_q, f"recall@{K}": round(recall, 4), "query_p50_ms": C.percentile_ms(lat, 50),
           "query_p95_ms": C.percentile_ms(lat, 95)}
    row.update(_dedupe(store, cat, tau, exact_pairs, lite, backend == "milvus-server"))
    if keep:
        return {**row, "store": store, "catalogue": cat}
    store.close()
    return row


def _index_name(backend: str, store) -> str:
    if backend == "milvus-server":
        from facesearch.store.vectors import milvus_server

        return f"{milvus_server.INDEX['index_type']} M={milvus_server.INDEX['params']['M']}".lower()
    return store.describe()["index_type"]


def _dedupe(store, cat: MemoryCatalogue, tau: float, exact_pairs, lite: bool, server: bool) -> dict:
    n = len(cat.ids)
    if lite and n > FULL_MILVUS_DEDUPE_MAX:
        return _dedupe_slice(store, cat, tau, max(50, LITE_SCAN_DEDUPE_ROWS // n))
    if server and n > FULL_SERVER_DEDUPE_MAX:
        return _dedupe_slice(store, cat, tau, SERVER_DEDUPE_SLICE)
    t0 = time.perf_counter()
    i, j, _ = store.range_pairs(tau, ops.RANGE_K_CAP)
    out = {"dedupe_s": round(time.perf_counter() - t0, 2), "dedupe_pairs": int(len(i)), "dedupe_extrapolated": False}
    if exact_pairs is not None:
        got = set(zip(i.tolist(), j.tolist()))
        out["pair_recall"] = round(len(got & exact_pairs) / max(len(exact_pairs), 1), 4)
    return out


def _dedupe_slice(store, cat: MemoryCatalogue, tau: float, rows: int) -> dict:
    """The range pass of ``rows`` of the queries against the whole store, scaled to all of them."""
    t0 = time.perf_counter()  # Milvus's own k-NN, as its range_pairs uses it
    n = len(cat.ids)
    ranges._knn_candidates(lambda xq, k: store._knn(xq, k, n), n, cat.X[:rows], tau + exact.RANGE_SLACK,
                           ops.RANGE_K_CAP, 4096, None)
    s = time.perf_counter() - t0
    return {"dedupe_s": round(s * len(cat.ids) / rows, 1), "dedupe_pairs": None, "dedupe_extrapolated": True,
            "dedupe_slice_rows": rows}


def _vectors(n: int, seed: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """``n`` face-like vectors with 1 % near-copies, and QUERIES new photos of their people."""
    rng = np.random.default_rng(seed)
    faces = C.face_embeddings(n, d=dim, seed=seed)
    x = faces.x
    dup = rng.choice(n, int(n * DUP_SHARE), replace=False)
    x[dup[len(dup) // 2:]] = C.near_copies(x, dup[:len(dup) - len(dup) // 2], (0.02, 0.3), rng)
    xq = C.samples_of(faces.centres, faces.identity[rng.choice(n, QUERIES, replace=False)], rng)
    return np.ascontiguousarray(x), xq


def _exact_pairs(x: np.ndarray, tau: float) -> set:
    i, j, _ = ops.exact_pairs(x, tau)
    return set(zip(i.tolist(), j.tolist()))


def _ratios(rows: list[dict], other: str) -> dict:
    """``other`` / FAISS per size: how much each operation costs on that store."""
    out = {}
    for n in sorted({r["n"] for r in rows}):
        at = {r["backend"]: r for r in rows if r["n"] == n}
        if "faiss" not in at or other not in at:
            continue
        f, m = at["faiss"], at[other]
        # None where FAISS's time rounds to 0 (a toy size): no ratio, but the key stays.
        out[str(n)] = {k: round(m[k] / f[k], 2) if f[k] else None for k in ("insert_s", "query_p50_ms", "dedupe_s")}
    return out


def print_backends(res: dict) -> None:
    cols = ["backend", "n", "index", "insert_s", "insert_per_s", "index_s", f"recall@{K}", "query_p50_ms",
            "query_p95_ms", "dedupe_s", "dedupe_pairs", "pair_recall", "dedupe_extrapolated"]
    C.print_table(f"vector stores, synthetic face vectors ({res['dim']}-d), dedupe at tau {res['tau']}", cols,
                  [[r.get(c) for c in cols] for r in res["rows"]])
    print("milvus lite / faiss:", res["ratios"])
    if "server_ratios" in res:
        print("milvus server / faiss:", res["server_ratios"])
    for r in res.get("server_batch_sweep", []):
        print("server dedupe,", r)
