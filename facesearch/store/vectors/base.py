"""The vector-store seam: where an index keeps its face vectors for search.

The SQLite catalogue (:mod:`facesearch.store.face_index`) is the truth: files, faces,
labels, people, and every face's embedding. A vector store is a **derived copy**
of those embeddings that answers k-NN and range queries; it can always be rebuilt
from the catalogue. Two implementations:

``faiss``                 in-process FAISS, cached in the index folder (the default);
``milvus://[PATH.db]``    Milvus Lite, embedded, in a file (default: inside the index folder);
``milvus://HOST:PORT``    a Milvus server or cluster (``milvus+https://`` for TLS).

Every distance crossing this seam is a plain L2 distance between unit vectors.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from facesearch.core.errors import FacesearchError

DEFAULT_BACKEND = "faiss"
MILVUS_SCHEMES = ("milvus://", "milvus+https://")


class VectorSource(Protocol):
    """What a vector store needs from its catalogue."""

    folder: object
    readonly: bool
    dim: int

    def generation(self) -> int:
        """Counter bumped by every transaction that changes faces."""

    def uuid(self) -> str:
        """The index's identity (a re-created index gets a new one)."""

    def count(self) -> int:
        """Number of faces in the catalogue."""

    def embeddings_snapshot(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(generation, ids, X)`` read in one transaction."""

    def index_type(self) -> str:
        """The requested FAISS index type (``auto``, ``flat``, ...)."""


class VectorStore(Protocol):
    """A searchable copy of the catalogue's face vectors, kept in step with it."""

    kind: str
    rebuilt_reason: str | None  # why it was rebuilt (or bypassed) when opened, if it was

    def load(self) -> None:
        """Open lazily before a write, so the write can be mirrored instead of rebuilt."""

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``D`` (nq, k) L2 ascending and ``I`` face ids; inf / -1 where fewer than k."""

    def range_pairs(self, tau: float, k_cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All face-id pairs ``i < j`` within ``tau``: ``(i, j, d)`` sorted, ``d`` exact."""

    def apply(self, removed: np.ndarray, ids: np.ndarray, X: np.ndarray | None) -> None:
        """Mirror one committed transaction (faces ``removed``, faces ``ids`` added)."""

    def flush(self) -> None:
        """Make the copy durable (writers); cheap when nothing changed."""

    def check(self, fix: bool) -> dict:
        """Compare with the catalogue; ``fix`` rebuilds a stale or inconsistent copy."""

    def rebuild(self) -> dict:
        """Rebuild from the catalogue and persist it."""

    def describe(self) -> dict:
        """``backend``, ``index_type`` and whether the persisted copy is current."""

    def close(self) -> None:
        """Release connections (after :meth:`flush`)."""


def check_backend(spec: str | None) -> str:
    """The backend spec, validated: ``faiss`` or a ``milvus://`` URI (FacesearchError otherwise)."""
    spec = (spec or DEFAULT_BACKEND).strip()
    if spec == DEFAULT_BACKEND or spec.startswith(MILVUS_SCHEMES):
        return spec
    raise FacesearchError(f"unknown vector backend {spec!r}",
                     hint="use faiss (default), milvus://PATH.db (embedded) or milvus://HOST:PORT")

