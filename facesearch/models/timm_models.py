"""facesearch's own architectures, registered with timm: ``timm.create_model("dlib_resnet29")``.

Imported by the factory only when it needs timm (any backbone it cannot build
itself, e.g. for training), never on the path that loads the shipped model:
importing timm (with torchvision) costs more start-up than torch itself
(``bench/startup.py``).
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from facesearch.models import dlib_resnet

default_cfgs = generate_default_cfgs({"dlib_resnet29.dlib_v1": dict(dlib_resnet.PRETRAINED_CFG)})


@register_model
def dlib_resnet29(pretrained: bool = False, **kwargs) -> dlib_resnet.DlibResNet29:
    """timm entrypoint; ``pretrained=True`` converts the local dlib weights (no download)."""
    # timm's own pretrained loading would look for a hub/url; ours is local and converted.
    model = build_model_with_cfg(dlib_resnet.DlibResNet29, "dlib_resnet29", pretrained=False, **kwargs)
    return dlib_resnet.load_pretrained(model) if pretrained else model
