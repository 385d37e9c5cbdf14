"""The fused model's bookkeeping and its fusion in numpy, without torch.

What a fused weights JSON means (see :mod:`facesearch.models.fused` for the model): its parts,
their checksums and weights, the digest derived from them, and how two parts' outputs become
one unit vector per face. The torch module (``fused.FusedEmbedder``) and the inference runtime
(:mod:`facesearch.models.runtime`) both check a fused JSON here, so an index's ``model_id``
names the same model whichever of them embeds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from facesearch.core.errors import FacesearchError, ModelMismatchError
from facesearch.models.config import EmbedderConfig

FUSED = "fused"
SFACE = "sface"
ARCFACE = "arcface_112"
# The fused models' alignment before issue 38: dlib's chip from dlib's landmarks for the first part.
# A fused model aligned otherwise names its alignment in its digest (a new model id, even with the
# same parts: its vectors differ); those aligned so keep the digest they always had.
DLIB_ALIGNED = "dlib5_150_p25+arcface_112"


def fused_digest(components: list[dict], light: dict | None = None, align: str | None = None) -> str:
    """The fused model's checksum: its parts' checksums and weights, in order, its exposure
    correction where it has one, and its alignment where it is not :data:`DLIB_ALIGNED` (a model
    without either keeps the checksum it always had)."""
    parts: list = [[c["weights"], c["sha256"], c["weight"]] for c in components]
    extra = ([light] if light else []) + ([{"align": align}] if align not in (None, DLIB_ALIGNED) else [])
    blob = json.dumps(parts + extra, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def base_template(config: EmbedderConfig) -> str:
    """The chip a fused model's first part reads: the first template of the fused ``align`` (the part
    may run on another chip than its own weights were made on: issue 38's one alignment)."""
    return config.align.split("+")[0]


def part_weights(config: EmbedderConfig) -> list[float]:
    """The two parts' weights, checked: two positive numbers summing to 1."""
    w = [float(c["weight"]) for c in config.components]
    if len(w) != 2 or min(w) <= 0 or abs(sum(w) - 1) > 1e-6:
        raise FacesearchError(f"fused weights {w} must be two positive numbers summing to 1")
    return w


def base_and_sface(js: Path, config: EmbedderConfig) -> tuple[str, str]:
    """The weights names of the two parts; the second must be SFace."""
    base_spec, sface_spec = (c["weights"] for c in config.components)
    if sface_spec != SFACE:
        raise FacesearchError(f"{js.name}: the second fused part must be {SFACE!r}, not {sface_spec!r}")
    return base_spec, sface_spec


def check_fused(js: Path, meta: dict, actual: list[str]) -> str:
    """The fused digest, after checking the installed parts' checksums ``actual`` (base, SFace)
    against those the JSON was made with, and the JSON's own checksum against its components."""
    config = EmbedderConfig.from_dict(meta["config"])
    for part, sha in zip(config.components, actual):
        if part["sha256"] != sha:
            raise ModelMismatchError(f"{js.name} was made with {part['weights']} {part['sha256'][:12]}…, "
                                     f"but the installed one is {sha[:12]}…",
                                     hint="re-run `python tools/make_fused.py` after changing a part")
    digest = fused_digest(config.components, config.light, config.align)
    if meta.get("sha256") != digest:
        raise ModelMismatchError(f"{js.name}: its checksum does not match its components",
                                 hint="the .json was edited; re-run `python tools/make_fused.py`")
    return digest


def fuse(base_unit: np.ndarray, sface_raw: np.ndarray, weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """``[√w₁·base, √w₂·sface/‖sface‖]`` and each face's quality ``‖sface‖`` (float32), as
    ``FusedEmbedder.forward_with_quality`` computes them in torch."""
    raw = np.asarray(sface_raw, np.float32)
    norm = np.linalg.norm(raw, axis=1)
    unit = raw / np.maximum(norm, 1e-12)[:, None]  # F.normalize's floor
    scale = np.sqrt(np.asarray(weights, np.float32))
    out = np.concatenate([scale[0] * np.asarray(base_unit, np.float32), scale[1] * unit], axis=1)
    return out.astype(np.float32, copy=False), norm.astype(np.float32)
