"""Array-level index operations: exact search (the oracle), FAISS index building,
k-NN and range search, and connected components.

Conventions follow ``faiss.contrib``: ``xq`` queries (nq, d), ``xb`` database
(nb, d), ``k`` neighbours, ``D`` distances, ``I`` ids (int64, -1 = none).
Embeddings are float32 and L2-normalised. Every distance returned here is an
**L2 distance** (not squared) in [0, 2]; cosine similarity = 1 - d**2 / 2.
FAISS L2 indexes work in squared distances; the conversion happens only here.

Index types (all hold stable int64 ids chosen by the caller):

- ``flat``  exact brute force, ``IndexIDMap2(IndexFlatL2)``.
- ``hnsw``  graph, ``IndexIDMap2(IndexHNSWFlat)`` (M=32, efConstruction=80).
  HNSW cannot delete: :func:`remove_ids` returns False and the caller rebuilds
  from its stored vectors (the :class:`~facesearch.store.face_index.FaceIndex` does).
- ``ivf`` / ``ivfpq``  inverted lists (IVF-Flat / IVF-PQ). These store ids
  natively with a hashtable direct map; they are *not* wrapped in IndexIDMap2
  because IDMap's remove_ids renumbers positions that IVF does not
  (faiss issues #2409, #4535), which silently corrupts ids.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Iterator

import faiss
import numpy as np

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
# Up to 50k faces exact search costs < 10 ms per query on one core (50k x 512 B
# = 25 MB scanned) and needs no training, so exact wins; beyond that HNSW.
AUTO_FLAT_MAX = 50_000
# HNSW keeps full vectors plus ~M*2*4 B of links per face in RAM; past a few
# million faces IVF (less memory, fast to build) is the better trade.
AUTO_HNSW_MAX = 200_000  # HNSW adds ~1.4k vectors/s at 1M on 2 cores, IVF ~40k/s (docs/benchmarks.md)

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# Measured on 20k clustered 128-d unit vectors (tests/test_index_ops.py): recall@10
# 0.984 / 0.995 / 0.998 at efSearch 16 / 64 / 128. 128 leaves margin for real
# embeddings, which are less cleanly clustered, at ~0.5 ms per query.
HNSW_EF_SEARCH = 128
IVF_MIN_NPROBE = 16  # see ivf_nprobe()
IVF_POINTS_PER_LIST = 39  # faiss k-means wants >= 39 training points per centroid
IVFPQ_MIN_TRAIN = 256 * IVF_POINTS_PER_LIST  # 8-bit PQ codebooks: 256 centroids each

RANGE_K_CAP = 16  # first k for range search by k-NN (approximate, GPU); grown x4 when saturated
RANGE_IVF_NPROBE = 16  # near-duplicates share a cell: range search scans far fewer lists than k-NN
RANGE_HNSW_EF = 32  # likewise a shallower HNSW search (pair recall stayed 1.0 at 50k; 4.5x faster)
RANGE_K_MAX = 1024  # largest k tried before giving up on a saturated query
_RANGE_SLACK = 1e-4  # candidate radius slack; exact distances decide the final cut
_BLOCK_FLOATS = 1 << 22  # distance-matrix block size for numpy search (16 MB)


# --- exact numpy search: the oracle and the small-n path ---------------------------------


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


def pair_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 65536) -> np.ndarray:
    """L2 distance between rows ``x[i]`` and ``x[j]`` by direct differences.

    Direct differences are exact to float32 rounding even for near-duplicates,
    where the BLAS expansion loses ~1e-4 to cancellation.
    """
    out = np.empty(len(i), dtype=np.float32)
    for s in range(0, len(i), block):
        diff = x[i[s : s + block]] - x[j[s : s + block]]
        out[s : s + block] = np.sqrt((diff * diff).sum(1))
    return out


def exact_pairs(xb, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of positions ``i < j`` with L2 distance <= ``tau`` (brute force, blockwise).

    Returns ``(i, j, d)`` sorted by (i, j): the oracle for :func:`range_pairs`.
    """
    xb = as_matrix(xb)
    lims, _, J = exact_range(xb, tau + _RANGE_SLACK)
    I = np.repeat(np.arange(len(xb), dtype=np.int64), np.diff(lims))
    return _finish_pairs(xb, np.arange(len(xb), dtype=np.int64), I, J, tau)


