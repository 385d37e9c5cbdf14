"""From a decoded photo to aligned face chips: detect, then align to the model's template.

Shared by indexing, querying, evaluation and training so the crop a model sees
is made the same way everywhere. A model's ``align`` names one template, or
several joined by ``+`` for a fused model (:mod:`facesearch.models.fused`),
whose chip is then a dict ``{template: chip}``:

``dlib5_150_p25``  dlib's 150 px chip from dlib's 5 points (:mod:`facesearch.faces.align`);
``arcface_112``    the 112 px ArcFace chip from YuNet's 5 points (OpenCV's
                   ``alignCrop``, :func:`facesearch.models.sface.align_sface`).
                   Faces found by the dlib detectors have no YuNet points: theirs
                   are placed where YuNet's fall on average in dlib's chip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from facesearch.faces.align import TEMPLATES, crop_box, estimate_similarity
from facesearch.faces.detect import Detector, Face, faces_to_chips

CHIP_SIZE = 150  # the canonical chip; the model's preprocessing resizes it to input_size
ARCFACE = "arcface_112"
# Where YuNet's 5 points fall in dlib's 150 px chip: the mean over 932 train/ faces that both
# found (tools/fit_yunet_box.py).
YUNET_POINTS_IN_DLIB_CHIP = np.array(
    [[47.35, 45.53], [101.51, 46.18], [73.01, 79.12], [51.13, 101.73], [96.97, 102.79]])

Chip = Union[np.ndarray, dict]


@dataclass
class FaceCrop:
    face: Face
    chip: Chip  # CHIP_SIZE x CHIP_SIZE x 3 uint8, or {template: chip} for a fused model


def extract_faces(img: np.ndarray, detector: Detector, align: str) -> list[FaceCrop]:
    """Every face the detector finds in ``img``, with its aligned chip."""
    faces = detector.detect(img)
    return [FaceCrop(f, c) for f, c in zip(faces, make_chips(img, faces, align))]


def make_chips(img: np.ndarray, faces: list[Face], align: str) -> list[Chip]:
    """One chip per face for a model's ``align`` (a dict of chips when it names several)."""
    names = align.split("+")
    per = {n: (_arcface_chips(img, faces) if n == ARCFACE else faces_to_chips(img, faces, template=n, size=CHIP_SIZE))
           for n in names}
    if len(names) == 1:
        return per[names[0]]
    return [{n: per[n][k] for n in names} for k in range(len(faces))]


def _arcface_chips(img: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
    from facesearch.models.sface import INPUT_SIZE, align_sface

    out = []
    for f in faces:
        pts = f.points5 if f.points5 is not None else yunet_points_from_dlib(f.landmarks)
        out.append(align_sface(img, pts) if pts is not None else crop_box(img, f.box, INPUT_SIZE))
    return out


def yunet_points_from_dlib(landmarks: np.ndarray | None) -> np.ndarray | None:
    """YuNet-style points for a face that has only dlib's: their average place in dlib's chip,
    mapped back into the photo."""
    if landmarks is None:
        return None
    chip_to_img = estimate_similarity(TEMPLATES["dlib5_150_p25"].points(CHIP_SIZE), landmarks)
    return YUNET_POINTS_IN_DLIB_CHIP @ chip_to_img[:, :2].T + chip_to_img[:, 2]


def largest_face(img: np.ndarray, detector: Detector, align: str, fallback_whole: bool = True) -> FaceCrop | None:
    """The largest face in a photo of one person (datasets of crops); the whole image if none."""
    crops = extract_faces(img, detector, align)
    if crops:
        return max(crops, key=lambda c: _area(c.face.box))
    if not fallback_whole:
        return None
    h, w = img.shape[:2]
    whole = Face(box=(0.0, 0.0, float(w), float(h)), score=0.0, landmarks=None)
    return FaceCrop(whole, make_chips(img, [whole], align)[0])


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
