"""k-NN search over a FAISS index, in L2 distances (FAISS itself answers squared ones)."""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np

from facesearch.store.vectors.exact import as_matrix
from facesearch.store.vectors.gpu import maybe_gpu
from facesearch.store.vectors.introspect import index_type_of, inner_index

log = logging.getLogger(__name__)


def knn_squared(index: faiss.Index, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS k-NN returning squared distances; HNSW gets efSearch >= k."""
    params = None
    if index_type_of(index) == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(inner_index(index).hnsw.efSearch, k))
    return index.search(xq, k, params=params)


def search(index: faiss.Index, xq, k: int, gpu: bool | str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """k-NN over ``index``: ``D`` (nq, k) L2 distances ascending, ``I`` ids (-1 / inf when missing).

    ``gpu="auto"`` copies the index to GPU when one is available and the batch
    is large enough to pay for the copy; pass a
    :func:`~facesearch.store.vectors.gpu.to_gpu` index to reuse a copy.
    """
    t0 = time.perf_counter()
    xq = as_matrix(xq, index.d)
    if k <= 0 or len(xq) == 0 or index.ntotal == 0:
        return np.full((len(xq), max(k, 0)), np.inf, np.float32), np.full((len(xq), max(k, 0)), -1, np.int64)
    D2, I = knn_squared(maybe_gpu(index, len(xq), gpu), xq, k)
    D = np.sqrt(np.maximum(D2, 0.0))
    D[I < 0] = np.inf
    log.debug("searched %d queries (k=%d) in %d vectors in %.3fs", len(xq), k, index.ntotal, time.perf_counter() - t0)
    return D, I
