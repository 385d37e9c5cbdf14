"""Face alignment: warp a face to a canonical crop ("chip") from its 5 landmarks.

The canonical chip is dlib's: ``dlib.get_face_chip(img, shape, 150, 0.25)``.
This module re-implements it in numpy, step for step, so that the dlib face
descriptor (the teacher) and our own embedder see the same pixels whether or
not dlib is installed. On real faces the output is bit-identical to dlib's
(see ``tests/test_detect.py`` and ``bench/detectors.py``).

Landmark order (identical to dlib's 5-point shape predictor,
``shape_predictor_5_face_landmarks.dat``); "left"/"right" are as seen in the
image, not the subject's:

    0: right eye, outer corner      (subject's left eye)
    1: right eye, inner corner
    2: left eye, outer corner       (subject's right eye)
    3: left eye, inner corner
    4: bottom of the nose, between the nostrils

What dlib does, and so what :func:`align_face` does:

1. Fit a least-squares similarity transform from the template points (scaled
   to the chip) to the landmarks, and turn it into dlib's ``chip_details``: a
   rotated rectangle of side ``size*scale - 1`` centred on the image of the chip
   centre.
2. If that rectangle is more than twice as large as the chip, build a
   ``pyramid_down<2>`` pyramid (5x5 binomial filter, integer arithmetic) of a
   crop around it, and sample from the smallest level still larger than the
   chip: plain bilinear sampling of a much larger image would alias.
3. Sample every chip pixel bilinearly; values are truncated to uint8 (not
   rounded) and samples whose 2x2 neighbourhood leaves the image are black.

The 112 px ArcFace chip (``arcface_112``, what SFace sees) is OpenCV's instead:
:func:`align_sface` replays ``cv2.FaceRecognizerSF.alignCrop`` from YuNet's 5 points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facesearch.core.errors import BadImageError, FacesearchError

__all__ = [
    "ARCFACE_TEMPLATE",
    "INPUT_SIZE",
    "TEMPLATES",
    "Template",
    "align_face",
    "align_sface",
    "crop_box",
    "estimate_similarity",
    "sface_transform",
    "to_rgb_uint8",
]


@dataclass(frozen=True)
class Template:
    """Where the 5 landmarks go in a chip: unit-square points plus a padding.

    ``points(size)`` gives the pixel targets in a ``size`` x ``size`` chip,
    computed with dlib's formula ``(padding + p) / (2 * padding + 1) * size``.
    """

    unit_points: tuple[tuple[float, float], ...]
    padding: float
    size: int

    def points(self, size: int | None = None) -> np.ndarray:
        size = self.size if size is None else size
        unit = np.asarray(self.unit_points, dtype=np.float64)
        return (self.padding + unit) / (2 * self.padding + 1) * size


# dlib/image_transforms/interpolation.h, get_face_chip_details(), 5-part branch.
_DLIB5_UNIT = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)

# Where YuNet's 5 points (eye centres, nose tip, mouth corners) fall in dlib's 150 px chip: the mean
# over 932 train/ faces that both found (tools/fit_yunet_box.py). A chip warped from YuNet's own
# points onto these is dlib's chip without dlib's detector or shape predictor: one alignment.
_YUNET5_IN_DLIB_CHIP = ((47.35, 45.53), (101.51, 46.18), (73.01, 79.12), (51.13, 101.73), (96.97, 102.79))

TEMPLATES: dict[str, Template] = {
    "dlib5_150_p25": Template(_DLIB5_UNIT, padding=0.25, size=150),
    # Its points are YuNet's (``Face.points5``), not dlib's landmarks: see faces/chips.py.
    "yunet5_150": Template(tuple((x / 150, y / 150) for x, y in _YUNET5_IN_DLIB_CHIP), padding=0.0, size=150),
}


def to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Return ``img`` as a C-contiguous HxWx3 uint8 array (grey replicated, alpha dropped)."""
    img = np.asarray(img)
    hint = "pass a decoded image as a uint8 numpy array (see facesearch.photos.load.load_array)"
    if img.dtype != np.uint8:
        raise BadImageError(f"expected a uint8 image array, got dtype {img.dtype}", hint)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise BadImageError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {img.shape}", hint)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation).

    Returns the 2x3 matrix ``M`` minimising ``sum |M @ [x, y, 1] - dst|^2``; no
    reflection. In 2-D the similarity ``[[a, -b], [b, a]] + t`` is linear in
    ``(a, b, tx, ty)``, so the linear least-squares solution is the exact optimum
    (the same one Umeyama's method, which dlib uses, finds).
    """
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError("need two equal-length point sets of at least 2 points")
    n = len(src)
    a = np.zeros((2 * n, 4))
    a[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    a[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    (ca, cb, tx, ty), *_ = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)
    return np.array([[ca, -cb, tx], [cb, ca, ty]])


def align_face(
    img: np.ndarray,
    landmarks: np.ndarray,
    template: str = "dlib5_150_p25",
    size: int = 150,
) -> np.ndarray:
    """Warp the face with 5 ``landmarks`` (x, y; order in the module doc) to a chip.

    Returns a ``size`` x ``size`` x 3 uint8 array matching
    ``dlib.get_face_chip(img, shape, size, padding)`` for the named template.
    Greyscale input is replicated to three channels.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown alignment template {template!r}; known: {sorted(TEMPLATES)}")
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"expected 5x2 landmarks, got shape {pts.shape}")
    chip_to_img = estimate_similarity(TEMPLATES[template].points(size), pts)
    return _extract_chip(to_rgb_uint8(img), *_chip_details(chip_to_img, size), size)


