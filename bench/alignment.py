"""Issue 38's alignment question on every dev set: which chip a face HOG misses should get.

Each dev photo is detected once per detector and its chips cached (``facesearch.eval.chips``): the
default (``auto``: a near-frontal face HOG misses is aligned from YuNet's own points) and
``yunet-cnn`` (dlib's CNN looks for its box, the default before issue 38). The shipped default model
embeds both, and any ``--weights`` embed the default detector's chips too (a fused model made with
``tools/make_fused.py --chip yunet5_150`` reads every face from YuNet's points). Scores are the
library's protocol with **every** impostor pair, so TAR@1e-3 carries no sampling noise.

    python bench/alignment.py                          # ~3 minutes on 2 busy cores, caches included
    python bench/alignment.py --weights runs/fused_y   # also a one-alignment candidate

Prints a table and writes ``bench/results/alignment.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from embed import out_path  # noqa: E402

from facesearch.eval.chips import cached_set, chip_cache_dir, model_inputs  # noqa: E402
from facesearch.eval.protocol import score_embeddings  # noqa: E402
from facesearch.models.embed import open_engine  # noqa: E402

DEV = C.REPO.parent / "shared" / "data" / "dev"
SETS = ("pins_celebs", "orl_att_faces", "lowres_umist", "extended_yale_b")
DETECTORS = ("yunet-cnn", "auto")
KEYS = ("roc_auc", "tar@far1e-3", "tar@far1e-2", "one_shot_top1")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {"benchmark": "alignment", "machine": C.machine()}
    if not DEV.is_dir():
        results["skipped"] = f"dev data not found at {DEV}"
        print(results["skipped"])
        C.write_results(args.out, results)
        return 0
    engines = {"default": open_engine(None), **{w: open_engine(w) for w in args.weights}}
    results["sets"] = {s: score_set(s, engines) for s in args.sets}
    print_table(results)
    C.write_results(args.out, results)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", action="append", default=[], help="also score these weights (default detector)")
    ap.add_argument("--sets", type=lambda v: v.split(","), default=list(SETS))
    ap.add_argument("--out", type=Path, default=None, help="result JSON, or a folder for alignment.json")
    args = ap.parse_args(argv)
    args.out = out_path(args.out, "alignment")
    return args


def score_set(name: str, engines: dict) -> dict:
    """``{"<weights> / <detector>": scores}`` for one dev set."""
    out = {}
    for det in DETECTORS:
        cached = cached_set(DEV / name, chip_cache_dir() / "dev", detector=det)
        for w, engine in engines.items():
            if w != "default" and det != "auto":
                continue
            emb = engine.embed(model_inputs(cached, engine.config.align))
            scores = score_embeddings(emb, cached["labels"], max_impostors=10**9)
            out[f"{w} / {det}"] = {k: scores[k] for k in KEYS} | {"model_id": engine.model_id}
    return out


def print_table(results: dict) -> None:
    rows = [[s, run, *(v[k] for k in KEYS)] for s, runs in results["sets"].items() for run, v in runs.items()]
    C.print_table("dev sets, every impostor pair", ["set", "weights / detector", *KEYS], rows)


if __name__ == "__main__":
    raise SystemExit(main())