# --- FAISS index construction -----------------------------------------------------------


def choose_index_type(n: int) -> str:
    """Index type for ``n`` faces: exact up to AUTO_FLAT_MAX, HNSW up to AUTO_HNSW_MAX, then IVF."""
    if n <= AUTO_FLAT_MAX:
        return "flat"
    return "hnsw" if n <= AUTO_HNSW_MAX else "ivf"


def resolve_index_type(index_type: str, n: int) -> str:
    """The concrete type to build for ``n`` vectors when ``index_type`` is asked for.

    ``auto`` follows :func:`choose_index_type`. Trained types fall back when
    there are too few vectors to train on: ``ivfpq`` -> ``ivf`` below
    IVFPQ_MIN_TRAIN, and ``ivf`` -> ``flat`` with no vectors at all.
    """
    if index_type == "auto":
        return choose_index_type(n)
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}; choose from auto, {', '.join(INDEX_TYPES)}")
    if index_type == "ivfpq" and n < IVFPQ_MIN_TRAIN:
        index_type = "ivf"
    if index_type == "ivf" and n == 0:
        index_type = "flat"
    return index_type


def ivf_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: ~4*sqrt(n), with >= 39 training points per list."""
    return int(max(1, min(4 * math.sqrt(n), n // IVF_POINTS_PER_LIST)))


def ivf_nprobe(nlist: int) -> int:
    """Lists probed per query: 1/8 of the lists up to 1024 lists, then 1.5·sqrt(nlist).

    Measured on clustered 128-d vectors: at 20k (nlist 512) recall@10 is 0.93 /
    0.95 / 0.97 / 0.99 at nprobe 16 / 32 / 64 / 128 (the rule gives 64); at 1M
    (nlist 4000) 0.952 / 0.969 / 0.979 at 64 / 96 / 128, p50 1.1 / 1.6 / 2.1 ms
    on 2 cores (the rule gives 94). 1/8 of 4000 lists was 7.5 ms for 0.996.
    """
    probes = nlist // 8 if nlist <= 1024 else int(1.5 * math.sqrt(nlist))
    return int(min(nlist, max(IVF_MIN_NPROBE, probes)))


def _pq_m(d: int) -> int:
    """PQ sub-quantizers: 4 dimensions each (d/4 bytes per vector), falling back to a divisor of d."""
    for sub in (4, 2, 1):
        if d % sub == 0 and d // sub <= 64:
            return d // sub
    return next(m for m in range(min(d, 64), 0, -1) if d % m == 0)


def make_index(d: int, index_type: str = "flat", n_hint: int = 0) -> faiss.Index:
    """An empty index of ``index_type`` for ``d``-dim vectors; add with ``add_with_ids``.

    ``n_hint`` (expected vectors) sizes the IVF lists. IVF types must be trained
    before adding (:func:`build_index` does it).
    """
    if index_type == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatL2(d))
    if index_type == "hnsw":
        base = faiss.IndexHNSWFlat(d, HNSW_M)
        base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        base.hnsw.efSearch = HNSW_EF_SEARCH
        return faiss.IndexIDMap2(base)
    if index_type not in ("ivf", "ivfpq"):
        raise ValueError(f"unknown index type {index_type!r}; choose from {', '.join(INDEX_TYPES)}")
    nlist = ivf_nlist(n_hint)
    quantizer = faiss.IndexFlatL2(d)
    if index_type == "ivf":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
    else:
        index = faiss.IndexIVFPQ(quantizer, d, nlist, _pq_m(d), 8)
    index.nprobe = ivf_nprobe(nlist)
    # A hashtable direct map lets reconstruct(id) work and still allows remove_ids.
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def build_index(xb, ids, index_type: str = "auto") -> faiss.Index:
    """An index holding ``xb`` under ``ids`` (unique int64), trained on ``xb`` if the type needs it."""
    t0 = time.perf_counter()
    xb = as_matrix(xb)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(xb):
        raise ValueError(f"{len(xb)} vectors but {len(ids)} ids")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique")
    kind = resolve_index_type(index_type, len(xb))
    index = make_index(xb.shape[1], kind, n_hint=len(xb))
    if not index.is_trained:
        index.train(_train_sample(xb, ivf_nlist(len(xb))))
    if len(xb):
        index.add_with_ids(xb, ids)
    log.debug("built %s index of %d vectors in %.3fs", kind, len(xb), time.perf_counter() - t0)
    return index


GRAPH_IVF_NPROBE = 16  # all-vs-all k-NN for clustering: 0.996 of the neighbours within τ at 300k (docs/benchmarks.md)


def graph_index(xb) -> faiss.Index:
    """An index to search every vector of ``xb`` against (a clustering graph): exact up to
    AUTO_FLAT_MAX, then IVF probing GRAPH_IVF_NPROBE lists (HNSW builds too slowly for a one-off)."""
    xb = as_matrix(xb)
    if len(xb) <= AUTO_FLAT_MAX:
        return build_index(xb, np.arange(len(xb)), "flat")
    index = build_index(xb, np.arange(len(xb)), "ivf")
    _inner(index).nprobe = min(_inner(index).nlist, GRAPH_IVF_NPROBE)
    return index


# --- index introspection ----------------------------------------------------------------


IVF_TRAIN_PER_LIST = 64


def _train_sample(xb: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """k-means needs ~64 points per list, not all of them: training on all 1M was 92% of the build."""
    n = max(IVF_TRAIN_PER_LIST * nlist, IVFPQ_MIN_TRAIN)
    if len(xb) <= n:
        return xb
    rows = np.sort(np.random.default_rng(seed).choice(len(xb), n, replace=False))
    return np.ascontiguousarray(xb[rows])


def _inner(index: faiss.Index) -> faiss.Index:
    """The index under an IDMap wrapper (or the index itself), downcast to its real class."""
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.downcast_index(index.index)
    return index


def index_type_of(index: faiss.Index) -> str:
    """``flat``, ``hnsw``, ``ivf`` or ``ivfpq`` (``other`` for anything else)."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    return "other"


