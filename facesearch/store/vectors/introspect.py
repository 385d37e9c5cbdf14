"""What a FAISS index is and holds: its type, whether it is exact, its ids and vectors.

Reads indexes made by :mod:`facesearch.store.vectors.build` (IDMap-wrapped flat /
HNSW, or IVF with a hashtable direct map) and their GPU copies.
"""

from __future__ import annotations

import faiss
import numpy as np


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index under an IDMap wrapper (or the index itself), downcast to its real class."""
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.downcast_index(index.index)
    return index


def index_type_of(index: faiss.Index) -> str:
    """``flat``, ``hnsw``, ``ivf`` or ``ivfpq`` (``other`` for anything else)."""
    inner = inner_index(index)
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
    inner = inner_index(index)
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
        X = inner_index(index).reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
    else:
        X = index.reconstruct_batch(ids) if len(ids) else np.zeros((0, index.d), np.float32)
    return ids, np.ascontiguousarray(X, dtype=np.float32)
