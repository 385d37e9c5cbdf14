"""Export the shipped networks to ONNX for the inference runtime (``facesearch.models.runtime``).

    python tools/export_onnx.py                    # dlib_ft, sface and yunet -> weights/onnx/
    python tools/export_onnx.py --only dlib_ft --out DIR

Each network is rebuilt by torch from its shipped safetensors (the very loader the product
used to run), exported once (opset 17, dynamic batch; YuNet also dynamic height and width)
and written as ``NAME.onnx`` beside ``NAME.json``, which records the ONNX file's SHA-256 and
the SHA-256 of the safetensors it was made from. The runtime refuses an ONNX whose recorded
source is not the installed safetensors, so retraining a part without re-exporting is an
error, never a silent drift. ``model_id`` and the fused digest name the safetensors, not the
export, so indexes built before the runtime keep working.

Torch is needed here (the export source), never at inference on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facesearch.core.atomic import atomic_path, atomic_write_json  # noqa: E402
from facesearch.core.modelfiles import sha256_file  # noqa: E402
from facesearch.core.runtime import ONNX_DIR, OPSET  # noqa: E402

NETWORKS = ("dlib_ft", "sface", "yunet")
YUNET_OUTPUTS = tuple(f"{k}_{s}" for s in (8, 16, 32) for k in ("cls", "obj", "bbox", "kps"))


def export_spec(name: str) -> dict:
    """What the ONNX of ``name`` takes and gives: names, example shape, dynamic axes, layout."""
    if name == "yunet":
        return {"input": "image", "example": (1, 3, 640, 640), "dynamic": {0: "batch", 2: "height", 3: "width"},
                "outputs": YUNET_OUTPUTS, "layout": "N x 3 x H x W, BGR, float 0..255, H and W multiples of 32"}
    if name == "sface":
        return {"input": "chip", "example": (1, 3, 112, 112), "dynamic": {0: "batch"}, "outputs": ("feature",),
                "layout": "N x 3 x 112 x 112, RGB, float 0..255 (the graph normalises); raw 128-d feature"}
    size = 150 if name.startswith("dlib") else 112
    return {"input": "chip", "example": (1, 3, size, size), "dynamic": {0: "batch"}, "outputs": ("embedding",),
            "layout": "N x 3 x S x S, RGB, normalised by the weights config's mean/std; unit vectors"}


def build(name: str) -> tuple[torch.nn.Module, Path]:
    """The torch module of ``name`` and the safetensors it was loaded from."""
    if name == "sface":
        from facesearch.models.sface import find_sface_weights, load_sface

        return load_sface(), find_sface_weights(None)[0]
    if name == "yunet":
        from facesearch.faces.yunet_net import find_yunet_weights, load_yunet

        return load_yunet(), find_yunet_weights(None)[0]
    from facesearch.models.weights import load_weights, resolve_weights

    return load_weights(name), resolve_weights(name).with_suffix(".safetensors")


def export(name: str, out: Path) -> Path:
    """Write ``out/NAME.onnx`` + ``out/NAME.json``; returns the JSON path."""
    model, source = build(name)
    spec = export_spec(name)
    example = torch.zeros(spec["example"], dtype=torch.float32)
    if name == "yunet":
        model = _YuNetOutputs(model, spec["outputs"])
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{name}.onnx"
    with atomic_path(onnx_path) as tmp, torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(model.eval().float(), (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[spec["input"]], output_names=list(spec["outputs"]),
                          dynamic_axes={spec["input"]: spec["dynamic"], **{o: {0: "batch"} for o in spec["outputs"]}},
                          do_constant_folding=True)
    meta = {"network": name, "format": "onnx", "opset": OPSET, "sha256": sha256_file(onnx_path),
            "source": {"file": source.name, "sha256": sha256_file(source)},
            "input": {"name": spec["input"], "layout": spec["layout"]}, "outputs": list(spec["outputs"]),
            "made_by": "python tools/export_onnx.py", "torch": torch.__version__}
    js = out / f"{name}.json"
    atomic_write_json(js, meta)
    return js


class _YuNetOutputs(torch.nn.Module):
    """YuNet's dict of outputs as a tuple in a fixed order (ONNX outputs are positional)."""

    def __init__(self, net: torch.nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.net, self.names = net, names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(x)
        return tuple(out[n] for n in self.names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=NETWORKS, action="append", help="export only these (repeatable)")
    p.add_argument("--out", type=Path, default=ROOT / "weights" / ONNX_DIR)
    args = p.parse_args(argv)
    for name in args.only or NETWORKS:
        js = export(name, args.out)
        meta = json.loads(js.read_text())
        print(f"{name}: {js.with_suffix('.onnx')} sha256 {meta['sha256'][:12]} from {meta['source']['file']} "
              f"{meta['source']['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
