"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

The network is dlib's ``anet_type`` from ``examples/dnn_face_recognition_ex.cpp``:
a 29-conv ResNet on 150x150 RGB chips whose batch-norms were frozen into
per-channel ``affine`` layers, ending in a bias-free 128-d fc layer. dlib reports
99.38% on LFW for it. The weights are converted from the ``.dat`` file in the
``face-recognition-models`` package by a pure-Python reader (no dlib needed),
once, then cached as safetensors.

dlib's defaults that matter here (``dnn/layers.h``): a conv or pooling layer with
stride 1 pads by half its size, one with stride > 1 does not pad at all. A
down-sampling block adds its conv branch to a 2x2/2 average pool of its input;
``add_prev`` adds tensors of different shapes by zero-filling the missing
channels, rows and columns (at the end), so the output has the larger shape.

:func:`dlib_resnet29` builds it without timm (the inference path never imports
timm: it costs more start-up than torch itself); ``facesearch.models.timm_models``
registers the same builder with timm, so ``timm.create_model("dlib_resnet29",
num_classes=0)`` gives the 128-d descriptor (not L2-normalised, like dlib).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesearch.core.atomic import atomic_path
from facesearch.core.errors import FacesearchError, ModelMismatchError
from facesearch.core.modelfiles import dlib_model_path
from facesearch.models.dlib_dat import DlibLayer, DlibNet, read_dlib_net
from facesearch.core.paths import cache_dir

__all__ = [
    "DLIB_MEAN",
    "DLIB_STD",
    "Affine",
    "DlibResNet29",
    "PRETRAINED_CFG",
    "add_zero_padded",
    "cache_dir",
    "convert_dlib_weights",
    "default_dat_path",
    "dlib_resnet29",
    "load_dlib_resnet29",
]

logger = logging.getLogger(__name__)

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_SIZE = 150
# dlib's input_rgb_image_sized<150> computes (pixel - avg) / 256 on 0..255 pixels, with
# these averages stored in the model file. On [0, 1] pixels that is (x - avg/255) / (256/255).
DLIB_RGB_AVG = (122.782, 117.001, 104.298)
DLIB_MEAN = tuple(a / 255.0 for a in DLIB_RGB_AVG)
DLIB_STD = (256.0 / 255.0,) * 3

# (out_channels, downsample) for each residual block, input end first: alevel4 .. alevel0.
BLOCKS = (
    [(32, False)] * 3
    + [(64, True)] + [(64, False)] * 3
    + [(128, True)] + [(128, False)] * 2
    + [(256, True)] + [(256, False)] * 2
    + [(256, True)]
)


class Affine(nn.Module):
    """dlib's ``affine`` layer: a frozen batch-norm, ``x * gamma + beta`` per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias[:, None, None], x, self.weight[:, None, None])


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum of two NCHW tensors, each zero-filled to the larger shape."""
    shape = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def grow(t: torch.Tensor) -> torch.Tensor:
        c, h, w = (s - n for s, n in zip(shape, t.shape[1:]))
        return F.pad(t, (0, w, 0, h, 0, c)) if c or h or w else t

    return grow(a) + grow(b)


