"""How detectable the synthetic faces are: dlib HOG and OpenCV Haar on rendered faces.

``facesearch.photos.synthetic`` draws faces for the always-on tests; they are only useful
if classic detectors fire on them. This measures the share of rendered faces found, as
single tiles and inside composed group photos (everything is drawn in memory, no files).

    python bench/synthetic_detect.py [n_faces] [size]    # default 100 faces of 150 px

Prints one rate per detector and setting.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import dlib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facesearch.core.modelfiles import haar_cascade_path  # noqa: E402
from facesearch.photos.synthetic import compose_photo, make_identities, render_face  # noqa: E402


def detection_rates(n: int = 100, size: int = 150, seed: int = 0, per_photo: int = 4) -> dict[str, float | None]:
    """Share of rendered faces found by dlib HOG and OpenCV Haar, as tiles and in composed photos.

    A composed face counts as found when a detection's centre lies in its tile.
    Haar is None where OpenCV has no ``CascadeClassifier`` (OpenCV 5 moved it out).
    """
    hog = dlib.get_frontal_face_detector()
    haar = _haar_or_none()
    ids, rng = make_identities(max(1, n // 5), seed=seed), np.random.default_rng(seed)
    faces = [render_face(ids[i % len(ids)], rng, size=size, alpha=True) for i in range(n)]
    tiles = [np.asarray(f.convert("RGB")) for f in faces]
    photos = [compose_photo(faces[k:k + per_photo], (640, 480), rng) for k in range(0, n, per_photo)]

    def found(detect) -> tuple[float, float]:
        tile_rate = np.mean([len(detect(t)) > 0 for t in tiles])
        hits = [any(b[0] <= (d[0] + d[2]) / 2 <= b[2] and b[1] <= (d[1] + d[3]) / 2 <= b[3] for d in dets)
                for photo, boxes in photos for dets in [detect(np.asarray(photo))] for b in boxes]
        return float(tile_rate), float(np.mean(hits))

    out: dict[str, float | None] = {}
    for up in (0, 1):
        det = lambda a, up=up: [(r.left(), r.top(), r.right(), r.bottom()) for r in hog(a, up)]  # noqa: E731
        out[f"hog_upsample{up}_tile"], out[f"hog_upsample{up}_photo"] = found(det)
    if haar is None:
        out["haar_tile"] = out["haar_photo"] = None
    else:
        out["haar_tile"], out["haar_photo"] = found(haar)
    return out


def _haar_or_none():
    path = haar_cascade_path()  # the cascade the product's opencv-haar detector loads
    if path is None:
        return None
    cascade = cv2.CascadeClassifier(str(path))

    def detect(rgb: np.ndarray):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return [(x, y, x + w, y + h) for x, y, w, h in cascade.detectMultiScale(grey, 1.1, 5, minSize=(40, 40))]

    return detect


def main(argv: list[str]) -> None:
    n_faces = int(argv[0]) if argv else 100
    side = int(argv[1]) if len(argv) > 1 else 150
    for key, rate in detection_rates(n_faces, side).items():
        print(f"{key:22s} {'n/a' if rate is None else f'{rate:.2f}'}")


if __name__ == "__main__":
    main(sys.argv[1:])
