"""FAISS on GPU: whether one is there, which indexes can go, copying them, and when it pays."""

from __future__ import annotations

import logging
import time

import faiss

from facesearch.store.vectors.introspect import index_type_of, inner_index

log = logging.getLogger(__name__)


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


def is_gpu(index: faiss.Index) -> bool:
    """True when ``index`` already lives on a GPU (a :func:`to_gpu` copy)."""
    gpu_index = getattr(faiss, "GpuIndex", None)
    return gpu_index is not None and isinstance(inner_index(index), gpu_index)


# Below this much work (queries x vectors) the host->GPU copy costs more than it saves.
_GPU_MIN_WORK = 1e8


def maybe_gpu(index: faiss.Index, nq: int, gpu: bool | str) -> faiss.Index:
    """The index to search ``nq`` queries on: a GPU copy when ``gpu`` is true, or when it is
    ``"auto"`` and the work pays for the copy; ``index`` itself otherwise (or if already on GPU)."""
    if gpu == "auto":
        gpu = nq * index.ntotal >= _GPU_MIN_WORK and gpu_available() and gpu_supported(index)
    return to_gpu(index) if gpu and not is_gpu(index) else index