def crop_box(
    img: np.ndarray,
    box: tuple[float, float, float, float],
    size: int,
    margin: float = 0.0,
) -> np.ndarray:
    """Square crop around ``box`` (x1, y1, x2, y2), resized to ``size`` x ``size``.

    Used for faces without landmarks. The square has side ``max(w, h) * (1 + 2 *
    margin)`` and the box's centre; parts outside the image are black, as in
    dlib's chips. Returns HxWx3 uint8.
    """
    rgb = to_rgb_uint8(img)
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1 + 2 * margin)
    scale = size / side
    # Map the square's corners (in continuous pixel-edge coordinates) onto the chip.
    left, top = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
    m = np.array([[scale, 0.0, -left * scale - 0.5 + 0.5 * scale],
                  [0.0, scale, -top * scale - 0.5 + 0.5 * scale]])
    src = rgb
    if scale < 0.5:  # shrink with area averaging first so the warp does not alias
        f = 1.0 / (2 * scale)
        h, w = rgb.shape[:2]
        nw, nh = max(1, round(w / f)), max(1, round(h / f))
        src = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = w / nw, h / nh
        m = m @ np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


# --------------------------------------------------------------------------------------
# dlib's chip extraction, ported. Rectangles are (left, top, right, bottom) with dlib's
# inclusive convention: width = right - left + 1.


def _chip_details(chip_to_img: np.ndarray, size: int) -> tuple[tuple[float, ...], float]:
    """dlib ``chip_details(chip_points, img_points, dims)``: the chip's rect and angle."""
    a, b = chip_to_img[0, 0], chip_to_img[1, 0]
    angle = math.atan2(b, a)
    scale = math.hypot(a, b)
    cx, cy = chip_to_img @ np.array([size / 2.0, size / 2.0, 1.0])
    half = (size * scale - 1) / 2  # centered_drect() shrinks the side by one
    return (cx - half, cy - half, cx + half, cy + half), angle


def _rect_area(r: tuple[float, ...]) -> float:
    left, top, right, bottom = r
    if left > right or top > bottom:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rect_down(r: tuple[float, ...]) -> tuple[float, ...]:
    """``pyramid_down<2>::rect_down``: where a rectangle lands one level down."""
    left, top, right, bottom = r
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _rotated_corners(r: tuple[float, ...], angle: float) -> np.ndarray:
    """tl, tr, bl, br corners of ``r`` rotated by ``angle`` about its centre."""
    left, top, right, bottom = r
    c = np.array([(left + right) / 2, (top + bottom) / 2])
    corners = np.array([[left, top], [right, top], [left, bottom], [right, bottom]])
    cos, sin = math.cos(angle), math.sin(angle)
    rot = np.array([[cos, -sin], [sin, cos]])
    return (corners - c) @ rot.T + c


