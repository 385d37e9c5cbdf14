"""A score-fused embedder: the default model and SFace side by side, one unit vector per face.

Two embedders that err differently are better together than either: on dev,
``0.7·cos(default) + 0.3·cos(SFace)`` beats both at strict FAR and in one-shot
identification (``bench/accuracy.py``). Scaling each part's unit vector by
``√w`` and concatenating them gives a unit vector whose dot products *are* that
weighted cosine, so the index, τ policy, dedupe and clustering work unchanged on
the fused vectors (L2 distance ``d² = 2 − 2·(Σ w_i cos_i)``).

Each part sees the chip it was trained on: the default model dlib's 150 px chip,
SFace the 112 px ArcFace chip from YuNet's 5 points (``facesearch.faces.chips``
cuts both; a fused model's ``align`` is ``"dlib5_150_p25+arcface_112"``). A chip whose mean
pixel value is under ``light["dark_below"]`` is brightened by a gamma curve first
(:func:`facesearch.models.preprocess.brighten_dark`): neither part was trained on near-black faces.

The weights JSON of a fused model has no tensors of its own: its ``components``
name the parts' weights files with their SHA-256, and its checksum is derived
from theirs, so swapping a part is refused like a swapped tensor file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesearch.models.config import EmbedderConfig
# The JSON's bookkeeping (parts, digest, checks) is torch-free in models.fusion, shared with the
# inference runtime; the names stay importable from here.
from facesearch.models.fusion import (  # noqa: F401  (re-exported)
    ARCFACE, FUSED, SFACE, base_and_sface, base_template, check_fused, fused_digest, part_weights)
from facesearch.models.preprocess import brighten_dark, preprocess
from facesearch.models.sface import chips_to_tensor, find_sface_weights, load_sface
from facesearch.models.weights_meta import model_id


class FusedEmbedder(nn.Module):
    """``[√w₁·f₁(x), √w₂·f₂(x)]`` with each ``f`` an L2-normalised embedder."""

    def __init__(self, config: EmbedderConfig, base: nn.Module, sface: nn.Module):
        super().__init__()
        self.config, self.base, self.sface = config, base, sface
        w = part_weights(config)
        self.register_buffer("scale", torch.tensor(w).sqrt(), persistent=False)

    def prepare(self, chips: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-face chip dicts -> the two parts' input batches (dark chips brightened first, where
        the config says so: ``light``)."""
        a = preprocess([self._lit(c[base_template(self.config)]) for c in chips], self.base.config)
        b = chips_to_tensor(np.stack([self._lit(c[ARCFACE]) for c in chips]))
        return a, b

    def _lit(self, chip: np.ndarray) -> np.ndarray:
        light = self.config.light
        return brighten_dark(np.asarray(chip), light["dark_below"], light["mean"]) if light else chip

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.forward_with_quality(a, b)[0]

    def forward_with_quality(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused unit vectors and each face's quality: the norm of SFace's raw feature.

        A margin-loss embedder (SFace) gives faces it can read well long features and dark,
        blurred or turned-away faces short ones; on dev, strangers with short features are
        named 10-30x as often (``docs/benchmarks.md``), so the τ policy refuses to name them.
        """
        fa = self.base(a).float()
        raw = self.sface(b).float()
        fb = F.normalize(raw, dim=1)
        return torch.cat([self.scale[0] * fa, self.scale[1] * fb], dim=1), raw.norm(dim=1)


def load_fused(js: Path, meta: dict, load_part) -> FusedEmbedder:
    """Build a fused model from its JSON; ``load_part(name)`` loads the base embedder."""
    config = EmbedderConfig.from_dict(meta["config"])
    base_spec, _ = base_and_sface(js, config)
    base = load_part(base_spec)
    _, sface_js = find_sface_weights(None)
    digest = check_fused(js, meta, [base.meta["sha256"], json.loads(sface_js.read_text())["sha256"]])
    model = FusedEmbedder(config, base, load_sface())
    model.meta = meta  # type: ignore[attr-defined]
    model.model_id = model_id(config, digest)  # type: ignore[attr-defined]
    return model.eval()
