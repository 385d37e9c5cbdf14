"""Range pairs: every pair of vectors within L2 distance tau (near-duplicate search).

Exact indexes answer by FAISS ``range_search``; approximate and GPU ones by
k-NN plus a distance filter, growing k for queries whose k nearest are all in
range. Either way the final cut is made on exact distances
(:func:`~facesearch.store.vectors.exact.finish_pairs`).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator

import faiss
import numpy as np

from facesearch.store.vectors.build import build_index
from facesearch.store.vectors.exact import RANGE_SLACK, as_matrix, finish_pairs
from facesearch.store.vectors.gpu import is_gpu, maybe_gpu
from facesearch.store.vectors.introspect import index_vectors, inner_index, is_exact
from facesearch.store.vectors.knn import knn_squared

log = logging.getLogger(__name__)

RANGE_K_CAP = 16  # first k for range search by k-NN (approximate, GPU); grown x4 when saturated
RANGE_IVF_NPROBE = 16  # near-duplicates share a cell: range search scans far fewer lists than k-NN
RANGE_HNSW_EF = 32  # likewise a shallower HNSW search (pair recall stayed 1.0 at 50k; 4.5x faster)
RANGE_K_MAX = 1024  # largest k tried before giving up on a saturated query


def _range_search_blocks(index, xb, radius, block) -> tuple[np.ndarray, np.ndarray]:
    """Exact candidates by FAISS range_search, query block by query block."""
    qs, ns = [], []
    r2 = np.float32(radius) ** 2
    for s in range(0, len(xb), block):
        lims, _, I = index.range_search(xb[s : s + block], float(r2))
        qs.append(np.repeat(np.arange(s, s + len(lims) - 1, dtype=np.int64), np.diff(lims).astype(np.int64)))
        ns.append(I)
    return np.concatenate(qs), np.concatenate(ns).astype(np.int64)


def _knn_hits(knn, ntotal, xb, rows, k, r2, keep_full) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-NN of ``xb[rows]`` filtered to squared radius ``r2``: (query rows, neighbour ids, saturated rows).

    ``knn(xq, k)`` returns squared distances and ids. A query is saturated when all
    k neighbours are in range: it may have more. Its hits are dropped (it will be
    re-run) unless ``keep_full``.
    """
    D2, I = knn(xb[rows], k)
    hit = (I >= 0) & (D2 <= r2)
    full = hit[:, -1] if k < ntotal else np.zeros(len(rows), dtype=bool)
    r, c = np.nonzero(hit if keep_full else hit & ~full[:, None])
    return rows[r], I[r, c], rows[full]


def _knn_candidates(knn, ntotal, xb, radius, k_cap, block, exact_fallback) -> tuple[np.ndarray, np.ndarray]:
    """Candidates by k-NN + distance filter, growing k (x4) for saturated queries.

    Saturated queries go to ``exact_fallback`` (CPU range search) when given.
    Otherwise k grows up to RANGE_K_MAX; queries still saturated there keep
    their RANGE_K_MAX nearest (logged): their duplicate group stays connected,
    only some of its direct pairs are missing.
    """
    r2 = np.float32(radius) ** 2
    qs, ns = [], []
    pending, k = np.arange(len(xb), dtype=np.int64), k_cap
    while len(pending):
        k = min(k, RANGE_K_MAX, ntotal)
        last = k in (RANGE_K_MAX, ntotal) and exact_fallback is None
        found = [_knn_hits(knn, ntotal, xb, pending[s : s + block], k, r2, last) for s in range(0, len(pending), block)]
        qs += [f[0] for f in found]
        ns += [f[1] for f in found]
        pending = np.concatenate([f[2] for f in found])
        if len(pending) and exact_fallback is not None:
            q, n = exact_fallback(pending)
            qs.append(q)
            ns.append(n)
            break
        if last and len(pending):
            log.warning("%d faces have more than %d neighbours within range; kept their %d nearest",
                        len(pending), k, k)
            break
        k *= 4
    return np.concatenate(qs), np.concatenate(ns).astype(np.int64)


