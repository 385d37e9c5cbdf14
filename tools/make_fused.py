"""Write the fused model's weights JSON: the default model ⊕ SFace, weighted by ``--weight``.

The fused model has no tensors of its own (see ``facesearch.models.fused``): this
records its parts with their checksums, so loading refuses a swapped part. The
weight was chosen on dev (``bench/accuracy.py``'s fused columns); its τ policy
comes from ``tools/calibrate.py --weights fused`` afterwards.

    python tools/make_fused.py [--base default] [--weight 0.7] [--dark-below 60] [--out weights/fused.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facesearch.core.atomic import atomic_write_json  # noqa: E402
from facesearch.models.config import EmbedderConfig  # noqa: E402
from facesearch.models.fused import ARCFACE, FUSED, SFACE, fused_digest  # noqa: E402
from facesearch.models.sface import EMBEDDING_DIM, find_sface_weights  # noqa: E402
from facesearch.models.weights_meta import model_id, read_meta, resolve_weights  # noqa: E402


def fused_meta(base: str, weight: float, note: str, light: dict | None = None, chip: str | None = None) -> dict:
    """``chip``: the template the first part reads (default: the one its weights were made on)."""
    base_meta = read_meta(resolve_weights(base))
    base_cfg = EmbedderConfig.from_dict(base_meta["config"])
    sface_meta = json.loads(find_sface_weights(None)[1].read_text())
    components = [{"weights": base, "model_id": base_meta["model_id"], "sha256": base_meta["sha256"], "weight": weight},
                  {"weights": SFACE, "sha256": sface_meta["sha256"], "weight": round(1 - weight, 6),
                   "source": sface_meta.get("source"), "licence": sface_meta.get("licence")}]
    config = EmbedderConfig(backbone=FUSED, embedding_dim=base_cfg.embedding_dim + EMBEDDING_DIM,
                            input_size=base_cfg.input_size, mean=base_cfg.mean, std=base_cfg.std, head="none",
                            align=f"{chip or base_cfg.align}+{ARCFACE}", components=components, light=light or {},
                            recipe={"fusion": note, "command": " ".join(["python tools/make_fused.py", *sys.argv[1:]])})
    digest = fused_digest(components, light, config.align)
    return {"config": config.to_dict(), "sha256": digest, "model_id": model_id(config, digest)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="default", help="weights name of the first part")
    ap.add_argument("--weight", type=float, default=0.7, help="weight of the first part (SFace gets the rest)")
    ap.add_argument("--dark-below", type=float, default=60.0,
                    help="brighten chips whose mean pixel value is under this (0: never)")
    ap.add_argument("--dark-mean", type=float, default=110.0, help="... to this mean, by a gamma curve")
    ap.add_argument("--chip", default=None,
                    help="the chip the first part reads, e.g. yunet5_150 (dlib's chip from YuNet's points: no dlib "
                         "box or shape predictor); default: the template its weights were made on")
    ap.add_argument("--out", type=Path, default=REPO / "weights" / "fused.json")
    args = ap.parse_args(argv)
    note = (f"{args.weight:g}·cos({args.base}) + {1 - args.weight:g}·cos(SFace): each part's unit vector "
            f"scaled by the square root of its weight and concatenated")
    light = {"dark_below": args.dark_below, "mean": args.dark_mean} if args.dark_below > 0 else None
    if light:
        note += f"; chips with a mean pixel value under {args.dark_below:g} brightened to {args.dark_mean:g} by a gamma curve"
    if args.chip:
        note += f"; the first part reads the {args.chip} chip"
    meta = fused_meta(args.base, args.weight, note, light, args.chip)
    if args.out.exists():  # keep a previous calibration of the same parts and weights
        old = json.loads(args.out.read_text())
        if old.get("sha256") == meta["sha256"]:
            for k in ("tau", "tau_far1e3", "tau_far1e4", "tau_dedupe", "calibration", "metrics"):
                meta["config"][k] = old["config"].get(k, meta["config"][k])
    atomic_write_json(args.out, meta)
    print(f"wrote {args.out}: {meta['model_id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
