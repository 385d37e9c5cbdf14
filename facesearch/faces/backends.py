"""dlib's and OpenCV's detectors (``dlib-hog``, ``dlib-cnn``, ``dlib-auto``, ``opencv-haar``), the
``none`` detector, and dlib's 5-point landmarks that every detector's faces get.

Models are located through :mod:`facesearch.core.modelfiles` (the files doctor checks) and
loaded lazily, once per process, on first use, so detectors pickle cheaply to workers.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from facesearch.core import modelfiles
from facesearch.core.errors import FacesearchError
from facesearch.faces.align import to_rgb_uint8
from facesearch.faces.face import Face, select_faces

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_BACKEND",
    "FaceDetector",
    "WholeImageDetector",
    "check_backend",
    "cnn_model",
    "hog_model",
    "landmarks",
    "rect_box",
    "shape_predictor",
    "shrink",
]

# "dlib-auto": the fast backend first, the high-recall one only on images where it found nothing.
AUTO_BACKEND = "dlib-hog"
AUTO_FALLBACK = "dlib-cnn"
# The CNN costs ~6 us per pixel on one CPU core (460 ms at 320x243, 7.7 s at 1280x960),
# so the fallback runs, without upsampling, on a copy at most this large (~0.7 s).
AUTO_FALLBACK_SIDE = 400

# dlib's detectors scan an 80x80 window, so they miss faces under ~80 px unless the
# image is upsampled. Upsampling costs ~4x; do it only for images up to this size.
DLIB_WINDOW = 80
UPSAMPLE_MAX_SIDE = 640

SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"


# --------------------------------------------------------------------------------------
# Models, loaded once per process.


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FacesearchError(
            "dlib is not installed", hint="pip install dlib-bin, or use --detector none"
        ) from exc
    return dlib


@functools.cache
def hog_model():
    """dlib's HOG frontal face detector: read from the shipped file when its checksum holds
    (~2 ms), else rebuilt from the copy compiled into dlib (0.4-2 s: every cold query paid it)."""
    dlib = _import_dlib()
    path = modelfiles.hog_model_path()
    return dlib.fhog_object_detector(str(path)) if path else dlib.get_frontal_face_detector()


@functools.cache
def cnn_model():
    """dlib's MMOD CNN face detector."""
    return _import_dlib().cnn_face_detection_model_v1(str(modelfiles.dlib_model_path(CNN_DETECTOR)))


@functools.cache
def shape_predictor():
    """dlib's 5-point landmark predictor."""
    return _import_dlib().shape_predictor(str(modelfiles.dlib_model_path(SHAPE_PREDICTOR)))


@functools.cache
def _haar_model():
    return cv2.CascadeClassifier(str(modelfiles.haar_cascade_path()))


def check_backend(backend: str) -> None:
    """Fail fast, without loading any model, when a backend cannot run here."""
    if importlib.util.find_spec("dlib") is None:
        raise FacesearchError(
            f"detector {backend!r} needs dlib, which is not installed",
            hint="pip install dlib-bin, or use --detector none for pre-cropped faces",
        )
    modelfiles.dlib_model_path(SHAPE_PREDICTOR)
    if backend == "dlib-cnn":
        modelfiles.dlib_model_path(CNN_DETECTOR)
    if backend == "opencv-haar" and modelfiles.haar_cascade_path() is None:
        raise FacesearchError(
            f"detector 'opencv-haar' is unavailable: OpenCV {cv2.__version__} has no "
            "CascadeClassifier or no Haar cascade files",
            hint="use --detector auto (dlib), or install an OpenCV 4 build "
            "(opencv-python-headless<5)",
        )


def landmarks(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib's 5 points (5x2, x y) for the face in ``box`` (edges) of ``rgb``."""
    dlib = _import_dlib()
    l, t, r, b = (int(round(v)) for v in box)
    shape = shape_predictor()(rgb, dlib.rectangle(l, t, r - 1, b - 1))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


# --------------------------------------------------------------------------------------
# Backends: (rgb image, upsample count, min face in this image's pixels) -> boxes, scores.

Raw = tuple[list[tuple[float, float, float, float]], list[float]]


def rect_box(rect) -> tuple[float, float, float, float]:
    """A dlib rectangle (inclusive pixel indices) as a box (edges)."""
    return (float(rect.left()), float(rect.top()), rect.right() + 1.0, rect.bottom() + 1.0)


def _find_hog(rgb: np.ndarray, upsample: int, min_face: float) -> Raw:
    rects, scores, _ = hog_model().run(rgb, upsample, 0.0)
    return [rect_box(r) for r in rects], [float(s) for s in scores]


def _find_cnn(rgb: np.ndarray, upsample: int, min_face: float) -> Raw:
    dets = cnn_model()(rgb, upsample)
    return [rect_box(d.rect) for d in dets], [float(d.confidence) for d in dets]


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
_MODELS = {"dlib-hog": hog_model, "dlib-cnn": cnn_model, "opencv-haar": _haar_model}


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
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
                face.landmarks = landmarks(rgb, face.box)
        return faces

    def warmup(self) -> None:
        """Load the models now (e.g. in a worker-process initializer)."""
        for backend in filter(None, (self.backend, self.fallback)):
            _MODELS[backend]()
        shape_predictor()

    def _run(self, rgb: np.ndarray, backend: str, max_side: int, upsample: int | None) -> list[Face]:
        small, fx, fy = shrink(rgb, max_side)
        min_small = self.min_face * min(fx, fy)
        up = upsample if upsample is not None else _auto_upsample(small.shape, min_small)
        boxes, scores = _BACKENDS[backend](small, up, min_small)
        faces = [Face((x1 / fx, y1 / fy, x2 / fx, y2 / fy), s) for (x1, y1, x2, y2), s in zip(boxes, scores)]
        log.debug("%s found %d faces (upsample=%d, scale=%.3f)", backend, len(faces), up, fx)
        return select_faces(faces, self.min_face, self.policy)


@dataclass
class WholeImageDetector:
    """The ``none`` detector: the input is already a face crop."""

    name: str = "none"

    def detect(self, img: np.ndarray) -> list[Face]:
        h, w = to_rgb_uint8(img).shape[:2]
        return [Face((0.0, 0.0, float(w), float(h)), 1.0, None)]

    def warmup(self) -> None:
        """Nothing to load."""
