"""A photo that is itself a face crop: the whole image as one face, when a second look agrees.

A detector may find no face in a tight crop (a profile picture, an ID photo, a zoomed screenshot,
a dark face): the face is cut by the frame, or too dark for YuNet's usual score. Such a photo is
read as one face (``Face.whole_image``), but only when one of two checks agrees, because dlib's
shape predictor returns 5 points even on a brick wall:

1. YuNet with context: the image, shrunk to ``CONTEXT_SIDE`` px and set in a black border half its
   size, searched at score ``CONTEXT_SCORE``; a face at least ``MIN_SHARE`` of the image wide is
   taken with its own box and points (dlib's landmarks then come as for any YuNet face).
2. Landmark quality: dlib's 5 points on boxes covering the image (``BOXES``) move by at most
   ``MAX_SPREAD`` eye distances between the boxes and have a face's geometry; the face's box is the
   whole image and its landmarks the points' mean.

On dev crops vs. face-free crops of real photos (``bench/detectors.py``, ``crop_fallback``), check 1
accepts 100 % of pins, ORL and UMIST and ~2/3 of Extended Yale B, and 0.4 % of face-free crops.
``--detector none`` still forces the whole image as a face without any check.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from facesearch.faces.backends import landmarks
from facesearch.faces.face import Face

__all__ = ["BOXES", "CONTEXT_SCORE", "CONTEXT_SIDE", "MAX_SPREAD", "MIN_SHARE", "landmark_spread",
           "whole_image_face"]

CONTEXT_SIDE = 160
CONTEXT_SCORE = 0.4  # face-free crops: 2 % reach 0.3, 0.4 % 0.4, none 0.5; dev faces: 100 % but dark Yale B
MIN_SHARE = 0.3
# Boxes covering the image, as (left, top, right, bottom) fractions of its width and height: a
# crop's face fills it loosely (the whole box), tightly (inset), or sits a little high or low.
BOXES = ((0.0, 0.0, 1.0, 1.0), (0.1, 0.1, 0.9, 0.9), (0.05, 0.0, 0.95, 0.9), (0.05, 0.1, 0.95, 1.0))
# The largest mean movement of the points between those boxes, in eye distances: dev faces have a
# median of 0.01-0.03 (UMIST's profiles 0.085), face-free crops a 5th percentile of 0.06.
MAX_SPREAD = 0.03

Rows = Callable[[np.ndarray, float], np.ndarray]  # YuNet: (image, score) -> (N, 15) rows


def whole_image_face(rgb: np.ndarray, yunet: Rows) -> Face | None:
    """``rgb`` as one face (``whole_image=True``) if a second look agrees it is a face crop, else None.
    ``yunet(image, score)`` runs YuNet on one image."""
    h, w = rgb.shape[:2]
    if min(h, w) < 16:
        return None
    face = _with_context(rgb, yunet)
    if face is not None:
        return face
    points = [landmarks(rgb, (l * w, t * h, r * w, b * h)) for l, t, r, b in BOXES]
    if landmark_spread(points) > MAX_SPREAD or not _face_shaped(points[0], w):
        return None
    return Face((0.0, 0.0, float(w), float(h)), 0.0, landmarks=np.mean(points, axis=0), whole_image=True)


def _with_context(rgb: np.ndarray, yunet: Rows) -> Face | None:
    """YuNet's best face at least ``MIN_SHARE`` of the image wide, found with a black border around
    the image, in photo pixels (its box may reach past the image)."""
    f = CONTEXT_SIDE / max(rgb.shape[:2])
    small = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    py, px = small.shape[0] // 2, small.shape[1] // 2
    rows = yunet(cv2.copyMakeBorder(small, py, py, px, px, cv2.BORDER_CONSTANT, value=(0, 0, 0)), CONTEXT_SCORE)
    rows = rows[rows[:, 2] >= MIN_SHARE * small.shape[1]]
    if not len(rows):
        return None
    r = rows[np.argmax(rows[:, 14])].astype(np.float64)
    x, y, bw, bh = (r[0] - px) / f, (r[1] - py) / f, r[2] / f, r[3] / f
    pts = (r[4:14].reshape(5, 2) - (px, py)) / f
    return Face((x, y, x + bw, y + bh), float(r[14]), points5=pts, whole_image=True)


def landmark_spread(points: list[np.ndarray]) -> float:
    """How far dlib's 5 points move between the boxes, in eye distances (mean over points and
    boxes, from their mean): small for a face, large where the predictor only guesses."""
    stack = np.stack(points)
    mean = stack.mean(axis=0)
    return float(np.linalg.norm(stack - mean, axis=2).mean() / max(_eye_distance(mean), 1e-6))


def _eye_distance(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[0:2].mean(axis=0) - p[2:4].mean(axis=0)))


def _face_shaped(p: np.ndarray, width: float) -> bool:
    """Eyes level within ~30 degrees, a fifth to two thirds of the image apart, the nose below
    their midpoint and between them."""
    right, left = p[0:2].mean(axis=0), p[2:4].mean(axis=0)
    eyes = right - left
    d = float(np.linalg.norm(eyes))
    if not 0.2 * width <= d <= 0.67 * width or abs(eyes[1]) > 0.58 * abs(eyes[0]):
        return False
    nose = p[4] - (right + left) / 2
    along, down = float(nose @ eyes) / d, float(np.cross(eyes, nose)) / d
    return abs(along) < 0.35 * d and 0.2 * d < down < 1.3 * d
