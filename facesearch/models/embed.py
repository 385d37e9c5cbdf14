"""Batched embedding of face crops on the best available device.

``auto`` picks cuda > mps > cpu. Precision (``precision=`` or ``$FACESEARCH_PRECISION``,
:mod:`facesearch.core.precision`): ``auto`` runs the model under fp16 autocast on CUDA (in
``channels_last``) and under bf16 autocast on a CPU with native bf16 (1.6x faster for the fused
default, cosine to fp32 >= 0.9998 on dev faces, docs/benchmarks.md). Inference runs under
``torch.inference_mode``.
"""

from __future__ import annotations

import logging
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from facesearch.core.errors import FacesearchError
from facesearch.models.factory import Embedder
from facesearch.core.precision import autocast, autocast_dtype
from facesearch.models.preprocess import ImageLike, preprocess

log = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """Resolve ``auto|cpu|cuda|cuda:N|mps`` to a usable device, with a clear error otherwise."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FacesearchError("CUDA was asked for but is not available", hint="use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise FacesearchError(f"unknown device {name!r}", hint="use auto, cpu, cuda or mps") from e


# Faces per forward pass on a CPU. A large batch's activations outgrow the CPU caches, and
# SFace's full-resolution 112 px layers then run at memory speed: on one core a pass over 8
# faces costs the fused default 13 ms a face, one over 64 faces 21 ms (bench/embed.py).
CPU_FORWARD_FACES = 8


class EmbeddingEngine:
    """Holds a model on a device and embeds face images in batches."""

    def __init__(self, model: Embedder, device: str = "auto", batch_size: int = 64, precision: str | None = None):
        self.device = select_device(device)
        self.batch_size = batch_size
        self.config = model.config
        self.autocast = autocast_dtype(self.device, precision)
        self.forward_faces = CPU_FORWARD_FACES if self.device.type == "cpu" else None  # None: the whole batch
        self.model = model.eval().to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)

    def embed(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Embed face images; returns (N, dim) float32 unit vectors."""
        return self.embed_with_quality(images)[0]

    def embed_with_quality(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(embeddings, quality)``: quality is one float per face from a model that rates its
        faces (the fused default: :meth:`FusedEmbedder.forward_with_quality`), else None."""
        if len(images) == 0:
            return (np.zeros((0, self.config.embedding_dim), np.float32),
                    np.zeros(0, np.float32) if self.rates_quality else None)
        parts = [self._run_batch(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        emb = np.concatenate([y for y, _ in parts])
        return emb, (np.concatenate([q for _, q in parts]) if self.rates_quality else None)

    @property
    def rates_quality(self) -> bool:
        return hasattr(self.model, "forward_with_quality")

    def embed_stream(self, images: Iterable[ImageLike]) -> Iterator[np.ndarray]:
        """Embed an iterable lazily, one batch of vectors at a time."""
        batch: list[ImageLike] = []
        for im in images:
            batch.append(im)
            if len(batch) == self.batch_size:
                yield self._embed_batch(batch)
                batch = []
        if batch:
            yield self._embed_batch(batch)

    def _embed_batch(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self._run_batch(images)[0]

    @torch.inference_mode()
    def _run_batch(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, np.ndarray | None]:
        # A fused model takes one chip dict per face and prepares its parts' inputs itself.
        prepare = getattr(self.model, "prepare", None)
        xs = prepare(images) if prepare else (preprocess(images, self.config),)
        xs = [x.to(self.device, non_blocking=True) for x in xs]
        forward = getattr(self.model, "forward_with_quality", self.model)
        if self.device.type == "cuda":
            xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
        step = self.forward_faces or len(xs[0])
        outs = [self._forward(forward, [x[i:i + step] for x in xs]) for i in range(0, len(xs[0]), step)]
        q = None if outs[0][1] is None else _numpy(torch.cat([o[1] for o in outs]))
        return _numpy(torch.cat([o[0] for o in outs])), q

    def _forward(self, forward, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One forward pass under this engine's autocast: ``(embeddings, quality or None)``."""
        with autocast(self.device, self.autocast):
            out = forward(*xs)
        return out if isinstance(out, tuple) else (out, None)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy().astype(np.float32, copy=False)