def is_exact(index: faiss.Index) -> bool:
    """True when searches on ``index`` are brute force (flat, CPU or GPU)."""
    inner = _inner(index)
    gpu_flat = getattr(faiss, "GpuIndexFlat", None)
    return isinstance(inner, faiss.IndexFlat) or (gpu_flat is not None and isinstance(inner, gpu_flat))


def index_ids(index: faiss.Index) -> np.ndarray:
    """All ids held by ``index`` (IDMap order, or inverted-list order for IVF)."""
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    if isinstance(index, faiss.IndexIVF):
        from faiss.contrib.inspect_tools import get_invlist

        lists = [get_invlist(index.invlists, l)[0] for l in range(index.nlist)]
        return np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
    raise TypeError(f"cannot list ids of {type(index).__name__}")


def index_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, X)``: the stored vectors (PQ-decoded for ivfpq, so approximate)."""
    ids = index_ids(index)
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        X = _inner(index).reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
    else:
        X = index.reconstruct_batch(ids) if len(ids) else np.zeros((0, index.d), np.float32)
    return ids, np.ascontiguousarray(X, dtype=np.float32)


def remove_ids(index: faiss.Index, ids) -> bool:
    """Remove ``ids`` in place; False when the type cannot delete (HNSW: rebuild instead)."""
    if index_type_of(index) == "hnsw":
        return False
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids):
        index.remove_ids(ids)
    return True


# --- GPU ----------------------------------------------------------------------------------


def gpu_available() -> bool:
    """True when this FAISS build has CUDA support and sees at least one GPU."""
    try:
        return hasattr(faiss, "get_num_gpus") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # a broken CUDA install must not break CPU search
        return False


def gpu_supported(index: faiss.Index) -> bool:
    """Whether ``index`` can be cloned to GPU (flat and IVF; not HNSW)."""
    return index_type_of(index) in ("flat", "ivf", "ivfpq")


def to_gpu(index: faiss.Index) -> faiss.Index:
    """A GPU copy of ``index`` (sharded over all GPUs when there are several).

    Raises ValueError for HNSW, which FAISS cannot run on GPU; use
    :func:`gpu_supported` first. The copy is read-only in spirit: changes to
    the CPU index are not reflected.
    """
    if not gpu_supported(index):
        raise ValueError(f"{index_type_of(index)} indexes cannot run on GPU")
    t0 = time.perf_counter()
    if faiss.get_num_gpus() > 1:
        co = faiss.GpuMultipleClonerOptions()
        co.shard = True
        gpu = faiss.index_cpu_to_all_gpus(index, co=co)
    else:
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, 0, index)
        gpu.referenced_objects = [res]  # keep the resources alive as long as the index
    log.debug("copied %d vectors to GPU in %.3fs", index.ntotal, time.perf_counter() - t0)
    return gpu


def _is_gpu(index: faiss.Index) -> bool:
    gpu_index = getattr(faiss, "GpuIndex", None)
    return gpu_index is not None and isinstance(_inner(index), gpu_index)


# Below this much work (queries x vectors) the host->GPU copy costs more than it saves.
_GPU_MIN_WORK = 1e8


def _maybe_gpu(index: faiss.Index, nq: int, gpu: bool | str) -> faiss.Index:
    if gpu == "auto":
        gpu = nq * index.ntotal >= _GPU_MIN_WORK and gpu_available() and gpu_supported(index)
    return to_gpu(index) if gpu and not _is_gpu(index) else index


# --- search -------------------------------------------------------------------------------


def _knn_raw(index: faiss.Index, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS k-NN returning squared distances; HNSW gets efSearch >= k."""
    params = None
    if index_type_of(index) == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(_inner(index).hnsw.efSearch, k))
    return index.search(xq, k, params=params)


