"""The one factory for vector stores: a backend spec (``faiss``, ``milvus://...``) to an open store.

Kept apart from :mod:`facesearch.store.vectors.base` (the interface), which the implementations
import: the factory imports them, so the interface cannot.
"""

from __future__ import annotations

from facesearch.store.vectors.base import DEFAULT_BACKEND, VectorSource, VectorStore, check_backend


def open_vectors(spec: str, source: VectorSource, create: bool = False) -> VectorStore:
    """The vector store ``spec`` names, over ``source``'s faces (empty when ``create``)."""
    spec = check_backend(spec)
    if spec == DEFAULT_BACKEND:
        from facesearch.store.vectors.faiss_store import FaissVectors

        return FaissVectors.create(source) if create else FaissVectors(source)
    from facesearch.store.vectors.milvus_store import MilvusVectors

    return MilvusVectors(spec, source, create=create)
