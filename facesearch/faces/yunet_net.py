"""YuNet's network in PyTorch and its weights: the block-quantised ONNX's layers, loaded from
``weights/yunet.safetensors`` (+ ``yunet.json``) and dequantised as ONNX ``DequantizeLinear`` does.

Torch runs it on CUDA and exports it (``tools/export_onnx.py``); on a CPU the product runs the
export through :mod:`facesearch.faces.yunet_runtime`.

See :mod:`facesearch.faces.yunet` for the model, the file format and the detector built on it.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from torch import nn

from facesearch.core import modelfiles
from facesearch.core.errors import FacesearchError
# The network's contract and file lookup are torch-free, in yunet_runtime; importable from here too.
from facesearch.faces.yunet_runtime import (  # noqa: F401  (re-exported)
    CONVERT_HINT, DIVISOR, STRIDES, WEIGHTS_NAME, find_yunet_weights)

__all__ = ["DIVISOR", "STRIDES", "WEIGHTS_NAME", "YuNet", "dequantize_state", "find_yunet_weights", "load_yunet"]


class ConvDP(nn.Module):
    """YuNet's ``ConvDPUnit``: a 1x1 conv, then a depthwise 3x3 conv (BN folded in), then ReLU."""

    def __init__(self, cin: int, cout: int, relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, groups=cout)
        self.relu = relu

    def forward(self, x: torch.Tensor, masks: dict | None = None) -> torch.Tensor:
        x = pointwise(x, self.conv1.weight, self.conv1.bias)
        if masks:
            # Batched images of different sizes: zero what lies beyond this image's own padded
            # canvas, so the 3x3 conv sees exactly the zero padding it sees when run alone.
            x = x * masks[tuple(x.shape[-2:])]
        x = self.conv2(x)
        return F.relu(x, inplace=True) if self.relu else x


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv as one matmul over the pixels' channel vectors.

    On channels-last input this is a plain GEMM with no copies; torch's CPU conv2d takes a
    slower path for 1x1 kernels (2-3x on the stride-2 layers). The result is channels-last.
    """
    return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)


class Block(nn.Module):
    """Two ``ConvDPUnit`` in a row (YuNet's ``Conv4layerBlock``)."""

    def __init__(self, cin: int, cmid: int, cout: int):
        super().__init__()
        self.conv1 = ConvDP(cin, cmid)
        self.conv2 = ConvDP(cmid, cout)

    def forward(self, x: torch.Tensor, masks: dict | None = None) -> torch.Tensor:
        return self.conv2(self.conv1(x, masks), masks)


class Stem(nn.Module):
    """A 3x3 stride-2 conv + ReLU, then one ``ConvDPUnit`` (YuNet's ``model0``)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = ConvDP(16, 16)

    def forward(self, x: torch.Tensor, masks: dict | None = None) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x), inplace=True), masks)


class Backbone(nn.Module):
    """YuNet's depthwise-separable backbone; max pools take it from stride 2 to 32."""

    def __init__(self):
        super().__init__()
        self.model0 = Stem()
        self.model1 = Block(16, 16, 32)
        self.model2 = Block(32, 32, 64)
        self.model3 = Block(64, 64, 64)
        self.model4 = Block(64, 64, 64)
        self.model5 = Block(64, 64, 64)

    def forward(self, x: torch.Tensor, masks: dict | None = None) -> list[torch.Tensor]:
        """The stride 8, 16 and 32 feature maps."""
        x = F.max_pool2d(self.model0(x, masks), 2)
        x = F.max_pool2d(self.model2(self.model1(x, masks), masks), 2)
        p8 = self.model3(x, masks)
        p16 = self.model4(F.max_pool2d(p8, 2), masks)
        p32 = self.model5(F.max_pool2d(p16, 2), masks)
        return [p8, p16, p32]


class Neck(nn.Module):
    """Top-down FPN: nearest 2x upsampling added to the finer level, one ``ConvDPUnit`` per level."""

    def __init__(self):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvDP(64, 64) for _ in STRIDES)

    def forward(self, feats: list[torch.Tensor], masks: dict | None = None) -> list[torch.Tensor]:
        out = [self.lateral_convs[-1](feats[-1], masks)]
        for i in range(len(feats) - 2, -1, -1):
            up = F.interpolate(out[0], scale_factor=2.0, mode="nearest")  # ONNX: nearest, asymmetric, floor
            out.insert(0, self.lateral_convs[i](feats[i] + up, masks))
        return out


