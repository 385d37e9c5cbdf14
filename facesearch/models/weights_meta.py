"""Weights metadata without torch: find a weights JSON, read and check it, name the model.

Kept free of torch so that commands with nothing to embed (an unchanged
re-index, dedupe, info) start in well under a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from facesearch.core.errors import FacesearchError, ModelMismatchError
# Where weights files are and their checksum live in core.modelfiles (shared with detection and
# doctor); the names stay importable from here for the callers that always found them here.
from facesearch.core.modelfiles import (  # noqa: F401  (re-exported)
    DEFAULT_WEIGHTS_NAME, find_pair, sha256_file, shipped_weights_dir, weights_dirs)
from facesearch.models.config import EmbedderConfig


def resolve_weights(spec: str | os.PathLike | None = None, model: str | None = None) -> Path:
    """Map a name, a stem, or a .json/.safetensors path to the JSON config path.

    ``None`` means: the weights whose id is ``model`` (an index's model, so an index built
    with an earlier default keeps working after the default changes), else
    ``$FACESEARCH_WEIGHTS`` or the shipped default.
    """
    if spec is None and model is not None:
        found = _find_model(model)
        if found is not None:
            return found
    spec = spec or os.environ.get("FACESEARCH_WEIGHTS") or DEFAULT_WEIGHTS_NAME
    p = Path(spec)
    candidates = [p.with_suffix(".json")] if p.suffix in (".json", ".safetensors") else [
        Path(str(p) + ".json"), *(d / f"{spec}.json" for d in weights_dirs()), p / f"{DEFAULT_WEIGHTS_NAME}.json"
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise FacesearchError(
        f"weights not found: {spec}",
        hint="pass --weights NAME|PATH (a .json beside its .safetensors), or train with `facesearch train`",
    )


def _find_model(model: str) -> Path | None:
    """The weights JSON in :func:`weights_dirs` whose derived id is ``model``."""
    for d in weights_dirs():
        for js in sorted(d.glob("*.json")):
            try:
                if read_meta(js)["model_id"] == model:
                    return js
            except FacesearchError:
                continue  # not a weights file (or a damaged one): not the model asked for
    return None


def model_id(config: EmbedderConfig, tensor_sha256: str) -> str:
    """A short id naming both the architecture and the exact tensors."""
    return f"{config.backbone}-{config.embedding_dim}-{tensor_sha256[:12]}"


def read_meta(json_path: Path) -> dict[str, Any]:
    """The weights JSON, with its config validated (``model_id`` filled in if absent)."""
    try:
        meta = json.loads(Path(json_path).read_text())
        config = EmbedderConfig.from_dict(meta["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FacesearchError(f"unreadable weights config {json_path}: {e}",
                              hint="the .json beside the .safetensors is damaged; re-train or re-copy it") from e
    # The id is derived, never trusted as written: it names the config and the tensors' checksum
    # (load_weights checks that checksum against the tensors themselves).
    derived = model_id(config, meta.get("sha256") or sha256_file(Path(json_path).with_suffix(".safetensors")))
    if meta.get("model_id") not in (None, derived):
        raise ModelMismatchError(f"{json_path} names model {meta['model_id']} but its config and checksum make {derived}",
                                 hint="the .json was edited or mixed up; re-export the weights")
    meta["model_id"] = derived
    return meta
