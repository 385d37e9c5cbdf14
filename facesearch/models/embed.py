"""Batched embedding of face crops: the inference runtime on a CPU, torch on a GPU.

:func:`open_engine` is the product's way in (index, query, serve): on a CPU it opens the shipped
model's exported networks (:mod:`facesearch.models.runtime`) and never imports torch; on CUDA or
MPS, or for a model without an export, it loads the torch module. :class:`EmbeddingEngine`
wraps either; given a torch model on a CPU it still runs the exported networks of that model
where they exist (same ``model_id``, same vectors within the parity tests' tolerance), so every
caller gets the fast path. ``device="auto"`` picks cuda > mps > cpu; precision follows
:mod:`facesearch.core.precision` (``precision=`` or ``$FACESEARCH_PRECISION``).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Iterable, Iterator, Sequence

import numpy as np

from facesearch.core.extras import has_module
from facesearch.core.precision import requested_precision
from facesearch.core.runtime import choose_runtime
from facesearch.models.config import EmbedderConfig
from facesearch.models.preprocess import ImageLike
from facesearch.models.runtime import RuntimeEmbedder, load_runtime_embedder

__all__ = ["CPU_FORWARD_FACES", "EmbeddingEngine", "open_engine", "select_device"]

# Faces per forward pass on a CPU. A large batch's activations outgrow the CPU caches, and
# SFace's full-resolution 112 px layers then run at memory speed. `bench/embed.py --sweep`: the
# fused default on OpenVINO, CPU ms per face at passes of 4/8/16/32: 35.3/34.1/31.3/34.3 (one
# thread), within 10 % from 8 to 32; torch's best was 4-8.
CPU_FORWARD_FACES = 8


def select_device(name: str = "auto"):
    """The torch device for ``name`` (imports torch; see ``models.torch_engine.select_device``)."""
    from facesearch.models.torch_engine import select_device as torch_select

    return torch_select(name)


def wants_torch(device: str) -> bool:
    """Whether ``device`` needs torch: a GPU asked for, or ``auto`` on a machine that may have one.

    ``auto`` asks torch only where a GPU can exist (an NVIDIA driver, Apple silicon) and torch is
    installed (the train extra), so a CPU-only machine never pays for importing it.
    """
    if device != "auto":
        return device != "cpu"
    if not has_module("torch"):
        return False
    return os.path.exists("/proc/driver/nvidia/version") or (sys.platform == "darwin" and platform.machine() == "arm64")


class EmbeddingEngine:
    """Holds a model on a device and embeds face images in batches.

    ``model``: a torch embedder (``load_weights``) or a :class:`RuntimeEmbedder`. ``runtime``
    (``openvino``, ``onnxruntime``, ``torch``; default ``$FACESEARCH_RUNTIME`` or auto) applies on
    a CPU: a torch model with exported networks runs them unless ``torch`` is asked for.
    """

    def __init__(self, model, device: str = "auto", batch_size: int = 64, precision: str | None = None,
                 runtime: str | None = None):
        requested_precision(precision)  # a bad value is an error on every path
        self.batch_size = batch_size
        self.config: EmbedderConfig = model.config
        self.runner = model if isinstance(model, RuntimeEmbedder) else _runner(model, device, precision, runtime)
        on_cpu = isinstance(self.runner, RuntimeEmbedder) or self.runner.device.type == "cpu"
        self.forward_faces = CPU_FORWARD_FACES if on_cpu else None  # None: the whole batch
        self.device = "cpu" if isinstance(self.runner, RuntimeEmbedder) else self.runner.device
        self.model = getattr(self.runner, "model", model)
        self.model_id: str | None = getattr(model, "model_id", None)

    @property
    def rates_quality(self) -> bool:
        """Whether the model rates its faces (the fused default: SFace's feature norm)."""
        return self.runner.rates_quality

    def embed(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Embed face images; returns (N, dim) float32 unit vectors."""
        return self.embed_with_quality(images)[0]

    def embed_with_quality(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(embeddings, quality)``: quality is one float per face from a model that rates its
        faces (the fused default), else None."""
        if len(images) == 0:
            return (np.zeros((0, self.config.embedding_dim), np.float32),
                    np.zeros(0, np.float32) if self.rates_quality else None)
        parts = [self._run_batch(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        emb = np.concatenate([y for y, _ in parts])
        return emb, (np.concatenate([q for _, q in parts]) if self.rates_quality else None)

    def embed_stream(self, images: Iterable[ImageLike]) -> Iterator[np.ndarray]:
        """Embed an iterable lazily, one batch of vectors at a time."""
        batch: list[ImageLike] = []
        for im in images:
            batch.append(im)
            if len(batch) == self.batch_size:
                yield self._run_batch(batch)[0]
                batch = []
        if batch:
            yield self._run_batch(batch)[0]

    def _run_batch(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, np.ndarray | None]:
        xs = self.runner.inputs(images)
        step = self.forward_faces or len(xs[0])
        outs = [self.runner.forward([x[i:i + step] for x in xs]) for i in range(0, len(xs[0]), step)]
        q = None if outs[0][1] is None else np.concatenate([o[1] for o in outs])
        return np.concatenate([o[0] for o in outs]), q


def _runner(model, device: str, precision: str | None, runtime: str | None):
    """The exported networks of a torch ``model`` on a CPU where they exist, else a TorchRunner."""
    from facesearch.models.torch_engine import TorchRunner, select_device as torch_select

    dev = torch_select(device)
    if dev.type == "cpu" and getattr(model, "model_id", None):
        fast = _runtime_twin(model.model_id, precision, runtime)
        if fast is not None:
            return fast
    return TorchRunner(model, dev, precision)


def _runtime_twin(model_id: str, precision: str | None, runtime: str | None) -> RuntimeEmbedder | None:
    """The runtime embedder of the installed weights whose id is ``model_id``, or None."""
    from facesearch.core.errors import FacesearchError
    from facesearch.models.weights_meta import read_meta, resolve_weights

    try:
        js = resolve_weights(None, model=model_id)
        if read_meta(js)["model_id"] != model_id:
            return None  # not an installed model (resolve_weights fell back to the default)
    except FacesearchError:
        return None
    return load_runtime_embedder(js, precision=precision, runtime=runtime)


def open_engine(spec=None, expect: EmbedderConfig | None = None, device: str = "auto", batch_size: int = 64,
                precision: str | None = None, runtime: str | None = None) -> EmbeddingEngine:
    """An engine for the weights ``spec`` (as ``load_weights`` resolves it): on a CPU the exported
    networks, torch never imported; elsewhere, or for a model without an export, the torch module."""
    if not wants_torch(device) and choose_runtime(runtime, "embedder") != "torch":
        fast = load_runtime_embedder(spec, expect=expect, precision=precision, runtime=runtime)
        if fast is not None:
            return EmbeddingEngine(fast, batch_size=batch_size)
    from facesearch.models.weights import load_weights

    return EmbeddingEngine(load_weights(spec, expect=expect), device=device, batch_size=batch_size,
                           precision=precision, runtime=runtime)
