"""YuNet's face box as dlib's detectors would draw it, for dlib's landmarks.

dlib's shape predictor was trained on dlib's own boxes (brows to chin); YuNet's run forehead
to chin. For each YuNet face, :func:`hog_box` looks for dlib's own box (HOG; dlib's CNN only when
asked) in a small window around it; where it does not see the face, :func:`dlib_box` maps YuNet's
box to dlib's convention with a fitted linear map.

Since issue 38 the default asks no CNN: a near-frontal face HOG misses is aligned from YuNet's own
points instead (``faces.tiling``). On dev, same detections, every impostor pair (exact TAR): the
fused default's TAR@1e-3 with the CNN / from YuNet's points is 0.9114 / 0.9110 on pins (HOG sees
99.2 %), Extended Yale B 0.293 / 0.308 (ROC AUC 0.862 / 0.864; HOG sees 45 %), UMIST 0.688 / 0.685,
ORL 1.0 / 1.0, and the CNN cost 18 % of a web photo's indexing on a bf16 CPU. Aligning *every* face
from YuNet's points (no HOG, no shape predictor) lost a point on pins (0.901) and 2.2 points of
UMIST's one-shot top-1, and distilling the dlib part onto those chips (``tools/finetune_default.py
--student chips_yunet``, the last 4 blocks, 21k train faces on a CPU) lost more (pins 0.898).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from facesearch.faces.backends import cnn_model, hog_model, rect_box
from facesearch.faces.face import Face, iou

__all__ = ["CNN_MAX_FACES", "YUNET_TO_DLIB_BOX", "cnn_faces", "dlib_box", "hog_box", "near_frontal"]

# dlib's box relative to YuNet's (x offset, y offset, width, height, in YuNet box widths and
# heights): the mean over 932 train/ faces both found (tools/fit_yunet_box.py; spread
# 0.06-0.10). Aligning with YuNet's own points instead lost 15 points of TAR@1e-3 on dev
# pins_celebs: the default model was trained on chips aligned from dlib's points.
YUNET_TO_DLIB_BOX = (-0.0485, 0.1596, 1.0573, 0.7986)
HOG_FACE = 80  # px: the face just fills dlib's 80 px HOG window: found at the first pyramid level, cheapest
# The window around the face, in face widths. HOG scans every pyramid level of the window down
# to its own 80 px, so the cost grows with the window's area: 2 widths is ~2.7x cheaper than 3
# (~2.3 vs ~6.5 ms a face on one core) and was level on every dev set (fused Yale B ROC AUC
# 0.8541 vs 0.8535, UMIST 0.9808 vs 0.9809, pins TAR@1e-3 0.914 vs 0.911; bench/accuracy.py).
HOG_CONTEXT = 2.0
# Where HOG misses, dlib's CNN (MMOD, also an 80 px window) runs on a window of this many face
# widths. On dev Extended Yale B's 200 HOG misses: 2.5 widths finds 83 boxes at ~280 ms per face,
# 3 finds 82 at ~480 ms, 2 only 29 (the CNN needs context around the face).
CNN_FACE = 80
CNN_CONTEXT = 2.5
# The CNN runs for at most this many faces of a photo, the largest first: ~0.25 s each on a
# busy core, so a crowd costs at most ~2 s more (YuNet's own tile budget is ~4 s). On the
# composite group photos of bench/detectors.py HOG missed at most 2 faces per photo.
CNN_MAX_FACES = 8
# ... and only for faces turned at most this much (``_turn``: 0 frontal, ~1 and more in profile).
# On UMIST's profiles the CNN's box made worse landmarks than YuNet's mapped box (dlib_ft ROC AUC
# 0.860 -> 0.827, fused 0.9847 -> 0.9826); with the CNN only up to 0.3 the fused model is level
# there (0.9847, dlib_ft 0.857) and keeps most of Yale B's gain (fused 0.8119 -> 0.8168 vs 0.8176
# with no limit; bench/accuracy.py). HOG's misses on Yale B (dark, frontal) have a median of 0.1.
CNN_MAX_TURN = 0.3


def hog_box(rgb: np.ndarray, box: tuple[float, float, float, float], cnn: bool = True) -> tuple[float, ...] | None:
    """dlib's own box for this face, from HOG (then, if ``cnn``, dlib's CNN) on a small crop
    around it, or None.

    dlib's shape predictor is most accurate on the boxes it was trained with: on dev
    Extended Yale B (hard side light), on the photos both dlib-auto and YuNet find, dlib_ft's
    ROC AUC is 0.996 on dlib-auto's chips and 0.938 on chips from HOG's box where HOG sees the
    face and YuNet's box mapped to dlib's convention (:func:`dlib_box`) elsewhere. The crop is scaled
    so the face fills HOG's 80 px window (~2.3 ms per face, HOG_CONTEXT). HOG misses 42 % of Yale B's YuNet
    faces (dark), 52 % of UMIST's (profiles), 0.7 % of pins and none of ORL; in those windows
    dlib's CNN finds 42 % of Yale B's and 97 % of UMIST's, at ~250 ms per face (CNN_CONTEXT).
    That lifts dlib_ft's Yale B AUC from 0.821 to 0.856 (fused 0.812 -> 0.818) but lowers UMIST's,
    so the caller asks for the CNN only on near-frontal faces (:func:`cnn_faces`): Yale B fused 0.817,
    dlib_ft 0.852, UMIST level. The CNN box is used as it is, as the ``dlib-auto`` backend does (its
    shape predictor runs on raw CNN boxes too): in this window it is within ~7 % of HOG's, and
    mapping it to HOG's convention (fitted on 107 train Yale B faces both found) moved dev Yale B's
    AUC by under 0.001. Where neither sees the face, the caller uses the mapped YuNet box.
    """
    target = dlib_box(box)
    found = _window_box(rgb, target, _hog_rects, HOG_FACE, HOG_CONTEXT)
    if found is None and cnn:
        found = _window_box(rgb, target, _cnn_rects, CNN_FACE, CNN_CONTEXT)
    return found


def near_frontal(face: Face) -> bool:
    """Turned at most ``CNN_MAX_TURN`` (or with no YuNet points to tell)."""
    return face.points5 is None or _turn(face.points5) <= CNN_MAX_TURN


def cnn_faces(faces: list[Face]) -> set[int]:
    """Indices of the faces whose dlib box the CNN may look for: near-frontal (``CNN_MAX_TURN``),
    at most ``CNN_MAX_FACES`` of them, the largest first."""
    ok = [k for k, f in enumerate(faces) if near_frontal(f)]
    ok.sort(key=lambda k: -faces[k].width * faces[k].height)
    return set(ok[:CNN_MAX_FACES])


def _turn(points5: np.ndarray) -> float:
    """How far YuNet's nose tip lies off the eyes' midpoint along the eye line, in eye distances:
    ~0 for a frontal face, growing as it turns (in-plane rotation does not change it)."""
    eyes = points5[1] - points5[0]
    nose = points5[2] - (points5[0] + points5[1]) / 2
    return abs(float(nose @ eyes)) / max(float(eyes @ eyes), 1e-9)


def _hog_rects(small: np.ndarray) -> list:
    return list(hog_model()(small, 0))


def _cnn_rects(small: np.ndarray) -> list:
    return [d.rect for d in cnn_model()(small, 0)]


def _window_box(rgb: np.ndarray, target: tuple[float, ...], find: Callable, face: int,
                context: float) -> tuple[float, ...] | None:
    """The box ``find`` draws on a window of ``context`` face widths centred on ``target``,
    scaled so the face is ``face`` px; the one that best overlaps ``target`` (IoU > 0.3), or None."""
    window = _face_window(rgb, target, face, context)
    if window is None:
        return None
    small, cx0, cy0, f = window
    best, best_iou = None, 0.3
    for r in find(small):
        x0, y0, x1, y1 = rect_box(r)
        cand = (cx0 + x0 / f, cy0 + y0 / f, cx0 + x1 / f, cy0 + y1 / f)
        overlap = iou(cand, target)
        if overlap > best_iou:
            best, best_iou = cand, overlap
    return best


def _face_window(rgb: np.ndarray, target: tuple[float, ...], face: int, context: float):
    """A square crop of ``context`` face widths around ``target``, scaled so the face is ``face``
    px: (crop, x0, y0, scale) in photo pixels, or None when the face lies outside the photo."""
    x0, y0, x1, y1 = target
    side = max(x1 - x0, y1 - y0)
    f = face / side
    # Parts outside the photo are black, as in dlib's own chips (a face filling a cropped photo
    # still gets the margin the detector's window needs).
    cx0, cy0 = int(round((x0 + x1 - context * side) / 2)), int(round((y0 + y1 - context * side) / 2))
    n = int(round(context * side))
    crop = np.zeros((n, n, 3), np.uint8)
    sx0, sy0 = max(cx0, 0), max(cy0, 0)
    sx1, sy1 = min(cx0 + n, rgb.shape[1]), min(cy0 + n, rgb.shape[0])
    if sx1 <= sx0 or sy1 <= sy0:
        return None
    crop[sy0 - cy0:sy1 - cy0, sx0 - cx0:sx1 - cx0] = rgb[sy0:sy1, sx0:sx1]
    small = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    return small, cx0, cy0, f


def dlib_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """YuNet's box (forehead to chin) as dlib's detectors would draw it (brows to chin),
    which is what dlib's shape predictor was trained on."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dx, dy, sw, sh = YUNET_TO_DLIB_BOX
    return (x0 + dx * w, y0 + dy * h, x0 + (dx + sw) * w, y0 + (dy + sh) * h)