def _crop_bounds(rect, angle, grow: float, shape) -> tuple[int, int, int, int]:
    """The integer crop of the image the pyramid is built from (dlib's ``bounding_box``)."""
    corners = _rotated_corners(rect, angle)
    h, w = shape[:2]
    left = max(corners[:, 0].min() - grow, 0.0)
    top = max(corners[:, 1].min() - grow, 0.0)
    right = min(corners[:, 0].max() + grow, w - 1.0)
    bottom = min(corners[:, 1].max() + grow, h - 1.0)
    # drectangle -> rectangle rounds each edge to the nearest integer.
    return tuple(int(math.floor(v + 0.5)) for v in (left, top, right, bottom))


def _pyramid_down(img: np.ndarray) -> np.ndarray:
    """``pyramid_down<2>`` on an RGB image: 5x5 [1 4 6 4 1] filter, keep every 2nd pixel.

    Output pixel (r, c) is the filter centred on input (2r+2, 2c+2), integer-divided
    by 256. float32 filtering is exact here: every partial sum is an integer < 2**24.
    """
    h, w = img.shape[:2]
    if h <= 8 or w <= 8:
        return np.zeros((0, 0, 3), np.uint8)
    oh, ow = (h - 3) // 2, (w - 3) // 2
    k = np.array([1, 4, 6, 4, 1], np.float32)
    full = cv2.sepFilter2D(img.astype(np.float32), -1, k, k, borderType=cv2.BORDER_REPLICATE)
    return (full[2 : 2 + 2 * oh : 2, 2 : 2 + 2 * ow : 2] // 256).astype(np.uint8)


def _extract_chip(img: np.ndarray, rect, angle: float, size: int) -> np.ndarray:
    """dlib ``extract_image_chip`` for one chip: pyramid level choice plus bilinear warp."""
    n_pixels = size * size
    depth, grow, down = 0, 2.0, _rect_down(rect)
    while _rect_area(down) > n_pixels:
        down, depth, grow = _rect_down(down), depth + 1, grow * 2 + 2
    bl, bt, br, bb = _crop_bounds(rect, angle, grow, img.shape)
    if bl > br or bt > bb:  # the chip lies wholly outside the image
        return np.zeros((size, size, 3), np.uint8)
    level_img = img[bt : bb + 1, bl : br + 1]
    rect = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
    while _rect_area(_rect_down(rect)) > n_pixels:
        level_img, rect = _pyramid_down(level_img), _rect_down(rect)
    corners = _rotated_corners(rect, angle)
    # Chip corners (0,0), (size-1,0), (0,size-1) map onto the rotated tl, tr, bl corners.
    origin = corners[0]
    ex = (corners[1] - origin) / (size - 1)
    ey = (corners[2] - origin) / (size - 1)
    return _sample_bilinear(level_img, origin, ex, ey, size)


def _sample_bilinear(img, origin, ex, ey, size: int) -> np.ndarray:
    """Sample ``img`` at ``origin + c*ex + r*ey``; truncate to uint8; black outside."""
    h, w = img.shape[:2]
    if h < 2 or w < 2:
        return np.zeros((size, size, 3), np.uint8)
    steps = np.arange(size, dtype=np.float64)
    cols, rows = steps[None, :], steps[:, None]
    px = origin[0] + cols * ex[0] + rows * ey[0]
    py = origin[1] + cols * ex[1] + rows * ey[1]
    left, top = np.floor(px), np.floor(py)
    inside = ((left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)).ravel()
    # Gather by flat index from the (h*w, 3) view, then convert: converting the whole source image
    # would dominate, and 2-D fancy indexing took twice as long (~5 ms a chip: a warm query's align).
    flat = img.reshape(h * w, -1)
    at = np.where(inside, (top * w + left).ravel(), 0).astype(np.intp)
    tl, tr = flat.take(at, axis=0).astype(np.float64), flat.take(at + 1, axis=0).astype(np.float64)
    bl, br = flat.take(at + w, axis=0).astype(np.float64), flat.take(at + w + 1, axis=0).astype(np.float64)
    fx, fy = (px - left).reshape(-1, 1), (py - top).reshape(-1, 1)
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)  # dlib's order of operations
    out = np.clip(val, 0, 255).astype(np.uint8)  # dlib truncates: static_cast
    out[~inside] = 0
    return out.reshape(size, size, -1)


