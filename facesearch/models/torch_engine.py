"""The torch path of :class:`facesearch.models.embed.EmbeddingEngine`: CUDA, MPS, and CPU models
that have no exported network (a user's own training) or where ``runtime="torch"`` is asked.

Precision (:mod:`facesearch.core.precision`): ``auto`` runs the model under fp16 autocast on CUDA
(in ``channels_last``) and under bf16 autocast on a CPU with native bf16. Inference runs under
``torch.inference_mode``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from facesearch.core.errors import FacesearchError
from facesearch.core.precision import autocast, autocast_dtype
from facesearch.models.preprocess import ImageLike, preprocess


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


class TorchRunner:
    """A torch model on a device: ``inputs(images)`` and ``forward(inputs)`` as the runtime's."""

    def __init__(self, model, device: torch.device, precision: str | None):
        self.device = device
        self.autocast = autocast_dtype(device, precision)
        self.model = model.eval().to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.rates_quality = hasattr(self.model, "forward_with_quality")

    def inputs(self, images: Sequence[ImageLike]) -> list[torch.Tensor]:
        # A fused model takes one chip dict per face and prepares its parts' inputs itself.
        prepare = getattr(self.model, "prepare", None)
        xs = prepare(images) if prepare else (preprocess(images, self.model.config),)
        xs = [x.to(self.device, non_blocking=True) for x in xs]
        if self.device.type == "cuda":
            xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
        return xs

    @torch.inference_mode()
    def forward(self, xs: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
        """One forward pass under this runner's autocast: ``(embeddings, quality or None)``."""
        forward = getattr(self.model, "forward_with_quality", self.model)
        with autocast(self.device, self.autocast):
            out = forward(*xs)
        emb, q = out if isinstance(out, tuple) else (out, None)
        return _numpy(emb), (None if q is None else _numpy(q))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy().astype(np.float32, copy=False)
