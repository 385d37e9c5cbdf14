"""YuNet as the product's detector: a plan of passes over the photo that together cover every face
from ``min_face`` to the whole frame, merged with one NMS.

YuNet finds a face reliably when it is ~30 to ~480 px wide in the image it sees (dev faces with
context: 27/40 found at 20 px, 38/40 at 30, 40/40 from 60 to 400, 39/40 at 500, 29/40 at 600;
dev crops cut to the face: 40/40 at long sides 96-480, 37/40 at 640). One scale cannot span 20 px
to a 3000 px frame-filling face, so :func:`scale_plan` chooses a few: the ``min_face`` scale
(tiled when that makes the photo larger than ``max_side``), then views each at most
``PASS_RATIO`` times smaller, down to a view whose long side is ``VIEW_SIDE``, where even a face
filling the frame is inside YuNet's range. ``weights/README.md`` lists which face widths each
pass covers and why the set is complete. The smaller views run first: where they found a large
face, the min-face pass searches only the bands around it (a face holds no smaller face); elsewhere
it is a cascade (:mod:`facesearch.faces.refine`): a coarse look, then a close one at each candidate.

Each face then gets dlib's 5 landmarks on dlib's own box for it (:mod:`facesearch.faces.reconcile`).
A photo with no face at all may be a face crop: :mod:`facesearch.faces.crop` then takes a second,
checked look at the whole image as one face.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from facesearch.faces import refine
from facesearch.faces.align import to_rgb_uint8
from facesearch.faces.backends import cnn_model, hog_model, landmarks, shape_predictor
from facesearch.faces.crop import whole_image_face
from facesearch.faces.face import Face, select_faces
from facesearch.faces.reconcile import cnn_faces, dlib_box, hog_box, near_frontal

__all__ = ["PASS_RATIO", "VIEW_SIDE", "YUNET_MAX_SIDE", "YUNET_MIN_VISIBLE", "Pass", "YuNetFaceDetector",
           "scale_plan", "yunet_model"]

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
# Up to this long side (after scaling) a pass is one image; larger ones are tiles, one at a time; no
# whole view is larger than this. YuNet costs more per megapixel in larger images (cache misses):
# ~56 ms/MP up to 1024 px and twice that at 1536 on one CPU; 41-48 ms/MP up to 1024x768, 54 at
# 1536x1152, 59 at 2048-3072 px on a bf16 EPYC (issue 38), where 2048 px tiles cut the web race's
# calls 3.7 -> 2 and MP 15 % but not its ms, for 2.4x the memory (bench/results/detectors_passes.json).
YUNET_MAX_SIDE = 1536
TILE = 1024
# The min-face pass skips the inside of a face the later views found at this score or more, shrunk
# by HOLE_SHRINK of its size each side (YuNet's boxes vary by ~10 %), when that is at least
# HOLE_MIN_SHARE of the photo and the strips left to search are at most STRIP_SHARE of it: a
# close-up's min-face pass is then its margins (issue 38, bench/detectors.py --passes).
HOLE_SCORE = 0.8
HOLE_SHRINK = 0.1
HOLE_MIN_SHARE = 0.1
STRIP_SHARE = 0.8
MAX_TILE_PIXELS = 40_000_000  # ~4 s of tiles on one CPU core: a 4000x3000 photo at 1.5x fits
# The last view's long side at most: a face filling the frame is then at most this wide, inside
# YuNet's range (dev crops cut to the face: 40/40 found at long sides 96-480, 37/40 at 640); and at
# least MIN_VIEW_SIDE, the smallest of those sizes.
VIEW_SIDE = 480
MIN_VIEW_SIDE = 96
# Consecutive passes differ in scale by at most this: a face at the bottom of the next view's
# share (KEEP_MARGIN x 30 = 45 px there) is then at most 6 x 45 = 270 px in the larger one, well
# inside YuNet's range, so every width is found by some pass with margin. Smaller ratios cost
# more views; larger ones more tile overlap (tiles keep faces up to that share, see _tiles). After
# a whole (untiled) first pass the one view left is the full ratio smaller, not VIEW_SIDE long:
# 0.02 MP instead of 0.18 after a 500x375 photo's, photos of 500-640 px 0.76 -> 0.59 MP, at the
# same recall (issue 38, bench/detectors.py --passes, --scales); after tiles the views stay evenly
# spaced, as a smaller next view widens the tiles' overlap (1600x1200 groups: 6.1 -> 7.3 MP).
PASS_RATIO = 6.0
KEEP_MARGIN = 1.5  # a tile keeps faces up to this many times the next view's smallest face
# A face counts as ``min_face`` wide when YuNet's box is at least this share of it: YuNet's boxes
# are ~5 % narrower than dlib's (the box the chips and the benchmarks' ground truth use) and vary
# by ~10 %. On dev crowds of 18-34 px faces (bench/detectors.py --scales) the strict floor dropped
# 31 % of the 20-24 px faces YuNet had found (recall 69 % -> 98 %, false faces 2 -> 3 of 184).
MIN_FACE_SLACK = 0.8


@functools.cache
def yunet_model():
    """The YuNet network, built once per process: on a CPU its ONNX export on the inference runtime
    (core/runtime: ONNX Runtime, fp32), never torch; torch only on CUDA or without an export."""
    from facesearch.faces.yunet import open_yunet

    # The product's precision rule; ONNX Runtime runs fp32 whatever it asks (OpenCV's arithmetic).
    return open_yunet(precision=None)


def _on_gpu(model) -> bool:
    return getattr(getattr(model, "device", None), "type", "cpu") == "cuda"


@dataclass(frozen=True)
class Pass:
    """One look at the photo: scaled by ``scale``, as tiles when that is larger than max_side."""

    scale: float
    tiled: bool


def scale_plan(hw: tuple[int, int], min_face: float, max_side: int = YUNET_MAX_SIDE,
               min_visible: float = YUNET_MIN_VISIBLE, view_side: int = VIEW_SIDE,
               pass_ratio: float = PASS_RATIO) -> list[Pass]:
    """The passes that find every face from ``min_face`` px to the whole frame in a photo of ``hw``.

    The first makes ``min_face`` faces ``min_visible`` px (tiled past ``max_side``, within the
    tile budget). After tiles each next one is at most ``pass_ratio`` times smaller, evenly
    spaced, no larger than ``max_side``; the last has a long side of ``view_side``. After a whole
    first pass the one view left is ``pass_ratio`` times smaller (its long side at least
    ``MIN_VIEW_SIDE``). A photo whose first pass is already no longer than ``view_side`` gets
    that pass alone: it cannot hold a face too large for it.
    """
    long_side = max(hw)
    s = min_visible / max(min_face, 1)
    tiled = long_side * s > max_side
    if tiled:
        s = min(s, math.sqrt(MAX_TILE_PIXELS / (hw[0] * hw[1])))
    plan = [Pass(s, tiled)]
    end = view_side / long_side
    while s > end * (1 + 1e-9):
        if tiled:
            steps = max(1, math.ceil(math.log(s / end) / math.log(pass_ratio) - 1e-9))
            s = min(s / (s / end) ** (1 / steps), max_side / long_side)
        else:  # at most max_side long, so 6x smaller is at most 256 px: one view
            s = max(s / pass_ratio, MIN_VIEW_SIDE / long_side)
        plan.append(Pass(s, False))
    return plan


@dataclass
class YuNetFaceDetector:
    """YuNet over the passes of :func:`scale_plan`, merged with one NMS.

    ``min_visible``: the width ``min_face`` faces are scaled to; ``score_threshold``: YuNet's
    score floor. ``view_side`` and ``pass_ratio`` shape the plan (``view_side=max_side`` with an
    unbounded ratio is the plan before issue 27: one ``max_side`` view plus tiles).
    ``crop_fallback``: where no face is found, take a checked second look at the whole image as
    one face (:func:`facesearch.faces.crop.whole_image_face`).
    ``min_face_slack``: a face is kept when YuNet's box is at least this share of ``min_face``.
    ``skip_found``: the min-face pass skips the inside of a large face the later views found.
    ``dlib_landmarks``: give each face dlib's 5 landmarks too (dlib's box, then its shape predictor:
    ~22 % of a web photo's indexing on a bf16 CPU, issue 38); a model aligned from YuNet's own
    points needs none.
    ``cnn_box``: where HOG misses a near-frontal face, look for dlib's box with dlib's CNN (~0.25-0.55 s
    a face: 18 % of a web photo's indexing) instead of cutting its chip from YuNet's points (issue 38;
    level or better on every dev set, :mod:`~facesearch.faces.reconcile`).
    ``cascade``: run the min-face pass as a coarse look plus a window at each candidate
    (:mod:`~facesearch.faces.refine`; web photos' detection ~2x faster at the same recall), not whole.
    """

    name: str = "yunet"
    min_face: int = 20
    max_side: int = YUNET_MAX_SIDE
    policy: str = "all"
    score_threshold: float = YUNET_SCORE
    min_visible: float = YUNET_MIN_VISIBLE
    view_side: int = VIEW_SIDE
    pass_ratio: float = PASS_RATIO
    crop_fallback: bool = True
    min_face_slack: float = MIN_FACE_SLACK
    skip_found: bool = True
    dlib_landmarks: bool = True
    cnn_box: bool = False
    cascade: bool = True

    def plan(self, hw: tuple[int, int]) -> list[Pass]:
        """The passes this detector makes over a photo of ``hw`` (height, width)."""
        return scale_plan(hw, self.min_face, self.max_side, self.min_visible, self.view_side, self.pass_ratio)

    def detect(self, img: np.ndarray) -> list[Face]:
        """Every face in ``img`` (HxW or HxWx3 uint8), filtered by min_face and policy."""
        rgb = to_rgb_uint8(img)
        plan = self.plan(rgb.shape[:2])
        rows = self._search(rgb, plan, self.score_threshold)
        if not len(rows) and max(rgb.shape[:2]) <= RETRY_MAX_SIDE:
            rows = self._search(rgb, [self._retry_pass(plan, rgb.shape[:2])], YUNET_RETRY_SCORE)
        faces = select_faces([_yunet_face(r) for r in rows], self.min_face * self.min_face_slack, self.policy)
        if not faces and self.crop_fallback:
            faces = [f for f in [whole_image_face(rgb, lambda im, s: self._run([im], s)[0])] if f is not None]
        if self.dlib_landmarks:
            self._add_dlib_landmarks(rgb, faces)
        return faces

    def _add_dlib_landmarks(self, rgb: np.ndarray, faces: list[Face]) -> None:
        """dlib's 5 landmarks on dlib's own box (HOG's, in a window) for each face. Where HOG misses a
        near-frontal face, its chip is cut from YuNet's own points instead (landmarks stay None:
        :func:`facesearch.faces.chips.faces_to_chips`), or with ``cnn_box`` from dlib's CNN box as
        before issue 38; a turned face HOG misses gets landmarks on YuNet's box mapped to dlib's."""
        cnn_ok = cnn_faces(faces) if self.cnn_box else set()
        for k, face in enumerate(faces):
            if face.landmarks is not None:  # a crop read by its landmarks' quality has them already
                continue
            box = hog_box(rgb, face.box, cnn=k in cnn_ok)
            if box is None and not self.cnn_box and face.points5 is not None and near_frontal(face):
                continue
            face.landmarks = landmarks(rgb, box or dlib_box(face.box))

    def warmup(self) -> None:
        """Load the models now (e.g. in a worker-process initializer)."""
        yunet_model()
        if self.dlib_landmarks:
            hog_model()
            shape_predictor()
        if self.dlib_landmarks and self.cnn_box:
            cnn_model()

    def _retry_pass(self, plan: list[Pass], hw: tuple[int, int]) -> Pass:
        """The second look's one view: the photo ``view_side`` long, or at the min-face scale if
        that is smaller (the whole photo for most small ones): a crop's face is there, and each
        extra view at the lower score adds false faces. Not the plan's last view, which may be 6x
        smaller than that."""
        return Pass(min(plan[0].scale, self.view_side / max(hw)), False)

    def _search(self, rgb: np.ndarray, plan: list[Pass], score: float) -> np.ndarray:
        """Rows (photo pixels) of every pass, one per face after the merge."""
        # The later views first: the min-face pass then skips the faces they found (min_face_rows).
        # One view at a time, also on a GPU: a batch would pad each view to the largest.
        later = [self.pass_rows(rgb, plan, i, score) for i in range(1, len(plan))]
        first = self.min_face_rows(rgb, plan, score, later)
        # Whole views in plan order, then tiles: the order NMS breaks score ties in.
        rows = np.concatenate(later + [first] if plan[0].tiled else [first] + later)
        return _merge(rows) if len(plan) > 1 else rows

    def min_face_rows(self, rgb: np.ndarray, plan: list[Pass], score: float, later: list) -> np.ndarray:
        """Pass 0's rows given the ``later`` passes' rows; where those found a large face, only from
        strips around it: a face holds no smaller face inside it (a portrait's min-face pass is
        mostly its face)."""
        found_later = np.concatenate(later) if later else np.zeros((0, 15), np.float32)
        hole = _hole(found_later, rgb.shape[:2]) if later and self.skip_found else None
        if hole is None:
            return self.first_pass_rows(rgb, plan, score, found_later)
        # The min-face pass keeps faces below this wide (photo px); the next view finds the larger
        # ones. Those it cannot find are 1/KEEP_MARGIN as wide, so they fit the bands even if taller.
        margin = KEEP_MARGIN * self.min_visible / plan[1].scale
        strips = _strips(rgb.shape[:2], hole, margin)
        if sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in strips) > STRIP_SHARE * rgb.shape[0] * rgb.shape[1]:
            return self.first_pass_rows(rgb, plan, score, found_later)
        found = [np.zeros((0, 15), np.float32)]
        for x0, y0, x1, y1 in strips:
            rows = self._tiles(rgb[y0:y1, x0:x1], plan[0].scale, plan[1].scale, score)
            found.append(_shift_rows(rows, x0, y0))
        return np.concatenate(found)

    def first_pass_rows(self, rgb: np.ndarray, plan: list[Pass], score: float, found_later: np.ndarray) -> np.ndarray:
        """Pass 0 over the whole photo: a coarse look, then a window at each candidate at pass 0's
        scale (:mod:`~facesearch.faces.refine`), where that pays; else the pass itself."""
        s = plan[0].scale
        pixels = rgb.shape[0] * rgb.shape[1] * s * s
        if not self.cascade or len(plan) < 2 or score < self.score_threshold or pixels < refine.MIN_PIXELS:
            return self.pass_rows(rgb, plan, 0, score)
        c = s / refine.COARSE
        if max(rgb.shape[:2]) * c > self.max_side:
            rows = self._tiles(rgb, c, plan[1].scale, refine.LOW)
        else:
            rows = _scale_rows(self._run([_resize(rgb, c)], refine.LOW)[0], 1 / c)
        kept, cand = refine.candidates(rows, c, found_later, score, HOLE_SCORE)
        wins = refine.windows(cand, s, rgb.shape[:2])
        if sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in wins) * s * s > refine.MAX_SHARE * pixels:
            return self.pass_rows(rgb, plan, 0, score)  # a dense crowd: the windows would cost more
        found = refine.not_parts(self._window_rows(rgb, wins, cand, s, score), kept, found_later, HOLE_SCORE)
        return _merge(np.concatenate([kept, found]))

    def _window_rows(self, rgb: np.ndarray, wins: list, cand: np.ndarray, s: float, score: float) -> np.ndarray:
        """The faces each window, scaled by ``s``, finds near its own candidate (photo px)."""
        by_size: dict[tuple, list] = {}
        for (x0, y0, x1, y1), row in zip(wins, cand):
            img = _resize(rgb[y0:y1, x0:x1], s)
            by_size.setdefault(img.shape[:2], []).append((img, x0, y0, img.shape[1] / (x1 - x0), row))
        found = [np.zeros((0, 15), np.float32)]
        for (h, w), items in by_size.items():
            # Windows of one size share a call where that pays on a CPU: 4 of 64 px 0.28 ms each
            # against 0.55 alone, of 128 px 0.78 against 1.0; of 192 px 2.35 against 1.8.
            for (_, x0, y0, g, row), rows in zip(items, self._run([it[0] for it in items], score, batch=max(h, w) <= 128)):
                rows = _shift_rows(_scale_rows(rows, 1 / g), x0, y0)
                found.append(rows[refine.near(rows, row)])
        return np.concatenate(found)

    def pass_rows(self, rgb: np.ndarray, plan: list[Pass], i: int, score: float) -> np.ndarray:
        """Rows (photo pixels) of pass ``i`` of ``plan`` alone (bench/_passes.py weighs each)."""
        p = plan[i]
        if p.tiled:
            return self._tiles(rgb, p.scale, plan[i + 1].scale, score)
        return _scale_rows(self._run([_resize(rgb, p.scale)], score)[0], 1 / p.scale)

    def _run(self, images: list[np.ndarray], score: float, batch: bool = False) -> list[np.ndarray]:
        model = yunet_model()
        if batch or _on_gpu(model) or len(images) < 2:
            return model.detect_batch(images, score, YUNET_NMS)
        # On a CPU one image at a time: a batch pads every view to the largest.
        return [model.detect_batch([im], score, YUNET_NMS)[0] for im in images]

    def _tiles(self, rgb: np.ndarray, g: float, next_scale: float, score: float) -> np.ndarray:
        """Faces too small for the next pass, from tiles of ``rgb`` scaled by ``g``."""
        img = _resize(rgb, g)
        g = img.shape[1] / rgb.shape[1]
        tiles, keep = self.tile_grid(img.shape[:2], g, next_scale)
        if max(img.shape[:2]) <= self.max_side:  # a strip around a face (min_face_rows) small enough
            tiles = [(0, 0, img.shape[1], img.shape[0])]
        found = [np.zeros((0, 15), np.float32)]
        # Batching pays only on a GPU: on a CPU two 768 px tiles took 59 ms in one call, 51 in two.
        per_pass = 8 if _on_gpu(yunet_model()) else 1
        for i in range(0, len(tiles), per_pass):
            batch = tiles[i:i + per_pass]
            for (x0, y0, _, _), rows in zip(batch, self._run([img[y0:y1, x0:x1] for x0, y0, x1, y1 in batch], score)):
                found.append(_scale_rows(_shift_rows(rows[rows[:, 2] < keep], x0, y0), 1 / g))
        return np.concatenate(found)

    def tile_grid(self, hw: tuple[int, int], g: float, next_scale: float) -> tuple[list[tuple], float]:
        """The tiles of an image of ``hw`` (the photo scaled by ``g``) and the largest face (tile px)
        a tile keeps: the next view, at ``next_scale``, has the faces above."""
        # No face is larger than the photo's short side.
        keep = min(KEEP_MARGIN * self.min_visible / next_scale * g, min(hw))
        overlap = int(keep) + 1  # each kept face lies whole inside some tile
        return _tiles(hw, max(TILE, 2 * overlap), overlap), keep


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


def _hole(rows: np.ndarray, hw: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """The inside of the largest sure face in ``rows`` (x0, y0, x1, y1, photo px), if it is large
    enough that skipping it pays."""
    sure = rows[rows[:, 14] >= HOLE_SCORE]
    if not len(sure):
        return None
    x, y, w, h = sure[np.argmax(sure[:, 2] * sure[:, 3]), :4]
    box = (x + HOLE_SHRINK * w, y + HOLE_SHRINK * h, x + (1 - HOLE_SHRINK) * w, y + (1 - HOLE_SHRINK) * h)
    box = (max(box[0], 0), max(box[1], 0), min(box[2], hw[1]), min(box[3], hw[0]))
    big = (box[2] - box[0]) * (box[3] - box[1]) >= HOLE_MIN_SHARE * hw[0] * hw[1]
    return box if big else None


def _strips(hw: tuple[int, int], hole: tuple, margin: float) -> list[tuple[int, int, int, int]]:
    """Rectangles (x0, y0, x1, y1) covering every face up to ``margin`` px of an image of ``hw``
    that does not lie wholly inside ``hole``: such a face crosses one of the hole's sides, so it
    lies in the band beyond that side, widened ``margin`` px into the hole."""
    h, w = hw
    x0, y0, x1, y1 = hole
    m = math.ceil(margin)
    bands = [(0, 0, w, math.ceil(y0) + m) if y0 > 0 else None,
             (0, int(y1) - m, w, h) if y1 < h else None,
             (0, int(y0), math.ceil(x0) + m, math.ceil(y1)) if x0 > 0 else None,
             (int(x1) - m, int(y0), w, math.ceil(y1)) if x1 < w else None]
    clip = [(max(a, 0), max(b, 0), min(c, w), min(d, h)) for a, b, c, d in filter(None, bands)]
    return [r for r in clip if r[2] > r[0] and r[3] > r[1]]


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
    from facesearch.faces.yunet_decode import nms  # numpy NMS; imported where only large photos need it

    if len(rows) < 2:
        return rows
    keep = nms(np.round(rows[:, :4]), rows[:, 14], -1.0, YUNET_NMS)
    return rows[keep]


def _yunet_face(row: np.ndarray) -> Face:
    x, y, w, h = (float(v) for v in row[:4])
    return Face((x, y, x + w, y + h), float(row[14]), points5=row[4:14].reshape(5, 2).astype(np.float64))
