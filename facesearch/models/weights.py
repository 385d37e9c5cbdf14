"""Weights on disk: ``NAME.safetensors`` (tensors only, never pickle) + ``NAME.json`` (config).

The JSON records everything needed to rebuild and feed the model (backbone,
dim, input size, normalisation, alignment), the default τ, the training recipe
and data, metrics and the facesearch version, plus the SHA-256 of the tensor
file. Loading checks both, so a mismatched or swapped file is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from facesearch.core.atomic import atomic_path, atomic_write_json
from facesearch.core.errors import FacesearchError, ModelMismatchError
from facesearch.core.modelfiles import (  # noqa: F401  (re-exported)
    DEFAULT_WEIGHTS_NAME, sha256_file, shipped_weights_dir, weights_dirs)
from facesearch.models.config import EmbedderConfig
from facesearch.models.fusion import FUSED
from facesearch.models.weights_meta import model_id, read_meta, resolve_weights  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from facesearch.models.factory import Embedder

# Torch, safetensors' torch reader and the model builders load inside the functions that build
# torch modules: the inference runtime (models.runtime) checks weights through this module
# without them.


def save_weights(model: "Embedder", path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path``.safetensors and ``path``.json atomically; return the JSON path.

    The tensors are written first and the JSON (which names their checksum) last,
    so an interrupted save never leaves a JSON pointing at half-written tensors.
    """
    from safetensors.torch import save_file

    stem = Path(path)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    st_path, js_path = Path(str(stem) + ".safetensors"), Path(str(stem) + ".json")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(st_path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    digest = sha256_file(st_path)
    meta = {"config": model.config.to_dict(), "sha256": digest, "model_id": model_id(model.config, digest)}
    meta.update(extra or {})
    atomic_write_json(js_path, meta)
    return js_path



def load_weights(spec: str | os.PathLike | None = None, expect: EmbedderConfig | None = None) -> "Embedder":
    """Load an embedder from its safetensors + JSON, checking checksum and config.

    ``expect`` (e.g. from an index manifest) must match the file's embedding
    identity, else :class:`ModelMismatchError`.
    """
    from safetensors.torch import load_file

    from facesearch.models.factory import create_embedder
    from facesearch.models.fused import load_fused

    js = resolve_weights(spec)
    meta = read_meta(js)
    config = EmbedderConfig.from_dict(meta["config"])
    check_expected(js, config, expect)
    if config.backbone == FUSED:
        return load_fused(js, meta, load_weights)
    st = js.with_suffix(".safetensors")
    if not st.is_file():
        raise FacesearchError(f"missing tensor file {st}", hint="copy the .safetensors beside its .json")
    digest = sha256_file(st)
    if meta.get("sha256") and digest != meta["sha256"]:
        raise ModelMismatchError(f"{st.name} does not match the checksum in {js.name}",
                                 hint="the two files come from different trainings; copy the matching pair")
    state = load_file(str(st))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise ModelMismatchError(f"{st.name} holds NaN or infinite values ({', '.join(bad[:3])})",
                                 hint="the training diverged or the file is damaged; use another checkpoint")
    model = create_embedder(config=config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelMismatchError(f"tensors in {st.name} do not fit {config.backbone}: {str(e).splitlines()[0]}",
                                 hint="the .json and .safetensors come from different models") from e
    model.meta = meta  # type: ignore[attr-defined]
    model.model_id = model_id(config, digest)  # type: ignore[attr-defined]  (of these very tensors)
    return model.eval()


def check_expected(js: Path, config: EmbedderConfig, expect: EmbedderConfig | None) -> None:
    """ModelMismatchError unless ``expect`` (e.g. an index's model) has the same embedding identity."""
    if expect is not None and expect.identity() != config.identity():
        raise ModelMismatchError(
            f"weights {js.name} ({config.backbone}, dim {config.embedding_dim}) do not match the expected model "
            f"({expect.backbone}, dim {expect.embedding_dim})",
            hint="use the weights the index was built with, or `facesearch rebuild --weights ...`",
        )