class ResBlock(nn.Module):
    """``ares``/``ares_down``: relu(block(x) + shortcut(x)), block = conv-affine-relu-conv-affine."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=0 if downsample else 1)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        if self.downsample:
            return F.relu(add_zero_padded(y, F.avg_pool2d(x, 2, 2)))
        return F.relu(y + x)


class DlibResNet29(nn.Module):
    """dlib's face descriptor network; ``forward`` maps (N,3,150,150) normalised RGB to (N,128).

    Inputs are normalised with :data:`DLIB_MEAN` / :data:`DLIB_STD` on [0, 1] pixels
    (see ``pretrained_cfg``). With ``num_classes > 0`` a linear classifier is added
    on top of the descriptor (timm convention); ``num_classes=0`` returns the descriptor.
    """

    def __init__(self, num_classes: int = 0, in_chans: int = 3, **kwargs):
        super().__init__()
        kwargs.pop("global_pool", None)  # pooling is fixed: dlib averages everything
        if in_chans != 3 or kwargs:
            raise ValueError(f"dlib_resnet29 takes 3 input channels and no extra args, got {in_chans=}, {kwargs}")
        self.conv1 = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.affine1 = Affine(32)
        channels, blocks = 32, []
        for out_channels, downsample in BLOCKS:
            blocks.append(ResBlock(channels, out_channels, downsample))
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, 128, bias=False)
        self.num_features = self.head_hidden_size = 128
        self.num_classes = num_classes
        self.head = nn.Linear(128, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the first residual block, (N, 32, 35, 35) for 150x150 input."""
        return F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, (N, 256, 2, 2) for 150x150 input."""
        return self.blocks(self.forward_stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc(x.mean(dim=(2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(128, num_classes) if num_classes > 0 else nn.Identity()

    def dlib_layer_signature(self) -> list[tuple]:
        """The layer sequence dlib's ``.dat`` must contain (forward order, tag/skip markers dropped)."""
        sig: list[tuple] = [("con", 32, 7, 7, 2, 2, 0, 0), ("affine",), ("relu",), ("max_pool", 3, 3, 2, 2, 0, 0)]
        for block in self.blocks:
            c1, c2 = block.conv1, block.conv2
            sig += [("con", c1.out_channels, 3, 3, *c1.stride, *c1.padding), ("affine",), ("relu",)]
            sig += [("con", c2.out_channels, 3, 3, 1, 1, 1, 1), ("affine",)]
            sig += [("avg_pool", 2, 2, 2, 2, 0, 0)] if block.downsample else []
            sig += [("add_prev",), ("relu",)]
        return sig + [("avg_pool", 0, 0, 1, 1, 0, 0), ("fc", self.fc.in_features, self.fc.out_features, False)]


# --- builder (timm-compatible; registered with timm in facesearch.models.timm_models) ----

# timm's pretrained_cfg for the one tag, "dlib_resnet29.dlib_v1".
PRETRAINED_CFG = {
    "input_size": (3, INPUT_SIZE, INPUT_SIZE),
    "fixed_input_size": False,
    "pool_size": (2, 2),
    "crop_pct": 1.0,
    "interpolation": "bilinear",
    "mean": DLIB_MEAN,
    "std": DLIB_STD,
    "num_classes": 0,
    "first_conv": "conv1",
    "classifier": "head",
    "license": "public domain (dlib-models README)",
    "origin_url": "https://github.com/davisking/dlib-models",
}


def dlib_resnet29(pretrained: bool = False, **kwargs) -> DlibResNet29:
    """Build the network as ``timm.create_model("dlib_resnet29", ...)`` would, without timm.

    ``pretrained=True`` converts the local ``face-recognition-models`` weights
    (cached); nothing is downloaded.
    """
    model = DlibResNet29(**kwargs)
    model.pretrained_cfg = model.default_cfg = {**PRETRAINED_CFG, "architecture": "dlib_resnet29", "tag": "dlib_v1"}
    return load_pretrained(model) if pretrained else model


def load_pretrained(model: DlibResNet29) -> DlibResNet29:
    """Fill ``model`` with dlib's converted weights; only a classifier head may stay random."""
    result = model.load_state_dict(_cached_state_dict(default_dat_path()), strict=False)
    if result.unexpected_keys or any(not k.startswith("head.") for k in result.missing_keys):
        raise ModelMismatchError(f"converted dlib weights do not fit: {result}")
    return model


# --- weight conversion -----------------------------------------------------------------


def default_dat_path() -> Path:
    """The dlib model file shipped in the installed ``face-recognition-models`` package."""
    return dlib_model_path(DAT_NAME)


def _check_layers(net: DlibNet, model: DlibResNet29) -> list[DlibLayer]:
    """Match the file's layers against the architecture; return the parametrised ones."""
    found = [_signature(layer) for layer in net.layers if layer.kind != "tag_or_skip"]
    expected = model.dlib_layer_signature()
    if found != expected:
        first = next((i for i, (f, e) in enumerate(zip(found, expected)) if f != e), min(len(found), len(expected)))
        raise ModelMismatchError(
            f"the dlib file is not dlib_resnet29: layer {first} is "
            f"{found[first] if first < len(found) else None}, expected "
            f"{expected[first] if first < len(expected) else None}",
            hint=f"use {DAT_NAME} from the face-recognition-models package",
        )
    size = (net.input.attrs.get("nr"), net.input.attrs.get("nc"))
    avg = tuple(round(net.input.attrs[k], 3) for k in ("avg_red", "avg_green", "avg_blue"))
    if size != (INPUT_SIZE, INPUT_SIZE) or avg != DLIB_RGB_AVG:
        raise ModelMismatchError(f"unexpected dlib input layer {net.input.attrs}")
    return [layer for layer in net.layers if layer.params]