# --------------------------------------------------------------------------------------
# The ArcFace chip SFace sees: OpenCV's FaceRecognizerSF.alignCrop, replayed.

INPUT_SIZE = 112  # the ArcFace chip's side, SFace's input
# The 5 points (right eye, left eye, nose tip, right and left mouth corner, as seen in the
# image) that OpenCV's alignCrop maps a face onto: InsightFace's ArcFace template for 112x112.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
# OpenCV hard-codes the template mean rounded to 4 decimals (the true mean differs by ~2e-5);
# using its constant keeps our transform equal to alignCrop's.
_TEMPLATE_MEAN = np.array([56.0262, 71.9008], dtype=np.float32)


def _rotation(a: np.ndarray) -> tuple[np.ndarray, float]:
    """Umeyama's rotation for covariance ``a`` and its trace(S D), as OpenCV picks them."""
    u, s, vt = np.linalg.svd(a)
    d = np.array([1.0, -1.0 if np.linalg.det(a) < 0 else 1.0])  # no reflections
    rank = int(np.sum(s > s.max() * 2 * np.finfo(np.float32).tiny))
    if rank == 1:
        # OpenCV's degenerate branch (collinear landmarks): a reflection only if U V^T is one.
        flip = np.linalg.det(u) * np.linalg.det(vt) <= 0
        return u @ np.diag([1.0, -1.0 if flip else 1.0]) @ vt, float(s @ d)
    return u @ np.diag(d) @ vt, float(s @ d)


def sface_transform(landmarks5: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (float64) that alignCrop warps with: landmarks -> template.

    Replays OpenCV's ``getSimilarityTransformMatrix`` (Umeyama least squares), including its
    float32 means and products, so the matrix matches OpenCV's to ~1e-15 and the warped chips
    come out equal.
    """
    src = np.asarray(landmarks5, dtype=np.float32).reshape(5, 2)
    # Sequential float32 sums, as the C++ writes them (numpy's pairwise sum may round differently).
    src_mean = (src[0] + src[1] + src[2] + src[3] + src[4]) / np.float32(5)
    src_d, dst_d = src - src_mean, ARCFACE_TEMPLATE - _TEMPLATE_MEAN
    # float32 products accumulated in double, divided by 5 in double: OpenCV's A and variances.
    a = (dst_d[:, :, None] * src_d[:, None, :]).astype(np.float64).sum(axis=0) / 5
    var = (src_d * src_d).astype(np.float64).sum() / 5
    rot, trace_sd = _rotation(a)
    scale = 1.0 / var * trace_sd if var > 0 else 0.0  # OpenCV: 1/(var1+var2) * trace(S D)
    shift = _TEMPLATE_MEAN.astype(np.float64) - scale * (rot @ src_mean.astype(np.float64))
    return np.hstack([scale * rot, shift[:, None]])


def align_sface(image_rgb: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """The 112 x 112 x 3 uint8 RGB chip OpenCV's ``FaceRecognizerSF.alignCrop`` cuts.

    ``landmarks5`` is (5, 2) x, y in YuNet/OpenCV order: right eye, left eye, nose tip, right
    mouth corner, left mouth corner (right/left as seen in the image). Greyscale and RGBA
    input give the chip of their RGB equivalent.
    """
    pts = np.asarray(landmarks5, dtype=np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise FacesearchError(f"align_sface wants 5 finite (x, y) landmarks, got shape {pts.shape}")
    # cv2's fixed-point bilinear warp is what alignCrop uses: only it gives the same pixels.
    return cv2.warpAffine(to_rgb_uint8(image_rgb), sface_transform(pts), (INPUT_SIZE, INPUT_SIZE),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
