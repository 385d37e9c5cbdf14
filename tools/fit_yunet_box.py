"""Fit the map from YuNet's face box to dlib's, on train/ photos.

dlib's 5-point shape predictor was trained on boxes from dlib's detectors, which
start at the brows; YuNet's start at the hairline. Fed YuNet's box unchanged the
predictor's points shift and the default model (trained on chips aligned from
them) loses accuracy. This tool finds faces where both dlib's HOG detector and
YuNet see exactly one face and averages dlib's box in YuNet box units:
``(x offset, y offset, width, height)``, which is
``facesearch.faces.reconcile.YUNET_TO_DLIB_BOX``.

It also reports where YuNet's own 5 points fall in dlib's 150 px chip, the
alternative that was measured and rejected (see ``docs/benchmarks.md``).

    python tools/fit_yunet_box.py [--per-set 400] [--out fit.json]

Train photos only (``../shared/data/train``); dev is where the result is judged.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facesearch.faces.align import TEMPLATES, estimate_similarity  # noqa: E402
from facesearch.faces.detect import create_detector  # noqa: E402
from facesearch.photos.load import load_array  # noqa: E402
from facesearch.photos.scan import scan_images  # noqa: E402

SETS = ("pins_celebs", "yalefaces", "glint360k_celebs")


def photos(data: Path, per_set: int, seed: int) -> list[Path]:
    out = []
    for name in SETS:
        files = scan_images([data / "train" / name])
        random.Random(seed).shuffle(files)
        out += files[:per_set]
    return out


def pair(img: np.ndarray, dlib_det, yunet_det):
    """(dlib face, YuNet face) when both see exactly one face, else None."""
    a, b = dlib_det.detect(img), yunet_det.detect(img)
    return (a[0], b[0]) if len(a) == 1 and len(b) == 1 else None


def box_units(dlib_box, yunet_box) -> list[float]:
    x0, y0, x1, y1 = yunet_box
    w, h = x1 - x0, y1 - y0
    return [(dlib_box[0] - x0) / w, (dlib_box[1] - y0) / h, (dlib_box[2] - dlib_box[0]) / w,
            (dlib_box[3] - dlib_box[1]) / h]


def fit(paths: list[Path]) -> dict:
    dlib_det = create_detector("dlib-hog", min_face=20)
    yunet_det = create_detector("yunet", min_face=20)
    boxes, chip_pts = [], []
    template = TEMPLATES["dlib5_150_p25"]
    for p in paths:
        img = load_array(p)
        if max(img.shape[:2]) < 200:  # crops of 112-128 px: dlib's 80 px window needs room
            img = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        found = pair(img, dlib_det, yunet_det)
        if found is None:
            continue
        boxes.append(box_units(found[0].box, found[1].box))
        to_chip = estimate_similarity(found[0].landmarks, template.points())
        chip_pts.append(found[1].points5 @ to_chip[:, :2].T + to_chip[:, 2])
    boxes, chip_pts = np.array(boxes), np.array(chip_pts)
    return {"faces": len(boxes), "photos": len(paths), "sets": list(SETS),
            "yunet_to_dlib_box": boxes.mean(0).round(4).tolist(), "spread": boxes.std(0).round(3).tolist(),
            "yunet_points_in_dlib_chip": chip_pts.mean(0).round(2).tolist()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--per-set", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result = fit(photos(args.data, args.per_set, args.seed))
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
