"""A detected face, what every detector promises, and the box geometry they share.

Kept free of cv2, dlib and torch: the index store and the query path use :class:`Face` and
:func:`iou` without loading any detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from facesearch.core.errors import FacesearchError

__all__ = ["POLICIES", "Detector", "Face", "check_policy", "iou", "select_faces"]

POLICIES = ("all", "largest")

Box = Sequence[float]  # (x1, y1, x2, y2): edges, not centres


@dataclass
class Face:
    """One detected face.

    ``box`` is (x1, y1, x2, y2) in original-image pixels, edges not centres
    (``x2 - x1`` is the width); it may extend past the image border.
    ``score`` is the backend's own confidence (HOG: SVM margin, CNN: MMOD score,
    Haar: stage weight); scores of different backends are not comparable.
    ``landmarks`` is a 5x2 float array (x, y) in original-image pixels, or None:
    dlib's 5 points (the order documented in :mod:`facesearch.faces.align`), which make
    the default model's chip. ``points5`` are YuNet's own 5 points (eye centres,
    nose tip, mouth corners; what ArcFace-style 112 px alignment uses), or None.
    ``whole_image`` is True where no face was detected and the whole image was read as a face
    crop (its landmarks checked: :mod:`facesearch.faces.crop`).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    points5: np.ndarray | None = None
    whole_image: bool = False

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def side(self) -> float:
        """The shorter side of the box: what ``min_face`` is compared with."""
        return min(self.width, self.height)


@runtime_checkable
class Detector(Protocol):
    """Anything that finds faces in an RGB (or grey) uint8 image."""

    name: str

    def detect(self, img: np.ndarray) -> list[Face]: ...


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when their union is empty."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def check_policy(policy: str) -> None:
    """FacesearchError unless ``policy`` is one of :data:`POLICIES`."""
    if policy not in POLICIES:
        raise FacesearchError(f"unknown face policy {policy!r}", hint=f"use one of {POLICIES}")


def select_faces(faces: list[Face], min_face: float, policy: str) -> list[Face]:
    """The faces at least ``min_face`` px on their short side, best score first; with the
    ``largest`` policy only the one with the largest box."""
    faces = sorted((f for f in faces if f.side >= min_face), key=lambda f: -f.score)
    if policy == "largest" and faces:
        faces = [max(faces, key=lambda f: f.width * f.height)]
    return faces
