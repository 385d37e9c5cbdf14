"""The arithmetic a network runs in: one rule for the embedder and the detector.

``precision`` (an argument, else ``$FACESEARCH_PRECISION``, else ``auto``):
``auto`` autocasts to fp16 on CUDA and to bf16 on a CPU with native bf16
(AVX512-BF16 or AMX, where it is faster rather than emulated); ``fp32`` never
autocasts; ``bf16`` always does. What each network gains and how far its outputs
move is measured in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os

import torch

from facesearch.core.errors import FacesearchError

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """Native bf16 matrix maths on this CPU (where bf16 autocast is faster, not emulated)."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None) or getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def autocast_dtype(device: torch.device, precision: str | None = None) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (default ``$FACESEARCH_PRECISION``, else auto) on ``device``."""
    precision = precision or os.environ.get("FACESEARCH_PRECISION") or "auto"
    if precision not in PRECISIONS:
        raise FacesearchError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        return torch.float16 if precision == "auto" else torch.bfloat16
    return torch.bfloat16 if precision == "bf16" or cpu_has_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32`` for an autocast dtype (None: no autocast)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context that autocasts to ``dtype`` on ``device`` (does nothing for None)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
