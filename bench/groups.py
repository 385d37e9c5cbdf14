"""A labelled group-photo set, composed: dev faces pasted at known boxes into real photos.

``../shared/data`` has no group photos with ground-truth boxes, so the detector
benchmark builds them: faces of ``dev/pins_celebs`` (colour, in the wild) and
``dev/orl_att_faces`` (grey) are pasted, at face widths from 16 to 200 px and
without overlap, into real photographs that hold no person (scikit-image's
bundled sample photos: a cat, coffee, coins, bricks, grass, gravel, a rocket,
motorcycles, the moon, a Hubble field), resized to the photo sizes asked for.

Where each face is: the source crops are loose, so each one's face box is
measured once on the crop at 3x with dlib's HOG detector (the previous
default, independent of YuNet) and only crops where it finds exactly one face
are used; the pasted box is that box moved and scaled with the paste. A face
counts as found when a detection's centre lies inside its box and the widths
agree within a factor of 2 (box conventions differ between detectors).

This is a composite, not a real crowd: lighting, blur and occlusion of real
group photos are missing, and pasted edges are visible. Published WIDER FACE
numbers (see ``docs/benchmarks.md``) cover real crowds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Photos without people (astronaut, camera and the face-like ones are left out).
BACKGROUNDS = ("chelsea", "coffee", "coins", "brick", "grass", "gravel", "rocket",
               "motorcycle_left", "moon", "hubble_deep_field")
MIN_FACE, MAX_FACE = 16, 200


@dataclass
class SourceFace:
    """A face crop and where in it the face is (x0, y0, x1, y1)."""

    image: np.ndarray
    box: tuple[float, float, float, float]


@dataclass
class GroupPhoto:
    image: np.ndarray
    boxes: np.ndarray  # (K, 4) ground-truth face boxes, x0 y0 x1 y1
    background: str


def backgrounds() -> dict[str, np.ndarray]:
    """The face-free real photos, as RGB uint8."""
    import skimage.data

    from facesearch.photos.load import load_array

    folder = Path(skimage.data.__file__).parent  # the photos ship inside the wheel
    out = {}
    for name in BACKGROUNDS:
        path = next(folder.glob(f"{name}.*"))
        out[name] = load_array(path)
    return out


def source_faces(paths: list[Path], limit: int, seed: int = 0) -> list[SourceFace]:
    """Up to ``limit`` crops whose single face dlib HOG finds at 3x (its box, in crop pixels)."""
    from facesearch.faces.detect import create_detector
    from facesearch.photos.load import load_array

    det = create_detector("dlib-hog", min_face=1, upsample=0)
    det.with_landmarks = False
    paths = list(paths)
    random.Random(seed).shuffle(paths)
    out: list[SourceFace] = []
    for p in paths:
        img = load_array(p)
        img = np.repeat(img[:, :, None], 3, 2) if img.ndim == 2 else img[:, :, :3]
        big = cv2.resize(img, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
        faces = det.detect(big)
        if len(faces) == 1:
            out.append(SourceFace(img, tuple(v / 3 for v in faces[0].box)))
        if len(out) >= limit:
            break
    return out


def compose(faces: list[SourceFace], bgs: dict[str, np.ndarray], n: int, size: tuple[int, int],
            per_photo: tuple[int, int] = (6, 20), seed: int = 0) -> list[GroupPhoto]:
    """``n`` photos of ``size`` (w, h), each with a random number of faces in ``per_photo``."""
    rng = random.Random(seed)
    names = sorted(bgs)
    photos = []
    for i in range(n):
        name = names[i % len(names)]
        canvas = _cover(bgs[name], size)
        boxes = _paste_many(canvas, faces, rng, rng.randint(*per_photo))
        photos.append(GroupPhoto(canvas, np.array(boxes, np.float64).reshape(-1, 4), name))
    return photos


def _cover(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to fill ``size`` and centre-crop (no letterbox bars a detector could use)."""
    w, h = size
    s = max(w / img.shape[1], h / img.shape[0])
    big = cv2.resize(img, (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s))),
                     interpolation=cv2.INTER_CUBIC)
    y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])


def _paste_many(canvas: np.ndarray, faces: list[SourceFace], rng: random.Random, k: int) -> list:
    """Paste up to ``k`` faces at log-uniform face widths without overlapping crops."""
    taken: list[tuple[int, int, int, int]] = []
    boxes = []
    for _ in range(k * 20):
        if len(boxes) == k:
            break
        src = faces[rng.randrange(len(faces))]
        width = float(np.exp(rng.uniform(np.log(MIN_FACE), np.log(MAX_FACE))))
        placed = _place(canvas, src, width, rng, taken)
        if placed is not None:
            boxes.append(placed)
    return boxes


def _place(canvas, src: SourceFace, face_width: float, rng: random.Random, taken: list):
    s = face_width / (src.box[2] - src.box[0])
    crop = cv2.resize(src.image, None, fx=s, fy=s,
                      interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    ch, cw = crop.shape[:2]
    H, W = canvas.shape[:2]
    if cw >= W or ch >= H:
        return None
    x, y = rng.randrange(W - cw), rng.randrange(H - ch)
    rect = (x, y, x + cw, y + ch)
    if any(_overlap(rect, t) for t in taken):
        return None
    taken.append(rect)
    canvas[y:y + ch, x:x + cw] = crop
    b = src.box
    return (x + b[0] * s, y + b[1] * s, x + b[2] * s, y + b[3] * s)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def match(gt: np.ndarray, det: np.ndarray) -> tuple[np.ndarray, int]:
    """Greedy one-to-one matching; returns (found per ground-truth face, false positives).

    A detection (x0, y0, x1, y1) finds a face when its centre is inside the face's
    box and the widths agree within 2x; each detection finds at most one face.
    """
    found = np.zeros(len(gt), bool)
    used = np.zeros(len(det), bool)
    for g in np.argsort(-(gt[:, 2] - gt[:, 0])) if len(gt) else []:
        x0, y0, x1, y1 = gt[g]
        for d in range(len(det)):
            if used[d]:
                continue
            cx, cy = (det[d, 0] + det[d, 2]) / 2, (det[d, 1] + det[d, 3]) / 2
            ratio = (det[d, 2] - det[d, 0]) / (x1 - x0)
            if x0 <= cx <= x1 and y0 <= cy <= y1 and 0.5 <= ratio <= 2.0:
                found[g] = used[d] = True
                break
    return found, int((~used).sum())
