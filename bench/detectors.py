"""Benchmark the face detectors: group photos, no-face rates on every dev set, speed, alignment.

For each detector variant:

* ``composite``: labelled group photos composed from dev faces pasted at known
  boxes into real face-free photos (``bench/groups.py`` says how and what it
  lacks), 1024x768 and 4000x3000: face recall by face width (16-20, 20-40,
  40-80, >= 80 px), false positives (detections matching no face) and ms/photo;
* ``no_face``: share of photos where no face is found, on every dev set (one
  visible face per photo; seeded samples unless ``--full``);
* ``yale``: train/yalefaces, 164 uncropped 320x243 greyscale photos.

It also measures how closely ``facesearch.faces.align.align_face`` reproduces
``dlib.get_face_chip`` on the yalefaces faces (1x and 4x: the pyramid path).

    python bench/detectors.py            # a few minutes on 2 cores
    python bench/detectors.py --quick    # CI-sized
    python bench/detectors.py --scales   # faces at every scale, before/after the scale plan

``--scales`` (issue 27, ``bench/_scales.py``) scores YuNet's plan of passes against the plan it
replaced, in one run: recall by face width (16-24, 24-32, 32-64, 64-256, 256 px to the frame) on
close-ups at long sides 400-3000 px, crowds of 16-40 px faces and 16-200 px groups, the no-face
rate per close-up size, false positives, and face-free photos; it writes
``bench/results/detectors_scales.json``. Detection only: dlib's landmarks are skipped (their cost
is in ``bench/stages.py``), except where the crop fallback needs them to decide.

``--passes`` (issue 38, ``bench/_passes.py``) weighs each pass of the plan on web-sized photos,
crowds, groups and close-ups, issue 27's detector against today's on the same photos: YuNet calls,
megapixels and ms per photo and per pass, faces found per pass and only there; it writes
``bench/results/detectors_passes.json``.

Prints a table and writes ``bench/results/detectors.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facesearch.faces.align import align_face  # noqa: E402
from facesearch.core.atomic import atomic_write_json  # noqa: E402
from facesearch.faces.detect import create_detector  # noqa: E402
from facesearch.core.errors import FacesearchError  # noqa: E402
from facesearch.photos.load import load_array  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _passes as P  # noqa: E402
import _scales as S  # noqa: E402
import groups  # noqa: E402

DATA = REPO.parent / "shared" / "data"
YALE = DATA / "train" / "yalefaces"
DEV = DATA / "dev"
DEV_SETS = ("pins_celebs", "orl_att_faces", "extended_yale_b", "lowres_umist")
SIZE_BINS = ((16, 20), (20, 40), (40, 80), (80, 10_000))


def variants() -> dict[str, tuple[dict, float]]:
    """Detector settings to compare: name -> (create_detector kwargs, share of each set to run).

    dlib's CNN takes seconds per large photo on a CPU, so the dlib variants run on a
    sample of each set; YuNet's score sweep is how its threshold was chosen. YuNet runs at the
    product's precision (bf16 where the CPU has it) unless a variant names one.
    """
    return {
        "auto (yunet 0.7)": ({"name": "auto"}, 1.0),
        "auto, fp32 network": ({"name": "auto", "precision": "fp32"}, 1.0),  # what bf16 buys, same run
        "yunet 0.5": ({"name": "yunet", "score_threshold": 0.5}, 1.0),
        "yunet 0.6": ({"name": "yunet", "score_threshold": 0.6}, 1.0),
        "yunet 0.8": ({"name": "yunet", "score_threshold": 0.8}, 1.0),
        "yunet no tiles": ({"name": "yunet", "tiles": False}, 1.0),
        "dlib-auto": ({"name": "dlib-auto", "min_face": 20}, 0.25),
        "dlib-hog": ({"name": "dlib-hog", "min_face": 20}, 0.25),
        "opencv-haar": ({"name": "opencv-haar", "min_face": 20}, 0.25),
    }


# The scale plan (issue 27) against the plan it replaced; the crowd settings tried for 20-30 px faces.
BEFORE = {"view_side": 1536, "pass_ratio": 1e9, "crop_fallback": False, "min_face_slack": 1.0, "skip_found": False,
          "cascade": False}
SCALE_VARIANTS = {
    "before (1536 view + tiles)": (BEFORE, True),
    "issue 27 plan": ({}, True),  # bench/_passes.Issue27Detector
    "after (scale plan), whole min-face pass": ({"cascade": False}, True),
    "after (scale plan), min-face pass as a cascade (issue 38)": ({}, True),
    "after, min_visible 36": ({"min_visible": 36}, False),
    "after, min_visible 40": ({"min_visible": 40}, False),
    "after, score 0.6": ({"score_threshold": 0.6}, False),
    "after, min_visible 36, score 0.6": ({"min_visible": 36, "score_threshold": 0.6}, False),
}


def make_detector(kw: dict):
    kw = dict(kw)
    kw.pop("precision", None)  # see _common.network_precision
    score, tiles = kw.pop("score_threshold", None), kw.pop("tiles", True)
    det = create_detector(**kw)
    if score is not None:
        det.score_threshold = score
    if not tiles:
        det.max_side = 10**6  # the whole photo at full size in one pass: what tiling replaces
    return det


def list_images(folder: Path, n: int | None, seed: int = 0) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".pgm"})
    if n is not None and n < len(files):
        files = random.Random(seed).sample(files, n)
    return files


def load(path: Path) -> np.ndarray:
    # The product's loader: EXIF rotation and the same RGB conversion the detectors get in use.
    return load_array(path)


def head(items: list, share: float) -> list:
    return items[: max(1, round(len(items) * share))]


def bench_composite(det, photos: list, share: float) -> dict:
    """Recall by face width, false positives and ms/photo on composed group photos."""
    photos = head(photos, share)
    found, widths, fps, _, _, elapsed = S.detect_and_match(det, photos)
    recall = {f"{lo}-{hi if hi < 10_000 else 'up'}": _share(found[(widths >= lo) & (widths < hi)])
              for lo, hi in SIZE_BINS}
    detections = int(found.sum()) + fps
    return {"photos": len(photos), "faces": int(len(found)), "recall": recall,
            "recall_ge20": _share(found[widths >= 20]), "recall_ge40": _share(found[widths >= 40]),
            "false_positives": fps, "fp_share": round(fps / max(detections, 1), 4),
            "ms_per_photo": round(1000 * elapsed / len(photos), 1)}


def _share(x: np.ndarray) -> float | None:
    return round(float(x.mean()), 4) if len(x) else None


def bench_no_face(det, images: list[np.ndarray]) -> dict:
    counts, elapsed = [], 0.0
    for img in images:
        t0 = time.perf_counter()
        counts.append(len(det.detect(img)))
        elapsed += time.perf_counter() - t0
    counts = np.array(counts)
    return {"images": len(images), "no_face": round(float((counts == 0).mean()), 4),
            "several": int((counts > 1).sum()), "ms_per_image": round(1000 * elapsed / len(images), 1)}


def bench_alignment(images: list[np.ndarray]) -> dict:
    """align_face vs dlib.get_face_chip on HOG faces, at 1x and 4x (pyramid path)."""
    import dlib

    from facesearch.faces.backends import hog_model, shape_predictor

    diffs, maxdiff, ours_ms, dlib_ms = [], 0, 0.0, 0.0
    for img in images:
        for scale in (1, 4):
            im = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else img
            rects = hog_model()(im, 0)
            if not rects:
                continue
            shape = shape_predictor()(im, rects[0])
            lm = np.array([(p.x, p.y) for p in shape.parts()], float)
            t0 = time.perf_counter()
            ref = dlib.get_face_chip(im, shape, 150, 0.25)
            t1 = time.perf_counter()
            ours = align_face(im, lm)
            t2 = time.perf_counter()
            d = np.abs(ref.astype(int) - ours.astype(int))
            diffs.append(float(d.mean()))
            maxdiff = max(maxdiff, int(d.max()))
            dlib_ms, ours_ms = dlib_ms + (t1 - t0), ours_ms + (t2 - t1)
    n = max(len(diffs), 1)
    return {
        "chips": len(diffs),
        "mean_abs_diff": round(float(np.mean(diffs)) if diffs else float("nan"), 6),
        "worst_chip_mean_abs_diff": round(max(diffs, default=float("nan")), 6),
        "max_pixel_diff": maxdiff,
        "bit_identical_chips": sum(d == 0 for d in diffs),
        "ms_ours": round(1000 * ours_ms / n, 2),
        "ms_dlib": round(1000 * dlib_ms / n, 2),
    }


def environment() -> dict:
    import dlib

    return {
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "dlib": dlib.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def print_table(results: dict) -> None:
    print(f"{'detector':18s} {'set':10s} {'faces':>5s} {'16-20':>6s} {'20-40':>6s} {'40-80':>6s} {'80+':>6s} "
          f"{'>=20':>6s} {'FP%':>5s} {'ms':>8s}")
    for name, res in results["detectors"].items():
        if "error" in res:
            print(f"{name:18s} unavailable: {res['error']}")
            continue
        for set_name in ("composite_1024", "composite_4000"):
            r = res[set_name]
            rec = [r["recall"][k] for k in ("16-20", "20-40", "40-80", "80-up")]
            print(f"{name:18s} {set_name[10:]:10s} {r['faces']:5d} " + " ".join(f"{_pct(v):>6s}" for v in rec)
                  + f" {_pct(r['recall_ge20']):>6s} {100 * r['fp_share']:5.1f} {r['ms_per_photo']:8.1f}")
    print(f"\n{'detector':18s} " + " ".join(f"{s[:12]:>14s}" for s in ("yale", *DEV_SETS)) + "   (no-face %, ms/photo)")
    for name, res in results["detectors"].items():
        if "error" not in res:
            cells = [res["no_face"][s] for s in ("yale", *DEV_SETS)]
            print(f"{name:18s} " + " ".join(f"{100 * c['no_face']:6.2f} {c['ms_per_image']:7.1f}" for c in cells))
    print("\nalignment vs dlib.get_face_chip:", results["alignment"])


def run_variant(kw: dict, share: float, composite: dict, singles: dict) -> dict:
    from facesearch.faces.detect import network_precision

    try:
        det = make_detector(kw)
    except FacesearchError as exc:
        return {"error": f"{exc} ({exc.hint})"}
    det.warmup()  # model loading is not per-image cost
    res = {"network_precision": network_precision(kw["name"])}
    res |= {k: bench_composite(det, v, share) for k, v in composite.items()}
    res["no_face"] = {k: bench_no_face(det, head(v, share)) for k, v in singles.items()}
    return res


def run_scales(args) -> int:
    """The ``--scales`` benchmark: every SCALE_VARIANT on crowds and face-free photos, the ones
    marked so on close-ups and groups too (large photos are slow on a shared CPU)."""
    from facesearch.faces import tiling

    # Detection only: the per-face dlib landmark step is the same for every plan.
    tiling.hog_box = lambda rgb, box, cnn=True: None
    tiling.landmarks = lambda rgb, box: np.zeros((5, 2))
    n = 8 if args.quick else args.closeups
    paths = list_images(DEV / "pins_celebs", None) + list_images(DEV / "orl_att_faces", None)
    sources = groups.source_faces(paths, limit=max(n, 60), seed=7)
    bgs = groups.backgrounds()
    sets = {f"closeup_{side}": S.closeups(sources[:n], side, seed=side) for side in S.CLOSEUP_SIDES}
    sets["crowd_1024"] = S.crowds(sources, bgs, 4 if args.quick else args.photos // 2, (1024, 768), (16, 40),
                                  (12, 30), seed=11)
    sets["group_1600"] = S.crowds(sources, bgs, 2 if args.quick else args.photos // 6, (1600, 1200), (16, 200),
                                  (6, 20), seed=12)
    free = S.face_free(bgs, seed=13)
    results = {"environment": environment(), "quick": args.quick, "source_faces": len(sources), "variants": {}}
    for name, (kw, everywhere) in SCALE_VARIANTS.items():
        if args.only and name not in args.only:
            continue
        det = P.Issue27Detector() if name == "issue 27 plan" else create_detector("auto")
        for k, v in kw.items():
            setattr(det, k, v)
        det.warmup()
        chosen = sets if everywhere else {k: v for k, v in sets.items() if k.startswith("crowd")}
        res = {k: S.score_photos(det, v) for k, v in chosen.items()}
        res["face_free"] = S.score_face_free(det, free)
        res["settings"] = kw
        results["variants"][name] = res
        print(f"done {name}", flush=True)
    print_scales(results)
    atomic_write_json(args.out.with_name("detectors_scales.json"), results)
    return 0


def run_cost(args) -> int:
    """ms per photo of the plan before and after issue 27, taking turns per photo. Finding faces only:
    dlib's landmark step costs the same per face in both, and a plan that finds a face the other
    misses would pay it alone (``bench/stages.py`` times it)."""
    from facesearch.faces import tiling

    tiling.hog_box = lambda rgb, box, cnn=True: None
    tiling.landmarks = lambda rgb, box: np.zeros((5, 2))
    paths = list_images(DEV / "pins_celebs", None)
    sources = groups.source_faces(paths, limit=40, seed=7)
    photos = S.cost_photos(sources, groups.backgrounds())
    dets = {}
    after = "after (scale plan), min-face pass as a cascade (issue 38)"
    for name in ("before (1536 view + tiles)", after):
        dets[name] = create_detector("auto")
        for k, v in SCALE_VARIANTS[name][0].items():
            setattr(dets[name], k, v)
        dets[name].warmup()
    ms = S.interleaved_ms(dets, photos, reps=2 if args.quick else 3)
    passes = {label: [(round(max(img.shape[:2]) * p.scale), p.tiled) for p in dets[after].plan(img.shape[:2])]
              for label, img in photos.items()}
    mp = {n: {label: S.plan_megapixels(d, img.shape[:2]) for label, img in photos.items()} for n, d in dets.items()}
    results = {"environment": environment(), "ms_per_photo": ms, "network_megapixels": mp, "after_passes": passes}
    names = list(dets)
    print(f"{'photo':24s} " + " ".join(f"{n[:26]:>26s}" for n in names) + "   ratio  passes after (long side, tiled)")
    for label in photos:
        a, b = (ms[n][label] for n in names)
        print(f"{label:24s} {a:26.1f} {b:26.1f} {b / a:7.2f}  {passes[label]}")
    atomic_write_json(args.out.with_name("detectors_cost.json"), results)
    return 0


def run_passes(args) -> int:
    """The ``--passes`` report: both plans on the same photos, taking turns (``bench/_passes.py``)."""
    from facesearch.faces import tiling

    tiling.hog_box = lambda rgb, box, cnn=True: None
    tiling.landmarks = lambda rgb, box: np.zeros((5, 2))
    paths = list_images(DEV / "pins_celebs", None) + list_images(DEV / "orl_att_faces", None)
    sources = groups.source_faces(paths, limit=60, seed=7)
    sets = P.photo_sets(sources, groups.backgrounds(), args.quick)
    dets = P.detectors()
    for det in dets.values():
        det.warmup()
    results = {"environment": environment(), "quick": args.quick, "sets": {}}
    for name, photos in sets.items():
        results["sets"][name] = P.compare(dets, photos, reps=1 if args.quick else 2)
        print(f"done {name}", flush=True)
    results["cost_curve"] = P.cost_curve()
    P.print_report(results)
    atomic_write_json(args.out.with_name("detectors_passes.json"), results)
    return 0


def print_scales(results: dict) -> None:
    bins = [S.bin_name(lo, hi) for lo, hi in S.WIDTH_BINS]
    print(f"{'variant':34s} {'set':12s} {'faces':>5s} " + " ".join(f"{b:>8s}" for b in bins)
          + f" {'noface':>6s} {'FP%':>5s} {'ms':>7s}")
    for name, res in results["variants"].items():
        for set_name, r in res.items():
            if set_name in ("face_free", "settings"):
                continue
            print(f"{name:34s} {set_name:12s} {r['faces']:5d} " + " ".join(f"{_pct(r['recall'][b]):>8s}" for b in bins)
                  + f" {100 * r['no_face']:6.1f} {100 * r['fp_share']:5.1f} {r['ms_per_photo']:7.1f}")
        print(f"{name:34s} face-free photos with a face: {res['face_free']}")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized: a few photos per set")
    ap.add_argument("--full", action="store_true", help="every dev photo for the no-face rates")
    ap.add_argument("--photos", type=int, default=40, help="composite 1024x768 photos (4000x3000: a quarter)")
    ap.add_argument("--per-set", type=int, default=300, help="dev photos per set for the no-face rates")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "detectors.json")
    ap.add_argument("--only", nargs="*", help="detector variants to run (default: all)")
    ap.add_argument("--scales", action="store_true", help="faces at every scale, before/after (issue 27)")
    ap.add_argument("--closeups", type=int, default=30, help="--scales: close-ups per photo size")
    ap.add_argument("--cost", action="store_true", help="ms per photo before/after the scale plan, taking turns")
    ap.add_argument("--passes", action="store_true", help="what each YuNet pass buys, issue 27 vs today")
    args = ap.parse_args(argv)
    if not YALE.is_dir() or not DEV.is_dir():
        print(f"skipped: shared face data not found at {DATA}")
        return 0
    if args.cost:
        return run_cost(args)
    if args.passes:
        return run_passes(args)
    if args.scales:
        return run_scales(args)
    n_photos, per_set = (4, 12) if args.quick else (args.photos, None if args.full else args.per_set)
    sources = groups.source_faces(list_images(DEV / "pins_celebs", None) + list_images(DEV / "orl_att_faces", None),
                                  limit=60 if args.quick else 400)
    bgs = groups.backgrounds()
    composite = {"composite_1024": groups.compose(sources, bgs, n_photos, (1024, 768), seed=1),
                 "composite_4000": groups.compose(sources, bgs, max(1, n_photos // 4), (4000, 3000), seed=2)}
    singles = {"yale": [load(p) for p in list_images(YALE, 20 if args.quick else None)],
               **{s: [load(p) for p in list_images(DEV / s, per_set)] for s in DEV_SETS}}
    results = {"environment": environment(), "quick": args.quick, "source_faces": len(sources),
               "backgrounds": list(bgs), "detectors": {}}
    for name, (kw, share) in variants().items():
        if args.only and name not in args.only:
            continue
        with C.network_precision(kw.get("precision")):
            results["detectors"][name] = run_variant(kw, share, composite, singles)
        print(f"done {name}", flush=True)
    results["alignment"] = bench_alignment(singles["yale"])
    print_table(results)
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
