"""Array-level index operations in one import, ``faiss.contrib`` style: the vector store's toolbox.

Each job has its own module; this one gathers their public names for callers
that want the whole set (``from facesearch.store.vectors import ops``):

- :mod:`~facesearch.store.vectors.exact`  brute-force k-NN / range / pairs in numpy: the oracle.
- :mod:`~facesearch.store.vectors.build`  choosing, building and editing FAISS index types.
- :mod:`~facesearch.store.vectors.introspect`  an index's type, exactness, ids and vectors.
- :mod:`~facesearch.store.vectors.gpu`  GPU copies and when they pay.
- :mod:`~facesearch.store.vectors.knn`  k-NN search over an index.
- :mod:`~facesearch.store.vectors.ranges`  all pairs within a radius (near-duplicates).
- :mod:`~facesearch.store.vectors.components`  groups from pair edges.

Conventions: ``xq`` queries (nq, d), ``xb`` database (nb, d), ``k`` neighbours,
``D`` distances, ``I`` ids (int64, -1 = none). Embeddings are float32 and
L2-normalised; every distance is an **L2 distance** (not squared) in [0, 2];
cosine similarity = 1 - d**2 / 2.

Tunables (``AUTO_FLAT_MAX``, ``RANGE_K_MAX``, ...) are read from their home
module: patch them there, not here.
"""

from __future__ import annotations

from facesearch.store.vectors.build import (
    AUTO_FLAT_MAX,
    AUTO_HNSW_MAX,
    GRAPH_IVF_NPROBE,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    INDEX_TYPES,
    IVF_MIN_NPROBE,
    IVF_POINTS_PER_LIST,
    IVF_TRAIN_PER_LIST,
    IVFPQ_MIN_TRAIN,
    build_index,
    choose_index_type,
    graph_index,
    ivf_nlist,
    ivf_nprobe,
    make_index,
    remove_ids,
    resolve_index_type,
)
from facesearch.store.vectors.components import connected_components, keeper_groups
from facesearch.store.vectors.exact import as_matrix, exact_knn, exact_pairs, exact_range, pair_distances
from facesearch.store.vectors.gpu import gpu_available, gpu_supported, to_gpu
from facesearch.store.vectors.introspect import index_ids, index_type_of, index_vectors, is_exact
from facesearch.store.vectors.knn import search
from facesearch.store.vectors.ranges import (
    RANGE_HNSW_EF,
    RANGE_IVF_NPROBE,
    RANGE_K_CAP,
    RANGE_K_MAX,
    range_pairs,
    range_pairs_knn,
)

__all__ = [
    "AUTO_FLAT_MAX", "AUTO_HNSW_MAX", "GRAPH_IVF_NPROBE", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH", "HNSW_M",
    "INDEX_TYPES", "IVF_MIN_NPROBE", "IVF_POINTS_PER_LIST", "IVF_TRAIN_PER_LIST", "IVFPQ_MIN_TRAIN",
    "RANGE_HNSW_EF", "RANGE_IVF_NPROBE", "RANGE_K_CAP", "RANGE_K_MAX",
    "as_matrix", "build_index", "choose_index_type", "connected_components", "exact_knn", "exact_pairs",
    "exact_range", "gpu_available", "gpu_supported", "graph_index", "index_ids", "index_type_of", "index_vectors",
    "is_exact", "ivf_nlist", "ivf_nprobe", "keeper_groups", "make_index", "pair_distances", "range_pairs",
    "range_pairs_knn", "remove_ids", "resolve_index_type", "search", "to_gpu",
]
