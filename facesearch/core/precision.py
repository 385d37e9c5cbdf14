"""The arithmetic a network runs in: one rule for the embedder and the detector.

``precision`` (an argument, else ``$FACESEARCH_PRECISION``, else ``auto``):
``auto`` runs fp16 on CUDA and bf16 on a CPU with native bf16 (AVX512-BF16 or AMX, where it
is faster rather than emulated), fp32 elsewhere; ``fp32`` always runs fp32; ``bf16`` asks
for bf16 (a runtime without native bf16 falls back to fp32). What each network gains and how
far its outputs move is measured in ``docs/benchmarks.md``.

Torch-free at import: the CPU inference path (:mod:`facesearch.core.runtime`) asks
:func:`cpu_precision` without loading torch; the torch helpers (:func:`autocast_dtype`,
:func:`autocast`) import it when called, for the CUDA and training paths.
"""

from __future__ import annotations

import functools
import os
import sys

from facesearch.core.errors import FacesearchError

PRECISIONS = ("auto", "fp32", "bf16")
# The /proc/cpuinfo flags of native bf16 maths (torch checks the same two).
BF16_FLAGS = ("avx512_bf16", "amx_tile")


def requested_precision(precision: str | None = None) -> str:
    """``precision``, else ``$FACESEARCH_PRECISION``, else ``auto``; a clear error for anything else."""
    precision = precision or os.environ.get("FACESEARCH_PRECISION") or "auto"
    if precision not in PRECISIONS:
        raise FacesearchError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    return precision


@functools.cache
def cpu_has_bf16() -> bool:
    """Native bf16 matrix maths on this CPU (where bf16 is faster, not emulated)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line for line in f if line.startswith("flags")), "").split()
            return any(flag in flags for flag in BF16_FLAGS)
        except OSError:
            pass
    if "torch" not in sys.modules:
        return False  # elsewhere only torch can tell, and the CPU path must not import it to ask
    import torch

    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None) or getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def cpu_precision(precision: str | None = None) -> str:
    """``bf16`` or ``fp32``: what a network on this CPU runs in under ``precision``."""
    precision = requested_precision(precision)
    return "bf16" if precision == "bf16" or (precision == "auto" and cpu_has_bf16()) else "fp32"


# What runtimes print for the precision they compiled in, by our name: OpenVINO's Type prints as
# ``<Type: 'bfloat16'>`` and names itself ``bf16``; ONNX Runtime's input types read ``tensor(float)``.
READ_BACK = {"bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
             "f32": "fp32", "fp32": "fp32", "float32": "fp32", "float": "fp32"}


def read_back_precision(value) -> str:
    """``bf16``, ``fp16`` or ``fp32`` for the precision a runtime reports it compiled a network in
    (an OpenVINO ``Type`` or any of its spellings, an ONNX Runtime type string). The one parser of
    those spellings: a substring test once reported every bf16 run as fp32 (issue 39)."""
    text = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    name = text.strip().lower()
    for prefix, suffix in (("<type:", ">"), ("tensor(", ")")):
        if name.startswith(prefix) and name.endswith(suffix):
            name = name[len(prefix):-len(suffix)]
    name = name.strip(" '\"")
    if name not in READ_BACK:
        raise FacesearchError(f"unknown precision {text!r} read back from a runtime",
                              hint="report it: facesearch.core.precision.READ_BACK lacks this spelling")
    return READ_BACK[name]


def autocast_dtype(device, precision: str | None = None):
    """The torch autocast dtype for ``precision`` on ``device`` (None: no autocast)."""
    import torch

    precision = requested_precision(precision)
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        return torch.float16 if precision == "auto" else torch.bfloat16
    return torch.bfloat16 if cpu_precision(precision) == "bf16" else None


def autocast(device, dtype):
    """A context that autocasts to ``dtype`` on ``device`` (does nothing for None)."""
    import torch

    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
