"""Choosing and building FAISS indexes (and editing them: remove ids).

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

import faiss
import numpy as np

from facesearch.store.vectors.exact import as_matrix
from facesearch.store.vectors.introspect import index_type_of, inner_index

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
    inner_index(index).nprobe = min(inner_index(index).nlist, GRAPH_IVF_NPROBE)
    return index


IVF_TRAIN_PER_LIST = 64


def _train_sample(xb: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """k-means needs ~64 points per list, not all of them: training on all 1M was 92% of the build."""
    n = max(IVF_TRAIN_PER_LIST * nlist, IVFPQ_MIN_TRAIN)
    if len(xb) <= n:
        return xb
    rows = np.sort(np.random.default_rng(seed).choice(len(xb), n, replace=False))
    return np.ascontiguousarray(xb[rows])


def remove_ids(index: faiss.Index, ids) -> bool:
    """Remove ``ids`` in place; False when the type cannot delete (HNSW: rebuild instead)."""
    if index_type_of(index) == "hnsw":
        return False
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids):
        index.remove_ids(ids)
    return True
