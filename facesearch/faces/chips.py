"""From a decoded photo to aligned face chips: detect, then align to the model's template.

Shared by indexing, querying, evaluation and training so the crop a model sees
is made the same way everywhere. A model's ``align`` names one template, or
several joined by ``+`` for a fused model (:mod:`facesearch.models.fused`),
whose chip is then a dict ``{template: chip}``:

``dlib5_150_p25``  dlib's 150 px chip from dlib's 5 points (:mod:`facesearch.faces.align`);
``arcface_112``    the 112 px ArcFace chip from YuNet's 5 points (OpenCV's
                   ``alignCrop``, :func:`facesearch.faces.align.align_sface`).
``yunet5_150``     dlib's 150 px chip, warped from YuNet's 5 points onto where they
                   fall on average in dlib's chip: the same kind of chip with no dlib
                   detector or shape predictor (issue 38: one alignment).

Faces found by the dlib detectors have no YuNet points: theirs are placed where
YuNet's fall on average in dlib's chip (:func:`yunet_points_from_dlib`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np

from facesearch.faces.align import INPUT_SIZE, TEMPLATES, align_face, align_sface, crop_box, estimate_similarity
from facesearch.faces.face import Detector, Face

CHIP_SIZE = 150  # the canonical chip; the model's preprocessing resizes it to input_size
ARCFACE = "arcface_112"
DLIB_CHIP = "dlib5_150_p25"
YUNET_CHIP = "yunet5_150"
# Where YuNet's 5 points fall in dlib's 150 px chip (the yunet5_150 template's points).
YUNET_POINTS_IN_DLIB_CHIP = TEMPLATES[YUNET_CHIP].points(CHIP_SIZE)
# Templates whose points are YuNet's own (Face.points5), not dlib's landmarks.
YUNET_TEMPLATES = (ARCFACE, YUNET_CHIP)

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
    per = {n: (_arcface_chips(img, faces) if n == ARCFACE else _yunet_chips(img, faces) if n == YUNET_CHIP
               else faces_to_chips(img, faces, template=n, size=CHIP_SIZE))
           for n in names}
    return assemble_chips(per, names)


def needs_dlib_landmarks(align: str) -> bool:
    """Whether a model with this ``align`` needs dlib's 5 landmarks (else YuNet's points do)."""
    return any(n not in YUNET_TEMPLATES for n in align.split("+"))


def assemble_chips(per_template: Mapping[str, Sequence[np.ndarray]], names: Sequence[str]) -> list[Chip]:
    """What a model whose ``align`` names ``names`` takes, from each template's chips of the same
    faces (``per_template[name][k]``: face k's chip): the chips themselves for one template, else one
    ``{template: chip}`` dict per face (a fused model). Templates not in ``names`` are ignored."""
    if len(names) == 1:
        return list(per_template[names[0]])
    return [{n: per_template[n][k] for n in names} for k in range(len(per_template[names[0]]))]


def faces_to_chips(
    img: np.ndarray,
    faces: list[Face],
    template: str = "dlib5_150_p25",
    size: int | None = None,
) -> list[np.ndarray]:
    """One ``size`` x ``size`` x 3 uint8 chip per face.

    Faces with landmarks are aligned to ``template`` (:func:`align_face`); for dlib's template, a
    face with only YuNet's points (one HOG missed: :mod:`facesearch.faces.tiling`) gets the same chip
    from those (``yunet5_150``); faces with neither (the ``none`` detector) are square-cropped from
    their box (:func:`crop_box`). ``size`` defaults to the template's own size.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown alignment template {template!r}; known: {sorted(TEMPLATES)}")
    size = TEMPLATES[template].size if size is None else size
    return [
        align_face(img, f.landmarks, template, size) if f.landmarks is not None
        else align_face(img, f.points5, YUNET_CHIP, size) if f.points5 is not None and template == DLIB_CHIP
        else crop_box(img, f.box, size)
        for f in faces
    ]


def _arcface_chips(img: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
    return _from_yunet_points(img, faces, align_sface, INPUT_SIZE)


def _yunet_chips(img: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
    """dlib-style 150 px chips from YuNet's points."""
    return _from_yunet_points(img, faces, lambda im, pts: align_face(im, pts, YUNET_CHIP, CHIP_SIZE), CHIP_SIZE)


def _from_yunet_points(img: np.ndarray, faces: list[Face], cut, size: int) -> list[np.ndarray]:
    """``cut(img, points)`` per face from YuNet's points (dlib's, mapped, for a face that has only
    those); a square crop of the box for a face with neither."""
    out = []
    for f in faces:
        pts = f.points5 if f.points5 is not None else yunet_points_from_dlib(f.landmarks)
        out.append(cut(img, pts) if pts is not None else crop_box(img, f.box, size))
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
