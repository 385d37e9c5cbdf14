"""YuNet as the product's detector: the photo scaled so ``min_face`` faces are visible to it,
searched whole when small enough, else as a shrunk whole view plus overlapping tiles, merged.

Each face then gets dlib's 5 landmarks on dlib's own box for it (:mod:`facesearch.faces.reconcile`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from facesearch.faces.align import to_rgb_uint8
from facesearch.faces.backends import cnn_model, hog_model, landmarks, shape_predictor, shrink
from facesearch.faces.face import Face, select_faces
from facesearch.faces.reconcile import cnn_faces, dlib_box, hog_box

__all__ = ["YUNET_MAX_SIDE", "YUNET_MIN_VISIBLE", "YuNetFaceDetector", "yunet_model"]

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


@functools.cache
def yunet_model():
    """The YuNet network, built once per process (torch is imported here, not before)."""
    from facesearch.faces.yunet import open_yunet

    # The product's precision rule (bf16 where the CPU has it); FACESEARCH_PRECISION=fp32 gives
    # OpenCV's arithmetic exactly.
    return open_yunet(precision=None)


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
            small, fx, _ = shrink(rgb, self.max_side)
            rows = _merge(np.concatenate([_scale_rows(self._run([small])[0], 1 / fx), self._tiles(rgb, g, fx)]))
        faces = select_faces([_yunet_face(r) for r in rows], self.min_face, self.policy)
        cnn_ok = cnn_faces(faces)
        for k, face in enumerate(faces):
            face.landmarks = landmarks(rgb, hog_box(rgb, face.box, cnn=k in cnn_ok) or dlib_box(face.box))
        return faces

    def warmup(self) -> None:
        """Load the models now (e.g. in a worker-process initializer)."""
        yunet_model()
        hog_model()
        cnn_model()
        shape_predictor()

    def _run(self, images: list[np.ndarray], score: float | None = None) -> list[np.ndarray]:
        return yunet_model().detect_batch(images, score or self.score_threshold, YUNET_NMS)

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
        per_pass = 8 if yunet_model().device.type == "cuda" else 1  # batching pays only on a GPU
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
    from facesearch.faces.yunet_decode import nms  # imports torch: only large photos need it

    if len(rows) < 2:
        return rows
    keep = nms(np.round(rows[:, :4]), rows[:, 14], -1.0, YUNET_NMS)
    return rows[keep]


def _yunet_face(row: np.ndarray) -> Face:
    x, y, w, h = (float(v) for v in row[:4])
    return Face((x, y, x + w, y + h), float(row[14]), points5=row[4:14].reshape(5, 2).astype(np.float64))