def search(index: faiss.Index, xq, k: int, gpu: bool | str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """k-NN over ``index``: ``D`` (nq, k) L2 distances ascending, ``I`` ids (-1 / inf when missing).

    ``gpu="auto"`` copies the index to GPU when one is available and the batch
    is large enough to pay for the copy; pass a :func:`to_gpu` index to reuse a copy.
    """
    t0 = time.perf_counter()
    xq = as_matrix(xq, index.d)
    if k <= 0 or len(xq) == 0 or index.ntotal == 0:
        return np.full((len(xq), max(k, 0)), np.inf, np.float32), np.full((len(xq), max(k, 0)), -1, np.int64)
    D2, I = _knn_raw(_maybe_gpu(index, len(xq), gpu), xq, k)
    D = np.sqrt(np.maximum(D2, 0.0))
    D[I < 0] = np.inf
    log.debug("searched %d queries (k=%d) in %d vectors in %.3fs", len(xq), k, index.ntotal, time.perf_counter() - t0)
    return D, I


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


def _finish_pairs(xb, ids, qpos, nid, tau) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (query position, neighbour id) -> unique id pairs i < j with exact d <= tau."""
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
    radius = tau + _RANGE_SLACK
    searcher = _maybe_gpu(index, len(xb), gpu)
    if is_exact(searcher) and not _is_gpu(searcher):
        qpos, nid = _range_search_blocks(searcher, xb, radius, block)
    else:
        fallback = (lambda rows: _range_search_blocks_rows(index, xb, rows, radius, block)) if is_exact(index) else None
        with _range_search_params(searcher):
            knn = lambda xq, k: _knn_raw(searcher, xq, k)  # noqa: E731
            qpos, nid = _knn_candidates(knn, searcher.ntotal, xb, radius, k_cap, block, fallback)
    out = _finish_pairs(xb, ids, qpos, nid, tau)
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
    qpos, nid = _knn_candidates(knn, len(xb), xb, tau + _RANGE_SLACK, k_cap, block, None)
    return _finish_pairs(xb, ids, qpos, nid, tau)


@contextmanager
def _range_search_params(index: faiss.Index) -> Iterator[None]:
    """Narrow IVF nprobe / HNSW efSearch for the range pass, then restore them."""
    inner = _inner(index)
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


# --- connected components -----------------------------------------------------------------


def connected_components(ids, i, j, min_size: int = 1) -> list[list[int]]:
    """Groups of ``ids`` linked by the edges ``(i[e], j[e])`` (ids, not positions).

    Vectorised union-find: hook each edge's larger root under its smaller one,
    then pointer-jump until every node points at its root; repeat until no edge
    crosses two components. Each component is sorted; components come largest
    first, then by smallest id. ``min_size=2`` drops singletons.
    """
    uniq = np.unique(np.asarray(ids, dtype=np.int64))
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    pi, pj = np.searchsorted(uniq, i), np.searchsorted(uniq, j)
    if len(i) and (pi.max() >= len(uniq) or pj.max() >= len(uniq)
                   or not (np.array_equal(uniq[pi], i) and np.array_equal(uniq[pj], j))):
        raise ValueError("edges name ids that are not in `ids`")
    parent = np.arange(len(uniq), dtype=np.int64)
    while True:
        ri, rj = parent[pi], parent[pj]
        cross = ri != rj
        if not cross.any():
            break
        lo, hi = np.minimum(ri[cross], rj[cross]), np.maximum(ri[cross], rj[cross])
        np.minimum.at(parent, hi, lo)  # roots only: parent[x] <= x, so no cycles
        while True:  # pointer jumping: O(log depth) passes
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return _group(uniq, parent, min_size)


def _group(uniq: np.ndarray, root: np.ndarray, min_size: int) -> list[list[int]]:
    order = np.lexsort((uniq, root))
    bounds = np.flatnonzero(np.diff(root[order])) + 1
    comps = [c.tolist() for c in np.split(uniq[order], bounds) if len(c) >= min_size] if len(uniq) else []
    comps.sort(key=lambda c: (-len(c), c[0]))
    return comps


def keeper_groups(i, j, rank, min_size: int = 2) -> list[list[int]]:
    """Near-duplicate groups without chaining: complete linkage over the edges ``(i[e], j[e])``.

    The edges are the pairs within τ. In each connected component the best-ranked
    id not yet grouped (``rank[id]``: lower is better, the would-be keeper) seeds a
    group; its neighbours join nearest-ranked first, each only if it has an edge to
    *every* member already in, so every member is within τ of every other (diameter
    ≤ τ) instead of a chain of look-alikes. Repeat until the component is used up.
    Groups are keeper first; smaller than ``min_size`` are dropped.
    """
    adj: dict[int, set[int]] = {}
    for a, b in zip(np.asarray(i, np.int64).tolist(), np.asarray(j, np.int64).tolist()):
        if a != b:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
    groups = []
    for comp in connected_components(list(adj), i, j, min_size=2) if adj else []:
        left = sorted(comp, key=lambda x: (rank[x], x))
        while left:
            group = _grow(left[0], left, adj, rank)
            if len(group) >= min_size:
                groups.append(group)
            left = [x for x in left if x not in set(group)]
    return groups


def _grow(seed: int, left: list[int], adj: dict[int, set[int]], rank) -> list[int]:
    group, members = [seed], {seed}
    common = adj[seed] & set(left)  # ids linked to every member so far
    for x in sorted(common, key=lambda y: (rank[y], y)):
        if x in common:
            group.append(x)
            members.add(x)
            common &= adj[x]
    return group
