"""One factory for embedders: a timm trunk, a projection head, L2 normalisation.

Built like open_clip's ``TimmModel``: ``timm.create_model(name, num_classes=0)``
gives pooled features; our head maps them to ``embedding_dim`` and the output is
unit-length, so L2 distance d and cosine similarity are tied by cos = 1 - d²/2.

Our own architectures (:data:`NATIVE_TRUNKS`) are built directly, so loading the
shipped model never imports timm; every other name goes through timm, with ours
registered there too.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from facesearch.models import dlib_resnet
from facesearch.models.config import EmbedderConfig

# name -> builder taking timm's create_model keywords; each is also registered with timm.
NATIVE_TRUNKS: dict[str, Callable[..., nn.Module]] = {"dlib_resnet29": dlib_resnet.dlib_resnet29}


class Embedder(nn.Module):
    """A Siamese twin: one set of weights maps each face to a unit vector."""

    def __init__(self, config: EmbedderConfig, trunk: nn.Module):
        super().__init__()
        self.config = config
        self.trunk = trunk
        features = pooled_features(trunk)
        if config.head == "linear":
            self.head: nn.Module = nn.Linear(features, config.embedding_dim)
        elif config.head == "bn":
            # Linear + BatchNorm ("BN-neck"): centres the embeddings, so a fresh model
            # spreads faces over the sphere instead of collapsing them into one direction.
            self.head = nn.Sequential(nn.Linear(features, config.embedding_dim, bias=False),
                                      nn.BatchNorm1d(config.embedding_dim))
        elif config.head == "none":
            if features != config.embedding_dim:
                raise ValueError(f"head='none' needs embedding_dim == backbone features ({features})")
            self.head = nn.Identity()
        else:
            raise ValueError(f"unknown head {config.head!r}: use 'bn', 'linear' or 'none'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.trunk(x)).float(), dim=1)


def create_embedder(
    backbone: str = "mobilenetv3_small_100",
    embedding_dim: int = 128,
    input_size: int = 112,
    head: str = "bn",
    config: EmbedderConfig | None = None,
    **config_overrides,
) -> Embedder:
    """Build an embedder from any timm model name (randomly initialised; no downloads).

    Pass ``config`` to rebuild exactly what a weights file describes. Otherwise the
    normalisation defaults to the backbone's own (timm ``pretrained_cfg``).
    """
    if config is None:
        config = EmbedderConfig(
            backbone=backbone, embedding_dim=embedding_dim, input_size=input_size, head=head,
            **config_overrides,
        )
        trunk = _create_trunk(config.backbone)
        cfg = getattr(trunk, "pretrained_cfg", None) or {}
        if "mean" in cfg and "mean" not in config_overrides:
            config.mean, config.std = tuple(cfg["mean"]), tuple(cfg["std"])
    else:
        trunk = _create_trunk(config.backbone)
    return Embedder(config, trunk)


def pooled_features(trunk: nn.Module) -> int:
    """Width of what ``trunk(x)`` returns with num_classes=0.

    Some timm models (MobileNetV3, EfficientNetV2-S heads...) add a conv/linear
    head after pooling, so ``num_features`` is not the output width there.
    """
    return int(getattr(trunk, "head_hidden_size", None) or trunk.num_features)


def _create_trunk(name: str) -> nn.Module:
    if name in NATIVE_TRUNKS:
        return NATIVE_TRUNKS[name](pretrained=False, num_classes=0)
    import timm

    from facesearch.core.errors import FacesearchError
    from facesearch.models import timm_models  # noqa: F401  (our names, for timm's registry)

    # Only architectures registered here: "hf-hub:..." or "timm/..." would make timm fetch
    # a config (and weights) from the network.
    if ":" in name or "/" in name or not timm.is_model(name):
        raise FacesearchError(f"unknown backbone {name!r}",
                              hint="use a locally registered timm model name, e.g. mobilenetv3_small_100")
    return timm.create_model(name, pretrained=False, num_classes=0)
