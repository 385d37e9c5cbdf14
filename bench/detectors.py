"""Benchmark the face detectors and the chip alignment on the shared face photos.

For each detector: detection rate (images with >= 1 face), images with extra
faces (> 1 face, every test image holds exactly one person) and ms/image
(detection + landmarks), on

* ``train/yalefaces``: 164 uncropped 320x243 greyscale photos, one face each;
* a seeded sample of ``dev/pins_celebs``: loose colour face crops, <= 128 px;
* ``groups``: synthetic 640x400 "group photos", each with 4 yalefaces photos
  shrunk to 0.4x (faces ~50 px) on a grey canvas: small faces in a small photo,
  the case dlib's 80 px window misses without upsampling.

``face_recall`` is faces found / faces present (capped at the number present per
image); ``extra_faces`` counts images with more faces than people.

It also measures how closely ``facesearch.align.align_face`` reproduces
``dlib.get_face_chip`` (mean abs pixel difference) on the yalefaces faces, at
their own size and upscaled 4x (the image-pyramid path).

    python bench/detectors.py            # full run, a few minutes on 2 cores
    python bench/detectors.py --quick    # 20 images per set

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
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facesearch.align import align_face  # noqa: E402
from facesearch.atomic import atomic_write_json  # noqa: E402
from facesearch.detect import FaceDetector, create_detector  # noqa: E402
from facesearch.errors import FacesearchError  # noqa: E402

DATA = REPO.parent / "shared" / "data"
YALE = DATA / "train" / "yalefaces"
PINS = DATA / "dev" / "pins_celebs"


# The CNN takes seconds per upsampled image on a CPU: it runs on a sample of each set.
SLOW_LIMIT = 40


def variants() -> dict[str, tuple[dict, int | None]]:
    """Detector settings to compare: name -> (create_detector kwargs, max images per set)."""
    return {
        "auto": ({"name": "auto"}, None),
        "dlib-hog": ({"name": "dlib-hog"}, None),
        "dlib-hog up0": ({"name": "dlib-hog", "upsample": 0}, None),
        "dlib-hog up1": ({"name": "dlib-hog", "upsample": 1}, None),
        "dlib-cnn": ({"name": "dlib-cnn"}, SLOW_LIMIT),
        "dlib-cnn up0": ({"name": "dlib-cnn", "upsample": 0}, SLOW_LIMIT),
        "opencv-haar": ({"name": "opencv-haar"}, None),
        "none": ({"name": "none"}, None),
    }


def list_images(folder: Path, n: int | None, seed: int = 0) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".pgm"})
    if n is not None and n < len(files):
        files = random.Random(seed).sample(files, n)
    return files


def spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced (so a yalefaces sample covers every person)."""
    if limit is None or len(items) <= limit:
        return items
    return items[:: len(items) // limit][:limit]


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def group_photos(faces: list[np.ndarray], n: int, per: int = 4) -> list[np.ndarray]:
    """``n`` 640x400 canvases, each with ``per`` photos from ``faces`` shrunk to 0.4x."""
    canvases = []
    for i in range(n):
        canvas = np.full((400, 640, 3), 128, np.uint8)
        for k in range(per):
            img = faces[(i * per + k * 37) % len(faces)]
            small = cv2.resize(img, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
            y, x = 40 + (k // 2) * 180, 40 + (k % 2) * 320
            canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        canvases.append(canvas)
    return canvases


def bench_detector(det, images: list[np.ndarray], per_image: int) -> dict:
    counts, elapsed = [], 0.0
    for img in images:
        t0 = time.perf_counter()
        counts.append(len(det.detect(img)))
        elapsed += time.perf_counter() - t0
    n = len(images)
    return {
        "images": n,
        "detection_rate": round(sum(c >= 1 for c in counts) / n, 4),
        "face_recall": round(sum(min(c, per_image) for c in counts) / (n * per_image), 4),
        "extra_faces": sum(c > per_image for c in counts),
        "ms_per_image": round(1000 * elapsed / n, 1),
    }


def bench_alignment(images: list[np.ndarray]) -> dict:
    """align_face vs dlib.get_face_chip on HOG faces, at 1x and 4x (pyramid path)."""
    import dlib

    from facesearch.detect import _hog_model, _shape_predictor

    diffs, maxdiff, ours_ms, dlib_ms = [], 0, 0.0, 0.0
    for img in images:
        for scale in (1, 4):
            im = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else img
            rects = _hog_model()(im, 0)
            if not rects:
                continue
            shape = _shape_predictor()(im, rects[0])
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
    head = f"{'detector':16s} {'set':6s} {'n':>4s} {'rate':>6s} {'recall':>6s} {'extra':>5s} {'ms/img':>8s}"
    print(head)
    print("-" * len(head))
    for name, res in results["detectors"].items():
        if "error" in res:
            print(f"{name:16s} unavailable: {res['error']}")
            continue
        for set_name, r in res.items():
            print(f"{name:16s} {set_name:6s} {r['images']:4d} {r['detection_rate']:6.3f} "
                  f"{r['face_recall']:6.3f} {r['extra_faces']:5d} {r['ms_per_image']:8.1f}")
    print("\nalignment vs dlib.get_face_chip:", results["alignment"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 images per set")
    ap.add_argument("--pins", type=int, default=300, help="pins_celebs sample size")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "detectors.json")
    ap.add_argument("--only", nargs="*", help="detector variants to run (default: all)")
    args = ap.parse_args(argv)
    if not YALE.is_dir() or not PINS.is_dir():
        print(f"skipped: shared face data not found at {DATA}")
        return 0
    n = 20 if args.quick else None
    sets = {
        "yale": [load(p) for p in list_images(YALE, n)],
        "pins": [load(p) for p in list_images(PINS, 20 if args.quick else args.pins)],
    }
    sets["groups"] = group_photos(sets["yale"], 5 if args.quick else 20)
    per_image = {"yale": 1, "pins": 1, "groups": 4}
    results = {"environment": environment(), "quick": args.quick, "detectors": {}}
    for name, (kw, limit) in variants().items():
        if args.only and name not in args.only:
            continue
        try:
            det = create_detector(**kw)
        except FacesearchError as exc:
            results["detectors"][name] = {"error": f"{exc} ({exc.hint})"}
            continue
        if isinstance(det, FaceDetector):
            det.warmup()  # model loading is not per-image cost
        results["detectors"][name] = {
            s: bench_detector(det, spread(imgs, limit), per_image[s]) for s, imgs in sets.items()
        }
        print(f"done {name}", flush=True)
    results["alignment"] = bench_alignment(sets["yale"])
    print_table(results)
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
