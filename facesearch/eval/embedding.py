"""Photos to embeddings for evaluation: the largest face of each photo, made the indexing way.

Layer 3 (detection + embedding); the rest of :mod:`facesearch.eval` is arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from facesearch.faces.detect import create_detector
from facesearch.models.embed import EmbeddingEngine
from facesearch.core.errors import BadImageError
from facesearch.photos.folders import IdentityFolder
from facesearch.faces.chips import largest_face
from facesearch.photos.load import load_array

Progress = Callable[[int, int], None]


def embed_files(paths: list[str], engine: EmbeddingEngine, detector: str,
                on_progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, list[dict], np.ndarray | None]:
    """Embed the largest face of each photo (whole image if none); bad files are skipped and listed.

    Returns ``(emb, ok, bad, quality)``: one row per path (zeros where ``ok`` is False);
    ``quality`` is the model's rating of each face, None for a model that gives none.
    """
    det = create_detector(detector, align=engine.config.align)
    chips, ok, bad = [], np.zeros(len(paths), bool), []
    for n, p in enumerate(paths):
        try:
            crop = largest_face(load_array(p), det, engine.config.align)
            chips.append(crop.chip)
            ok[n] = True
        except BadImageError as e:
            bad.append({"path": p, "error": e.message})
        if on_progress:
            on_progress(n + 1, len(paths))
    emb = np.zeros((len(paths), engine.config.embedding_dim), np.float32)
    quality = np.zeros(len(paths), np.float32) if engine.rates_quality else None
    if chips:
        emb[ok], q = engine.embed_with_quality(chips)
        if quality is not None:
            quality[ok] = q
    return emb, ok, bad, quality


@dataclass
class EmbeddedFolder:
    """An identity folder's readable photos with their embeddings and person labels."""

    paths: list[str]
    labels: np.ndarray  # (N,) int person index into ``classes``
    classes: list[str]
    emb: np.ndarray  # (N, D) unit vectors
    bad: list[dict]
    quality: np.ndarray | None = None  # (N,) the model's rating of each face, if it gives one


def embed_folder(folder: IdentityFolder, engine: EmbeddingEngine, detector: str,
                 on_progress: Progress | None = None) -> EmbeddedFolder:
    """Embed every photo of an identity folder; unreadable ones are dropped and listed in ``bad``."""
    paths = [str(p) for p, _ in folder.samples]
    emb, ok, bad, quality = embed_files(paths, engine, detector, on_progress)
    return EmbeddedFolder([p for p, k in zip(paths, ok) if k], folder.labels[ok], list(folder.classes), emb[ok], bad,
                          None if quality is None else quality[ok])