class Head(nn.Module):
    """Per level: class (1), box (4), objectness (1) and landmark (10) branches, no ReLU."""

    BRANCHES = (("cls", 1), ("bbox", 4), ("obj", 1), ("kps", 10))

    def __init__(self):
        super().__init__()
        for name, ch in self.BRANCHES:
            self.add_module(f"multi_level_{name}", nn.ModuleList(ConvDP(64, ch, relu=False) for _ in STRIDES))

    def forward(self, feats: list[torch.Tensor], masks: dict | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for level, (stride, f) in enumerate(zip(STRIDES, feats)):
            y = self._level(level, f, masks).permute(0, 2, 3, 1).reshape(f.shape[0], -1, 16)  # B x cells x 16
            for name, part in zip((n for n, _ in self.BRANCHES), y.split([c for _, c in self.BRANCHES], dim=2)):
                out[f"{name}_{stride}"] = torch.sigmoid(part) if name in ("cls", "obj") else part.contiguous()
        return out

    def _level(self, level: int, f: torch.Tensor, masks: dict | None) -> torch.Tensor:
        """The 4 branches of one level as one 1x1 conv (64->16) and one depthwise 3x3 conv.

        Each branch's 3x3 conv is depthwise already, so stacking them changes no arithmetic;
        it replaces 8 small convolutions by 2, which is most of the head's time on a CPU.
        """
        units = [getattr(self, f"multi_level_{name}")[level] for name, _ in self.BRANCHES]
        w1 = torch.cat([u.conv1.weight for u in units])
        b1 = torch.cat([u.conv1.bias for u in units])
        w2 = torch.cat([u.conv2.weight for u in units])
        b2 = torch.cat([u.conv2.bias for u in units])
        x = pointwise(f, w1, b1)
        if masks:
            x = x * masks[tuple(x.shape[-2:])]  # see ConvDP.forward
        return F.conv2d(x, w2, b2, padding=1, groups=w2.shape[0])


class YuNet(nn.Module):
    """The network. ``forward(x)``: x is float32 Bx3xHxW, BGR, 0..255, H and W multiples of 32.

    Returns the ONNX model's 12 outputs by name: ``cls_{s}`` and ``obj_{s}`` (after the sigmoid,
    Bx(H/s*W/s)x1), ``bbox_{s}`` (Bx..x4) and ``kps_{s}`` (Bx..x10) for s in 8, 16, 32.
    ``sizes`` (optional, one (h, w) per image, multiples of 32) marks the part of the canvas that
    is each image's own padded input; the rest is treated as outside the image (see ConvDP).
    """

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.neck = Neck()
        self.bbox_head = Head()

    def forward(self, x: torch.Tensor, sizes: list[tuple[int, int]] | None = None) -> dict[str, torch.Tensor]:
        if x.shape[-2] % DIVISOR or x.shape[-1] % DIVISOR:
            raise ValueError(f"YuNet input must be a multiple of {DIVISOR} high and wide, got {tuple(x.shape)}")
        masks = _canvas_masks(sizes, x) if sizes is not None else None
        return self.bbox_head(self.neck(self.backbone(x, masks), masks), masks)


def _canvas_masks(sizes: list[tuple[int, int]], x: torch.Tensor) -> dict | None:
    """0/1 masks per feature-map size (strides 2..32) that keep each image's own padded region."""
    H, W = x.shape[-2:]
    if all(tuple(s) == (H, W) for s in sizes):
        return None  # one common size: nothing to hide, and no extra work
    masks = {}
    for s in (2, 4, 8, 16, 32):
        m = torch.zeros(len(sizes), 1, H // s, W // s, dtype=x.dtype, device=x.device)
        for b, (h, w) in enumerate(sizes):
            m[b, :, : h // s, : w // s] = 1
        masks[(H // s, W // s)] = m
    return masks


def dequantize_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """int8 ``q`` + ``q.scale`` (+ ``q.zero_point``) -> float32 ``(q - zero_point) * scale``.

    The scale has one value per output channel (or one per tensor) and broadcasts along the first
    axis. (q - zp) is a small integer, so one float32 multiply gives ONNX DequantizeLinear's value.
    """
    out = {}
    for name, t in tensors.items():
        if name.endswith((".scale", ".zero_point")):
            continue
        if t.dtype == torch.int8:
            scale = tensors[f"{name}.scale"].to(torch.float32)
            zp = tensors.get(f"{name}.zero_point", torch.zeros_like(scale, dtype=torch.int8))
            shape = (scale.numel(),) + (1,) * (t.ndim - 1)
            t = (t.to(torch.float32) - zp.to(torch.float32).reshape(shape)) * scale.reshape(shape)
        out[name] = t.to(torch.float32)
    return out


def load_yunet(weights: str | os.PathLike | None = None) -> YuNet:
    """The YuNet network with the shipped (or given) weights, checksum-verified, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st, js = find_yunet_weights(weights)
    try:
        meta = json.loads(js.read_text())
        expected = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FacesearchError(f"unreadable YuNet weights config {js}: {e}", hint=CONVERT_HINT) from e
    actual = modelfiles.sha256_file(st)
    if actual != expected:
        raise FacesearchError(f"YuNet weights checksum mismatch: {st} has sha256 {actual[:12]}…, "
                              f"{js.name} expects {str(expected)[:12]}…", hint=CONVERT_HINT)
    model = YuNet()
    try:
        model.load_state_dict(dequantize_state(load_file(str(st))), strict=True)
    except (SafetensorError, OSError, KeyError, RuntimeError) as e:
        raise FacesearchError(f"YuNet weights in {st} do not fit the network: {e}", hint=CONVERT_HINT) from e
    return model.eval()