def range_pairs(index_or_xb, tau: float, *, xb=None, ids=None, k_cap: int = RANGE_K_CAP,
                block: int = 4096, gpu: bool | str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of ids ``i < j`` whose vectors are within L2 distance ``tau`` (inclusive).

    ``index_or_xb`` is either an (n, d) array (ids default to positions; searched
    exactly) or a FAISS index from this module, with ``xb``/``ids`` the vectors
    it holds (read back from the index when omitted). Returns int64 ``i``,
    ``j`` and float32 ``d``, sorted by (i, j); ``d`` is recomputed exactly from
    the vectors, so the cut at ``tau`` does not depend on the index.

    Flat indexes use FAISS ``range_search`` in query blocks: exact. Approximate
    indexes (HNSW, IVF) and GPU indexes have no usable range search, so they
    use k-NN with ``k = k_cap`` plus a distance filter, growing k for queries
    whose k nearest are all within range (see :func:`_knn_candidates`). Such
    results can miss pairs the approximate search misses.
    """
    t0 = time.perf_counter()
    if isinstance(index_or_xb, faiss.Index):
        index = index_or_xb
        if xb is None:
            ids, xb = index_vectors(index)
    else:
        xb = as_matrix(index_or_xb)
        ids = np.arange(len(xb), dtype=np.int64) if ids is None else ids
        index = build_index(xb, ids, "flat")
    xb = as_matrix(xb, index.d)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(xb) or len(xb) != index.ntotal:
        raise ValueError(f"index holds {index.ntotal} vectors, got {len(xb)} vectors and {len(ids)} ids")
    if len(xb) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    radius = tau + RANGE_SLACK
    searcher = maybe_gpu(index, len(xb), gpu)
    if is_exact(searcher) and not is_gpu(searcher):
        qpos, nid = _range_search_blocks(searcher, xb, radius, block)
    else:
        fallback = (lambda rows: _range_search_blocks_rows(index, xb, rows, radius, block)) if is_exact(index) else None
        with _range_search_params(searcher):
            knn = lambda xq, k: knn_squared(searcher, xq, k)  # noqa: E731
            qpos, nid = _knn_candidates(knn, searcher.ntotal, xb, radius, k_cap, block, fallback)
    out = finish_pairs(xb, ids, qpos, nid, tau)
    log.debug("range_pairs over %d vectors: %d pairs in %.3fs", len(xb), len(out[0]), time.perf_counter() - t0)
    return out


def range_pairs_knn(knn, xb, ids, tau: float, k_cap: int = RANGE_K_CAP,
                    block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`range_pairs` for a search engine that only answers k-NN queries (a vector database).

    ``knn(xq, k)`` returns ``(D2, I)``: squared L2 distances ascending and stored ids
    (-1 when missing) over the vectors ``xb`` with ids ``ids``. k grows for saturated
    queries as in :func:`range_pairs`; distances are recomputed exactly from ``xb``.
    """
    xb = as_matrix(xb)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(xb) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    qpos, nid = _knn_candidates(knn, len(xb), xb, tau + RANGE_SLACK, k_cap, block, None)
    return finish_pairs(xb, ids, qpos, nid, tau)


@contextmanager
def _range_search_params(index: faiss.Index) -> Iterator[None]:
    """Narrow IVF nprobe / HNSW efSearch for the range pass, then restore them."""
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexIVF):
        old, inner.nprobe = inner.nprobe, min(inner.nprobe, RANGE_IVF_NPROBE)
        restore = lambda: setattr(inner, "nprobe", old)  # noqa: E731
    elif isinstance(inner, faiss.IndexHNSW):
        old, inner.hnsw.efSearch = inner.hnsw.efSearch, min(inner.hnsw.efSearch, RANGE_HNSW_EF)
        restore = lambda: setattr(inner.hnsw, "efSearch", old)  # noqa: E731
    else:
        restore = lambda: None  # noqa: E731
    try:
        yield
    finally:
        restore()


def _range_search_blocks_rows(index, xb, rows, radius, block) -> tuple[np.ndarray, np.ndarray]:
    q, n = _range_search_blocks(index, xb[rows], radius, block)
    return rows[q], n