def _signature(layer: DlibLayer) -> tuple:
    a = layer.attrs
    if layer.kind == "con":
        return ("con", *(a[k] for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")))
    if layer.kind in ("max_pool", "avg_pool"):
        return (layer.kind, *(a[k] for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")))
    if layer.kind == "fc":
        return ("fc", a["num_inputs"], a["num_outputs"], a["has_bias"])
    return (layer.kind,)


def _target_modules(model: DlibResNet29) -> list[tuple[str, nn.Module]]:
    """Our conv/affine/fc modules in forward order, paired with their state-dict prefixes."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, Affine, nn.Linear))
            and name != "head"]


def convert_dlib_weights(dat_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Read dlib's ``.dat`` and return a :class:`DlibResNet29` state dict (no classifier head).

    ``dat_path`` defaults to the file in the installed ``face-recognition-models``.
    Raises :class:`ModelMismatchError` if the file is a different network.
    """
    net = read_dlib_net(dat_path or default_dat_path())
    model = DlibResNet29()
    layers = _check_layers(net, model)
    state: dict[str, torch.Tensor] = {}
    for layer, (name, module) in zip(layers, _target_modules(model), strict=True):
        p = {k: torch.from_numpy(v) for k, v in layer.params.items()}
        if layer.kind == "con":  # dlib filters are (num_filters, k, nr, nc), as torch's
            state[f"{name}.weight"] = p["filters"]
            state[f"{name}.bias"] = p["biases"].reshape(-1)
        elif layer.kind == "affine":
            state[f"{name}.weight"], state[f"{name}.bias"] = p["gamma"].reshape(-1), p["beta"].reshape(-1)
        else:  # fc: dlib stores an (inputs, outputs) matrix and computes x @ W
            state[f"{name}.weight"] = p["weights"].reshape(module.in_features, module.out_features).T.contiguous()
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("head.")}
    got = {k: v.shape for k, v in state.items()}
    if got != expected:
        raise ModelMismatchError(f"converted tensors do not fit dlib_resnet29: {set(got) ^ set(expected)}")
    return state


def _cached_state_dict(dat_path: Path) -> dict[str, torch.Tensor]:
    """Converted weights for ``dat_path``, parsed once and cached by the file's sha256."""
    from safetensors.torch import load_file, save_file

    digest = hashlib.sha256(Path(dat_path).read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"dlib_resnet29-{digest}.safetensors"
    if cached.is_file():
        try:
            return load_file(cached)
        except Exception as exc:  # a damaged cache is rebuilt, not fatal
            logger.warning("ignoring unreadable cache %s: %s", cached, exc)
    state = convert_dlib_weights(dat_path)
    try:
        with atomic_path(cached) as tmp:
            save_file(state, str(tmp), metadata={"source": f"{Path(dat_path).name} sha256:{digest}"})
        logger.info("converted %s to %s", dat_path, cached)
    except OSError as exc:  # read-only home etc.: still usable, just not cached
        logger.warning("could not cache converted dlib weights at %s: %s", cached, exc)
    return state


def load_dlib_resnet29(dat_path: str | os.PathLike | None = None) -> DlibResNet29:
    """dlib's face descriptor as a ready :class:`DlibResNet29` in eval mode.

    Converts ``dat_path`` (default: the installed ``face-recognition-models`` file) on
    first use and caches the result under :func:`cache_dir`.
    """
    path = Path(dat_path) if dat_path else default_dat_path()
    if not path.is_file():
        raise FacesearchError(f"dlib model file not found: {path}")
    model = dlib_resnet29(pretrained=False, num_classes=0)
    model.load_state_dict(_cached_state_dict(path))
    return model.eval()


def describe_chips(model: nn.Module, chips: np.ndarray, batch: int = 32) -> np.ndarray:
    """Raw 128-d descriptors (dlib's scale, not normalised) of (N,150,150,3) uint8 RGB chips."""
    mean, std = torch.tensor(DLIB_MEAN)[:, None, None], torch.tensor(DLIB_STD)[:, None, None]
    out = []
    with torch.inference_mode():
        for i in range(0, len(chips), batch):
            x = torch.from_numpy(chips[i:i + batch]).permute(0, 3, 1, 2).float() / 255
            out.append(model((x - mean) / std).numpy())
    return np.concatenate(out)
