"""Verification and one-shot identification accuracy: our default model vs dlib, same chips.

On every set in ``../shared/data/dev`` (orl_att_faces, extended_yale_b,
pins_celebs, lowres_umist) each photo is detected and aligned once (the
product's ``--detector``, default ``auto``, largest face, whole image when none
is found) and every model embeds the *same* chips:

* ``facesearch``: the shipped default weights (``facesearch.models.embed.EmbeddingEngine``):
  the fused model, ``dlib_ft`` ⊕ SFace;
* ``dlib_ft``: the fine-tuned dlib ResNet alone (the default before the fusion);
* ``sface``: OpenCV Zoo's SFace alone, on the 112 px ArcFace chip;
* ``dlib``: ``dlib.face_recognition_model_v1.compute_face_descriptor``, the peer,
  scored with its own (unnormalised) Euclidean distance, as face_recognition does;
* any extra ``--weights`` (a model with another alignment template gets chips
  cut with that template from the same detections).

Per set and model, the library's verification protocol (``facesearch.eval.protocol``): all
genuine pairs plus a seeded sample of impostor pairs, then ROC AUC, EER, balanced accuracy at
a τ cross-validated over 10 folds (chosen on 9 folds for balanced accuracy,
scored on the 10th), TAR at FAR 1e-2 and 1e-3, one-shot top-1 (the first photo
of each person, in file-name order, is the gallery; every other photo is a probe
matched to its nearest gallery face) and embedding ms/face.

    python bench/accuracy.py                  # all dev photos, ~15 minutes on 2 busy cores (dlib is slow)
    python bench/accuracy.py --quick          # 3 people x 3 photos per set, seconds
    python bench/accuracy.py --weights runs/x/best.json

Prints a table and writes ``bench/results/accuracy.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from embed import dlib_model, out_path  # noqa: E402

from facesearch.faces.detect import Face, create_detector  # noqa: E402
from facesearch.models.embed import EmbeddingEngine  # noqa: E402
from facesearch.core.errors import BadImageError  # noqa: E402
from facesearch.faces.chips import CHIP_SIZE, largest_face, make_chips  # noqa: E402
from facesearch.photos.load import load_array  # noqa: E402
from facesearch.models.weights import load_weights  # noqa: E402
from facesearch.eval.protocol import score_embeddings  # noqa: E402
from facesearch.photos.scan import IMAGE_EXTS  # noqa: E402

DEV = C.REPO.parent / "shared" / "data" / "dev"
SETS = ("orl_att_faces", "extended_yale_b", "pins_celebs", "lowres_umist")
DEFAULT_ALIGN = "dlib5_150_p25"


@dataclass
class Model:
    """A named embedder: ``embed(chips) -> (N, D)``, compared by L2 distance on its output."""

    name: str
    align: str
    embed: Callable[[list[np.ndarray]], np.ndarray]
    model_id: str


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {"benchmark": "accuracy", "machine": C.machine(), "quick": args.quick,
               "protocol": {"detector": args.detector, "max_impostors": args.max_impostors, "folds": args.folds,
                            "seed": args.seed, "people_per_set": args.people, "photos_per_person": args.per_person,
                            "tau": "cross-validated for balanced accuracy", "one_shot": "first photo per person"},
               "sets": {}}
    if not DEV.is_dir():
        results["skipped"] = f"shared face data not found at {DEV}"
        print(results["skipped"])
        C.write_results(args.out, results)
        return 0
    models = build_models(args)
    for m in models:  # warm-up: first-call setup is not per-face cost
        m.embed(make_chips(np.zeros((CHIP_SIZE, CHIP_SIZE, 3), np.uint8), [Face((0, 0, CHIP_SIZE, CHIP_SIZE), 1.0)],
                           m.align))
    results["models"] = {m.name: {"model_id": m.model_id, "align": m.align} for m in models}
    for name in args.sets:
        results["sets"][name] = bench_set(DEV / name, models, args)
        print(f"done {name} (load {C.loadavg()})", flush=True)
    print_table(results)
    C.write_results(args.out, results)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 people x 3 photos per set (seconds)")
    ap.add_argument("--people", type=int, default=None, help="people per set (default all; quick 3)")
    ap.add_argument("--per-person", type=int, default=None, help="photos per person (default all; quick 3)")
    ap.add_argument("--sets", type=lambda s: s.split(","), default=list(SETS), help="comma-separated dev sets")
    ap.add_argument("--weights", action="append", default=[], help="extra weights to compare (repeatable)")
    ap.add_argument("--no-dlib", action="store_true", help="skip dlib (it is the slow part)")
    ap.add_argument("--per-face-weights", action="store_true",
                    help="also the fused model with per-face weights by SFace's quality (QUALITY_RAMPS)")
    ap.add_argument("--detector", default="auto", help="face detector for the shared chips (default auto)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-impostors", type=int, default=50_000)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="result JSON, or a folder for accuracy.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.people, args.per_person = args.people or 3, args.per_person or 3
    args.out = out_path(args.out, "accuracy")
    return args


# --- models -------------------------------------------------------------------------------


def build_models(args) -> list[Model]:
    """Our default model, dlib (when installed) and each extra ``--weights``."""
    models = [engine_model("facesearch", None, args.batch_size), engine_model("dlib_ft", "dlib_ft", args.batch_size),
              sface_model(args.batch_size)]
    facerec = None if args.no_dlib else dlib_model()
    if facerec is not None:
        models.append(Model("dlib", DEFAULT_ALIGN, lambda chips: dlib_embed(facerec, chips), "dlib_resnet_v1.dat"))
    for w in args.weights:
        models.append(engine_model(Path(w).stem, w, args.batch_size))
    if args.per_face_weights:
        models += quality_weighted_models(args.batch_size)
    return models


# Issue 27 (dark faces): the fused model with per-face weights that move SFace's share to the base
# model as SFace's quality (the length of its raw feature) falls from ``hi`` to ``lo``; a pair's
# cosines are then weighted by the geometric mean of its two faces' weights. Measured here only:
# the product fuses with fixed weights (models.fusion.fuse, models.fused).
QUALITY_RAMPS = ((5.0, 9.0), (6.0, 10.0), (4.0, 8.0))


def quality_weighted_models(batch_size: int) -> list[Model]:
    model = load_weights(None)
    engine = EmbeddingEngine(model, device="auto", batch_size=batch_size)
    w_base, w_sface = (float(c["weight"]) for c in model.config.components)
    memo: dict = {}

    def embed(chips, lo, hi):
        if memo.get("chips") is not chips:  # the variants share one embedding of each set's chips
            memo.update(chips=chips, out=engine.embed_with_quality(chips))
        emb, q = memo["out"]
        d = emb.shape[1] // 2  # dlib_ft and SFace are both 128-d
        base, sface = emb[:, :d] / np.sqrt(w_base), emb[:, d:] / np.sqrt(w_sface)
        ws = w_sface * np.clip((np.asarray(q) - lo) / (hi - lo), 0.0, 1.0)[:, None]
        return np.concatenate([np.sqrt(1 - ws) * base, np.sqrt(ws) * sface], axis=1).astype(np.float32)

    return [Model(f"fused q{lo:g}-{hi:g}", model.config.align, lambda c, lo=lo, hi=hi: embed(c, lo, hi),
                  f"{model.model_id}+q{lo:g}-{hi:g}") for lo, hi in QUALITY_RAMPS]


def engine_model(name: str, weights: str | None, batch_size: int) -> Model:
    model = load_weights(weights)
    engine = EmbeddingEngine(model, device="auto", batch_size=batch_size)
    return Model(name, model.config.align, engine.embed, model.model_id)


def sface_model(batch_size: int) -> Model:
    import torch

    from facesearch.models.sface import chips_to_tensor, load_sface

    net = load_sface()

    @torch.inference_mode()
    def embed(chips: list[np.ndarray]) -> np.ndarray:
        out = [net(chips_to_tensor(np.stack(chips[i:i + batch_size]))).numpy() for i in range(0, len(chips), batch_size)]
        e = np.concatenate(out) if out else np.zeros((0, 128), np.float32)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    return Model("sface", "arcface_112", embed, "sface")


def dlib_embed(facerec, chips: list[np.ndarray]) -> np.ndarray:
    return np.array([np.array(d) for d in facerec.compute_face_descriptor(chips)], np.float32)


# --- one set ------------------------------------------------------------------------------


def list_set(root: Path, people: int | None, per_person: int | None) -> tuple[list[Path], np.ndarray, list[str]]:
    """Photos (sorted by person, then file name) and their identity labels."""
    dirs = sorted(d for d in root.iterdir() if d.is_dir())[:people]
    paths, labels, names = [], [], []
    for k, d in enumerate(dirs):
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTS)[:per_person]
        paths += files
        labels += [k] * len(files)
        names.append(d.name)
    return paths, np.array(labels), names


def detect_all(paths: list[Path], detector: str, aligns: set[str]) -> tuple[dict[str, list], np.ndarray, dict]:
    """Detect once per photo; chips per alignment template; ``ok`` marks readable photos."""
    det = create_detector(detector)
    chips: dict[str, list] = {a: [] for a in aligns}
    ok, fallback, as_crop, t0 = np.zeros(len(paths), bool), 0, 0, time.perf_counter()
    for n, p in enumerate(paths):
        try:
            img = load_array(p)
        except BadImageError:
            continue
        crop = largest_face(img, det, DEFAULT_ALIGN)
        # No face detected: the whole photo is the face (checked and aligned where faces.crop reads it as a
        # face crop, else cut square from the box).
        fallback += crop.face.landmarks is None or crop.face.whole_image
        as_crop += crop.face.whole_image
        for a in aligns:
            chips[a].append(crop.chip if a == DEFAULT_ALIGN else make_chips(img, [crop.face], a)[0])
        ok[n] = True
    stats = {"photos": len(paths), "unreadable": int((~ok).sum()), "no_face_whole_image": fallback,
             "read_as_crop": as_crop,
             "ms_per_photo": round(1000 * (time.perf_counter() - t0) / max(len(paths), 1), 2)}
    return chips, ok, stats


def bench_set(root: Path, models: list[Model], args) -> dict:
    paths, labels, names = list_set(root, args.people, args.per_person)
    chips, ok, stats = detect_all(paths, args.detector, {m.align for m in models})
    labels = labels[ok]
    out = {"people": len(names), **stats, "models": {}}
    for m in models:
        t0 = time.perf_counter()
        emb = m.embed(chips[m.align])
        ms = 1000 * (time.perf_counter() - t0) / max(len(labels), 1)
        out["models"][m.name] = {**score(emb, labels, args), "ms_per_face": round(ms, 2)}
    return out


# --- scoring ------------------------------------------------------------------------------


def score(emb: np.ndarray, labels: np.ndarray, args) -> dict:
    """The library's dev protocol (:func:`facesearch.eval.protocol.score_embeddings`) with this run's options."""
    return score_embeddings(emb, labels, seed=args.seed, max_impostors=args.max_impostors, folds=args.folds)


# --- report -------------------------------------------------------------------------------

COLUMNS = ["set", "model", "roc_auc", "balanced_accuracy_cv", "tar@far1e-2", "tar@far1e-3", "one_shot_top1",
           "ms_per_face", "genuine_pairs", "impostor_pairs"]


def print_table(results: dict) -> None:
    rows = []
    for set_name, res in results["sets"].items():
        for model, r in res["models"].items():
            rows.append([set_name, model] + [r.get(c) for c in COLUMNS[2:]])
    C.print_table("verification and one-shot identification on dev (same chips for every model)", COLUMNS, rows)
    for set_name, res in results["sets"].items():
        print(f"{set_name}: {res['photos']} photos of {res['people']} people, "
              f"{res['no_face_whole_image']} without a detected face (whole image used), "
              f"detect+align {res['ms_per_photo']} ms/photo")


if __name__ == "__main__":
    raise SystemExit(main())
