"""Drawing one synthetic face: the geometry of the head and every facial part (layer 1).

The drawing is analytic: every part is a soft shape evaluated on a pixel grid
(supersampled :data:`SUPERSAMPLE` x), and pose is applied by transforming the grid, so
shapes stay smooth at any angle. :mod:`facesearch.photos.synthetic` decides who is drawn
and finishes the photo (background, lighting, noise); this module only paints the person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUPERSAMPLE = 2
_FRAC_HEAD_W = 0.28  # head half-width as a fraction of the image side
_FRAC_HEAD_H = 0.36


# ----------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Pose:
    """Where the head sits in the photo: in-plane rotation, scale, shift and a slight yaw."""

    angle: float  # radians, in-plane
    scale: float
    dx: float  # shift, fraction of the image side
    dy: float
    yaw: float  # shifts the inner features sideways, in head units


def random_pose(rng: np.random.Generator) -> Pose:
    """A small random pose: about +-8 deg, +-8 % scale, +-4 % shift."""
    return Pose(angle=float(np.deg2rad(rng.uniform(-8, 8))), scale=float(rng.uniform(0.92, 1.08)),
                 dx=float(rng.uniform(-0.04, 0.04)), dy=float(rng.uniform(-0.04, 0.04)),
                 yaw=float(rng.uniform(-0.08, 0.08)))


def face_grid(ident, s: int, pose: Pose) -> tuple[np.ndarray, np.ndarray, float]:
    """Head-ellipse coordinates (u, v) of every pixel of an ``s`` x ``s`` grid: the face is u^2 + v^2 < 1.

    ``ident`` is a :class:`~facesearch.photos.synthetic.SyntheticIdentity`; also returns the
    head half-width in pixels."""
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    cx, cy = s * (0.5 + pose.dx), s * (0.52 + pose.dy)
    c, sn = np.cos(pose.angle), np.sin(pose.angle)
    # Inverse transform: rotate the grid back so shapes are drawn upright.
    xr = (c * (x - cx) + sn * (y - cy)) / pose.scale
    yr = (-sn * (x - cx) + c * (y - cy)) / pose.scale
    a = s * _FRAC_HEAD_W * ident.face_width
    b = s * _FRAC_HEAD_H * ident.face_height
    return xr / a, yr / b, a * pose.scale


def _ellipse(u, v, cu, cv, ru, rv, soft=0.02):
    """Soft-edged ellipse mask in [0, 1]; ``soft`` is the edge width in (u, v) units."""
    d = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return np.clip((1.0 - d) * min(ru, rv) / soft + 0.5, 0.0, 1.0)


def _blob(u, v, cu, cv, su, sv):
    """Gaussian bump, peak 1."""
    return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def _paint(img, mask, color, alpha=1.0):
    """Blend ``color`` (RGB triple or HxWx3 array) over ``img`` in place, weighted by ``mask``."""
    box = _bbox(mask)
    if box is None:
        return
    color = np.asarray(color, dtype=np.float32)
    sub = img[box]
    sub += (mask[box] * alpha)[..., None] * ((color[box] if color.ndim == 3 else color) - sub)


def _shade(img, mask, strength):
    """Darken (strength > 0) or brighten (< 0) multiplicatively under ``mask``."""
    box = _bbox(mask)
    if box is not None:
        img[box] *= (1.0 - strength * mask[box])[..., None]


def _bbox(mask, eps=1e-3):
    """Slices of the box where ``mask`` matters; painting only there keeps rendering fast."""
    rows, cols = np.flatnonzero((mask > eps).any(1)), np.flatnonzero((mask > eps).any(0))
    if len(rows) == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


# ----------------------------------------------------------------- drawing


def draw_head(img, ident, u, v, a_px, light, rng, yaw):
    """Paint ``ident``'s head, hair, neck and features into the float image ``img`` in place.

    ``u, v`` come from :func:`face_grid`; returns the person's coverage mask (for alpha).
    """
    soft = 1.5 * SUPERSAMPLE / a_px  # ~1.5 output pixels of anti-aliasing
    head = _head_shape(ident, u, v, soft)
    hair, hair_rgb = _hair_back(ident, u, v, soft), _hair_color(ident, u, v, rng)
    _paint(img, hair, hair_rgb)
    neck = _draw_neck(img, ident, u, v, soft)
    ears = _draw_ears(img, ident, u, v, light, soft)
    _paint(img, head, np.array(ident.skin) * _lambert(u, v, light)[..., None])
    uf = u - yaw  # inner features slide sideways with yaw; the outline does not
    _draw_highlights(img, ident, uf, v, head, light, rng)
    _draw_eyes(img, ident, uf, v, soft, rng)
    _draw_brows(img, ident, uf, v, soft, rng)
    _draw_nose(img, ident, uf, v, light, soft)
    _draw_mouth(img, ident, uf, v, soft, rng)
    if ident.beard:
        _draw_beard(img, ident, uf, v, head, rng)
    _paint(img, _hair_front(ident, u, v, hair, soft), hair_rgb)
    if ident.glasses:
        _draw_glasses(img, ident, uf, v, soft)
    return np.maximum.reduce([hair, neck, ears, head])


def _head_shape(ident, u, v, soft):
    # The lower half tapers to the chin; a square jaw tapers less.
    lower = np.clip(v, 0.0, 1.0)
    width = 1.0 - (0.28 - 0.2 * ident.jaw) * lower**2 + 0.08 * ident.jaw * lower
    return _ellipse(u / width, v, 0.0, 0.0, 1.0, 1.0, soft)


def _lambert(u, v, light):
    """Ellipsoid shading: ambient plus diffuse from the light direction."""
    nz = np.sqrt(np.clip(1.0 - 0.8 * u**2 - 0.7 * v**2, 0.02, 1.0))
    n = np.stack([0.9 * u, 0.8 * v, nz], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return 0.55 + 0.55 * np.clip(n @ light, 0.0, 1.0)


def _hair_back(ident, u, v, soft):
    """Mask of all the hair seen behind the head (and, above the hairline, on it)."""
    style = ident.hair_style
    grow = {"curly": 1.32, "long": 1.14, "bald": 1.04}.get(style, 1.1)
    mask = _ellipse(u, v, 0.0, -0.12, grow, grow - 0.02, soft * 3)
    if style == "long":  # falls to the shoulders beside the neck
        mask = np.maximum(mask, _ellipse(u, v, 0.0, 0.7, 1.22, 0.95, soft * 3) * (v > -0.1))
    if style == "bald":
        mask *= np.clip((v + 0.35) / 0.2, 0.0, 1.0)  # only a fringe round the back
    return mask


def _hair_front(ident, u, v, back, soft):
    if ident.hair_style == "bald":
        return np.zeros_like(u)
    line = ident.hairline + 0.25 * u**2  # recedes at the temples
    if ident.hair_style == "fringe":
        brow = ident.eye_height - 0.2 - ident.brow_arch
        line = np.full_like(u, min(ident.hairline + 0.22, brow - 0.1))  # never hide the brows
    return back * np.clip((line - v) / (soft * 2) + 0.5, 0.0, 1.0)


def _hair_color(ident, u, v, rng):
    streak = 0.92 + 0.08 * np.sin(22 * u + 3 * v + rng.uniform(0, 6))
    return np.array(ident.hair, dtype=np.float32) * streak[..., None]


def _draw_neck(img, ident, u, v, soft):
    mask = _ellipse(u, v, 0.0, 1.25, 0.55, 0.75, soft) * (v > 0.3)
    mask = np.maximum(mask, _ellipse(u, v, 0.0, 2.25, 1.9, 0.75, soft))  # shoulders
    _paint(img, mask, np.array(ident.skin) * 0.62)
    return mask


def _draw_ears(img, ident, u, v, light, soft):
    masks = []
    for side in (-1, 1):
        mask = _ellipse(u, v, side * 0.98, 0.02, ident.ear_size * 0.7, ident.ear_size * 1.3, soft)
        _paint(img, mask, np.array(ident.skin) * (0.7 + 0.15 * side * light[0]))
        masks.append(mask)
    return np.maximum(*masks)


def _draw_highlights(img, ident, u, v, head, light, rng):
    """Additive sheen on forehead, cheekbones, nose and chin; it gives dark skin its relief."""
    lu, lv = light[0] * 0.25, light[1] * 0.2
    spots = (_blob(u, v, lu, -0.55 + lv, 0.35, 0.12)
             + 0.8 * _blob(u, v, 0.0 + lu * 0.3, ident.nose_length - 0.08, 0.05, 0.14)
             + 0.5 * _blob(u, v, lu, 0.82, 0.18, 0.07))
    for side in (-1, 1):
        spots = spots + 0.6 * _blob(u, v, side * 0.5 + lu, 0.12 + lv, 0.14, 0.08)
    strength = rng.uniform(30, 55) * (1.3 - np.mean(ident.skin) / 255)  # darker skin looks glossier
    img += (np.clip(spots, 0, 1) * head * strength)[..., None]


def _draw_eyes(img, ident, u, v, soft, rng):
    ey, ew = ident.eye_height, ident.eye_size
    open_ = rng.uniform(0.75, 1.05)
    gaze = rng.uniform(-0.25, 0.25) * ew
    for side in (-1, 1):
        ex = side * ident.eye_spacing
        _shade(img, _blob(u, v, ex, ey - 0.02, ew * 1.5, 0.11), 0.32)  # socket
        sclera = _ellipse(u, v, ex, ey, ew, ew * 0.42 * open_, soft)
        _paint(img, sclera, (236, 232, 226))
        iris = _ellipse(u, v, ex + gaze, ey, ew * 0.42, ew * 0.42 * 1.35, soft) * sclera
        _paint(img, iris, ident.iris)
        _paint(img, _ellipse(u, v, ex + gaze, ey, ew * 0.18, ew * 0.24, soft) * sclera, (10, 8, 8))
        lid = _ellipse(u, v, ex, ey - ew * 0.2, ew * 1.05, ew * 0.42 * open_ + 0.025, soft)
        _paint(img, lid * (v < ey - 0.005) * (1 - sclera * 0.7), (40, 28, 24), 0.85)


def _draw_brows(img, ident, u, v, soft, rng):
    lift = rng.uniform(-0.02, 0.03)
    for side in (-1, 1):
        du = (u - side * ident.eye_spacing) * side  # >0 towards the temple
        w = ident.eye_size * 1.35
        centre = ident.eye_height - 0.2 - lift + ident.brow_arch * (du / w) ** 2 - ident.brow_arch
        centre = centre + ident.brow_tilt * du / w
        band = np.clip((ident.brow_thickness * (1.0 - 0.4 * du / w) - np.abs(v - centre)) / soft + 0.5, 0, 1)
        band = band * np.clip((w - np.abs(du)) / (soft * 3) + 0.5, 0, 1)
        _paint(img, band, np.array(ident.hair) * 0.55 + 10, 0.92)


def _draw_nose(img, ident, u, v, light, soft):
    top, tip, w = ident.eye_height + 0.04, ident.nose_length, ident.nose_width
    along = np.clip((v - top) / (tip - top), 0.0, 1.0) * np.clip((tip + 0.05 - v) / 0.03, 0.0, 1.0)
    _shade(img, np.exp(-0.5 * (u / 0.035) ** 2) * along, -0.12)  # bridge highlight
    for side in (-1, 1):  # the side facing away from the light is darker
        away = np.clip(-side * light[0] * 2.0, -1.0, 1.0)
        flank = np.exp(-0.5 * ((u - side * w * (0.35 + 0.3 * along)) / 0.05) ** 2) * along
        _shade(img, flank, 0.2 + 0.12 * away)
        _shade(img, _ellipse(u, v, side * w * 0.62, tip + 0.005, w * 0.3, 0.045, soft * 2), 0.12)  # wing
        _shade(img, _ellipse(u, v, side * w * 0.3, tip + 0.035, w * 0.2, 0.022, soft), 0.6)  # nostril
    _shade(img, _blob(u, v, 0.0, tip - 0.015, w * 0.3, 0.04), -0.12)  # tip highlight
    _shade(img, _blob(u, v, 0.0, tip + 0.075, w * 0.8, 0.03), 0.3)  # shadow under the nose


def _draw_mouth(img, ident, u, v, soft, rng):
    my = ident.nose_length + 0.26 * (1.0 - ident.nose_length) + 0.02
    mw, lt = ident.mouth_width * rng.uniform(0.92, 1.08), ident.lip_thickness
    smile = rng.uniform(-0.02, 0.06)
    curve = my - smile * (1.0 - (u / mw) ** 2)  # corners up when smiling
    upper = _ellipse(u, v, 0.0, my - lt * 0.55, mw, lt * 0.8, soft)
    lower = _ellipse(u, v, 0.0, my + lt * 0.7, mw * 0.85, lt * 1.0, soft)
    _paint(img, np.maximum(upper, lower), ident.lip_color, 0.9)
    gap = np.clip((0.012 + rng.uniform(0, 0.02) - np.abs(v - curve)) / (soft * 1.5), 0, 1)
    _paint(img, gap * (np.abs(u) < mw * 1.02), (45, 20, 20), 0.9)
    _shade(img, _blob(u, v, 0.0, my + lt * 2.2, mw * 0.6, 0.03), 0.22)  # under the lower lip


def _draw_beard(img, ident, u, v, head, rng):
    mouth_y = ident.nose_length + 0.26 * (1.0 - ident.nose_length)
    lips = _ellipse(u, v, 0.0, mouth_y, ident.mouth_width * 1.05, ident.lip_thickness * 2.2, 0.2)
    mask = head * np.clip((v - ident.nose_length - 0.1) / 0.15, 0, 1) * (1.0 - lips)
    mask *= 0.8 + 0.2 * np.sin(40 * u + 30 * v + rng.uniform(0, 6))
    # A short beard: a tint between hair and shaded skin, so the jaw line still shows.
    _paint(img, mask, 0.5 * np.array(ident.hair) + 0.3 * np.array(ident.skin), 0.45)


def _draw_glasses(img, ident, u, v, soft):
    r = ident.eye_size * 1.5
    for side in (-1, 1):
        cu = side * ident.eye_spacing
        d = np.sqrt(((u - cu) / r) ** 2 + ((v - ident.eye_height) / (r * 0.75)) ** 2)
        _paint(img, np.clip((0.08 - np.abs(d - 1.0)) / (soft * 4), 0, 1), (25, 25, 30))
    inner = ident.eye_spacing - r
    bridge = np.clip((0.015 - np.abs(v - ident.eye_height + 0.04)) / soft, 0, 1) * (np.abs(u) < inner + 0.01)
    _paint(img, bridge, (25, 25, 30))
