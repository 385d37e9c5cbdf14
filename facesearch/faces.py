"""From a decoded photo to aligned face chips: detect, then align to the model's template.

Shared by indexing, querying, evaluation and training so the crop a model sees
is made the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesearch.detect import Detector, Face, faces_to_chips

CHIP_SIZE = 150  # the canonical chip; the model's preprocessing resizes it to input_size


@dataclass
class FaceCrop:
    face: Face
    chip: np.ndarray  # CHIP_SIZE x CHIP_SIZE x 3 uint8


def extract_faces(img: np.ndarray, detector: Detector, align: str) -> list[FaceCrop]:
    """Every face the detector finds in ``img``, with its aligned chip."""
    faces = detector.detect(img)
    chips = faces_to_chips(img, faces, template=align, size=CHIP_SIZE)
    return [FaceCrop(f, c) for f, c in zip(faces, chips)]


def largest_face(img: np.ndarray, detector: Detector, align: str, fallback_whole: bool = True) -> FaceCrop | None:
    """The largest face in a photo of one person (datasets of crops); the whole image if none."""
    crops = extract_faces(img, detector, align)
    if crops:
        return max(crops, key=lambda c: _area(c.face.box))
    if not fallback_whole:
        return None
    h, w = img.shape[:2]
    whole = Face(box=(0.0, 0.0, float(w), float(h)), score=0.0, landmarks=None)
    return FaceCrop(whole, faces_to_chips(img, [whole], template=align, size=CHIP_SIZE)[0])


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
