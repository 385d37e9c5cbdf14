"""Typed embedder config. It travels with the weights (JSON) and with every index.

The preprocessing (input size, mean/std, how faces are cropped) is part of the
config, so training and inference can never disagree about it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from facesearch import __version__

# Fields that change what an embedding means. Two configs that differ here give
# embeddings that must never share an index.
IDENTITY_FIELDS = ("backbone", "embedding_dim", "input_size", "mean", "std", "head", "align", "components")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EmbedderConfig:
    """Everything needed to rebuild an embedder and feed it images.

    ``align`` names the face-crop convention the model was trained on (see
    ``facesearch.faces.detect``): detected faces are aligned to that template, then
    resized to ``input_size``.
    """

    backbone: str = "mobilenetv3_small_100"
    embedding_dim: int = 128
    input_size: int = 112
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    head: str = "bn"  # "bn" (linear + BatchNorm), "linear" (projection to embedding_dim) or "none"
    align: str = "dlib5_150_p25"
    # A fused model's parts (facesearch.models.fused): [{"weights", "sha256", "weight"}, ...].
    components: list[dict[str, Any]] = field(default_factory=list)
    # Exposure correction of dark chips before the network ({"dark_below", "mean"}; empty: none).
    light: dict[str, Any] = field(default_factory=dict)
    # The τ policy's numbers (facesearch.eval.tau): L2 distances between unit vectors.
    tau: float | None = None  # verification τ at the EER
    tau_far1e3: float | None = None
    tau_far1e4: float | None = None
    tau_dedupe: float | None = None  # near-duplicate threshold (dedupe's default)
    tau_people: float | None = None  # clustering faces into people (facesearch.people.persons), chosen on dev
    calibration: dict[str, Any] = field(default_factory=dict)  # FAR curve and pair counts
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EmbedderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(float(x) for x in kwargs[key])
        return cls(**kwargs)

    def identity(self) -> dict[str, Any]:
        """The fields that define the embedding space."""
        d = self.to_dict()
        # ``light`` only where set, so configs from before it existed keep their identity.
        return {k: d[k] for k in IDENTITY_FIELDS} | ({"light": d["light"]} if self.light else {})

    def identity_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
