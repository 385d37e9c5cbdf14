"""Exact (brute-force) search in numpy: the oracle for every FAISS path, and the small-n path.

Conventions follow ``faiss.contrib``: ``xq`` queries (nq, d), ``xb`` database
(nb, d), ``k`` neighbours, ``D`` distances, ``I`` ids (int64, -1 = none).
Embeddings are float32 and L2-normalised. Every distance returned by
``facesearch.store.vectors`` is an **L2 distance** (not squared) in [0, 2];
cosine similarity = 1 - d**2 / 2. FAISS L2 indexes work in squared distances;
the conversion happens in this package only.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

RANGE_SLACK = 1e-4  # candidate radius slack; exact distances decide the final cut
_BLOCK_FLOATS = 1 << 22  # distance-matrix block size for numpy search (16 MB)


def as_matrix(x, d: int | None = None) -> np.ndarray:
    """``x`` as a C-contiguous float32 (n, d) matrix; a single vector becomes (1, d)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, d) matrix, got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"expected dimension {d}, got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or inf")
    return x


def _sq_dists(xq: np.ndarray, xb: np.ndarray, xb_norms: np.ndarray) -> np.ndarray:
    """Squared L2 distances by the BLAS expansion |q|^2 + |b|^2 - 2 q.b (as FAISS does)."""
    d2 = (xq * xq).sum(1)[:, None] + xb_norms[None, :] - 2.0 * (xq @ xb.T)
    return np.maximum(d2, 0.0, out=d2)


def distances(xq, xb) -> np.ndarray:
    """L2 distances between every row of ``xq`` and every row of ``xb`` (small sets: one block)."""
    xq, xb = as_matrix(xq), as_matrix(xb)
    return np.sqrt(_sq_dists(xq, xb, (xb * xb).sum(1)))


def _row_blocks(nq: int, nb: int) -> Iterator[tuple[int, int]]:
    step = max(1, _BLOCK_FLOATS // max(nb, 1))
    for s in range(0, nq, step):
        yield s, min(nq, s + step)


def exact_knn(xq, xb, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k-NN: ``D`` (nq, k) L2 distances ascending, ``I`` (nq, k) positions in ``xb``.

    Ties are broken by the smaller position. Missing neighbours (k > nb) are
    ``inf`` / ``-1``, as FAISS reports them.
    """
    xq, xb = as_matrix(xq), as_matrix(xb)
    nq, nb = len(xq), len(xb)
    D = np.full((nq, k), np.inf, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    kk = min(k, nb)
    if kk == 0 or nq == 0:
        return D, I
    norms = (xb * xb).sum(1)
    for s, e in _row_blocks(nq, nb):
        d2 = _sq_dists(xq[s:e], xb, norms)
        cand = np.argpartition(d2, kk - 1, axis=1)[:, :kk] if kk < nb else np.tile(np.arange(nb), (e - s, 1))
        cd = np.take_along_axis(d2, cand, axis=1)
        order = np.lexsort((cand, cd), axis=1)
        D[s:e, :kk] = np.sqrt(np.take_along_axis(cd, order, axis=1))
        I[s:e, :kk] = np.take_along_axis(cand, order, axis=1)
    return D, I


def exact_range(xb, tau: float, xq=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute-force range search, as ``faiss.Index.range_search`` reports it.

    Returns ``lims`` (nq+1,), ``D`` and ``I`` such that the neighbours of query
    ``q`` within L2 distance ``tau`` (inclusive) are ``I[lims[q]:lims[q+1]]``,
    ordered by position. ``xq=None`` searches ``xb`` against itself (each point
    finds itself at distance 0).
    """
    xb = as_matrix(xb)
    xq = xb if xq is None else as_matrix(xq, xb.shape[1])
    norms = (xb * xb).sum(1)
    rows, cols, dists = [], [], []
    for s, e in _row_blocks(len(xq), len(xb)):
        d = np.sqrt(_sq_dists(xq[s:e], xb, norms))
        r, c = np.nonzero(d <= tau)
        rows.append(r + s)
        cols.append(c)
        dists.append(d[r, c])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    lims = np.zeros(len(xq) + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=len(xq)), out=lims[1:])
    I = np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)
    D = np.concatenate(dists).astype(np.float32) if dists else np.zeros(0, np.float32)
    return lims, D, I


def pair_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 65536,
                   dtype: type = np.float32) -> np.ndarray:
    """L2 distance between rows ``x[i]`` and ``x[j]`` by direct differences, in ``dtype``, blockwise.

    Direct differences are exact to float32 rounding even for near-duplicates,
    where the BLAS expansion loses ~1e-4 to cancellation. Evaluation asks for float64: its
    metrics sort hundreds of thousands of distances, where float32 ties would move the ROC.
    """
    out = np.empty(len(i), dtype=dtype)
    for s in range(0, len(i), block):
        diff = x[i[s : s + block]].astype(dtype, copy=False) - x[j[s : s + block]]
        out[s : s + block] = np.sqrt((diff * diff).sum(1))
    return out


def exact_pairs(xb, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of positions ``i < j`` with L2 distance <= ``tau`` (brute force, blockwise).

    Returns ``(i, j, d)`` sorted by (i, j): the oracle for
    :func:`~facesearch.store.vectors.ranges.range_pairs`.
    """
    xb = as_matrix(xb)
    lims, _, J = exact_range(xb, tau + RANGE_SLACK)
    I = np.repeat(np.arange(len(xb), dtype=np.int64), np.diff(lims))
    return finish_pairs(xb, np.arange(len(xb), dtype=np.int64), I, J, tau)


def finish_pairs(xb, ids, qpos, nid, tau) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (query position, neighbour id) -> unique id pairs ``i < j`` with exact d <= ``tau``.

    ``qpos`` are positions in ``xb``, ``nid`` the ids (from ``ids``) of their
    candidate neighbours. Returns ``(i, j, d)`` sorted by (i, j); ``d`` comes from
    :func:`pair_distances`, so the cut at ``tau`` does not depend on how the
    candidates were found.
    """
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    at = np.clip(np.searchsorted(sorted_ids, nid), 0, max(len(ids) - 1, 0))
    if len(nid) and not np.array_equal(sorted_ids[at], nid):
        raise ValueError("index returned ids that are not in `ids`")
    npos = order[at]
    a, b = np.minimum(qpos, npos), np.maximum(qpos, npos)
    keep = a != b
    key = np.unique(a[keep] * len(ids) + b[keep])
    a, b = key // max(len(ids), 1), key % max(len(ids), 1)
    d = pair_distances(xb, a, b)
    keep = d <= tau
    i, j, d = ids[a[keep]], ids[b[keep]], d[keep]
    i, j = np.minimum(i, j), np.maximum(i, j)
    o = np.lexsort((j, i))
    return i[o], j[o], d[o]
