"""Synthetic faces drawn in code: identities that really differ, photos that really vary.

Used by the always-on tests and by ``make demo``, so nothing has to be
downloaded. Each :class:`SyntheticIdentity` is a set of seeded facial
parameters (face shape, skin, eyes, brows, nose, mouth, hair, glasses, beard);
:func:`render_face` draws one photo of that person with a random small pose,
expression, lighting and noise.

The drawing is analytic: every part is a soft shape evaluated on a pixel grid
(supersampled 2x), and pose is applied by transforming the grid, so shapes stay
smooth at any angle. Faces are frontal, shaded like an ellipsoid and have dark
eye sockets, white sclera, brows, a nose shadow, darker lips and framing hair,
which is what lets classic detectors (dlib HOG, OpenCV Haar) fire on them; run
``python -m facesearch.photos.synthetic`` to measure detection rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

_SUPERSAMPLE = 2
_FRAC_HEAD_W = 0.28  # head half-width as a fraction of the image side
_FRAC_HEAD_H = 0.36

# Light to dark; an identity's skin is a jittered mix of two neighbours.
_SKIN = np.array([(250, 222, 200), (236, 196, 160), (214, 160, 118), (170, 112, 74),
                  (130, 86, 58), (100, 66, 48)], dtype=np.float32)
_HAIR = np.array([(20, 16, 14), (60, 40, 28), (110, 72, 40), (200, 160, 90),
                  (150, 60, 30), (150, 150, 150), (235, 225, 200)], dtype=np.float32)
_IRIS = np.array([(70, 45, 25), (40, 28, 20), (70, 110, 160), (80, 120, 80),
                  (110, 110, 120)], dtype=np.float32)
HAIR_STYLES = ("short", "long", "bald", "fringe", "curly")


@dataclass(frozen=True)
class SyntheticIdentity:
    """Per-person facial parameters; all lengths are in head-ellipse units."""

    name: str
    face_width: float  # head half-width multiplier
    face_height: float  # head half-height multiplier
    jaw: float  # 0 = oval chin, 1 = square jaw
    skin: tuple[float, float, float]
    eye_spacing: float  # eye centre |u|
    eye_size: float  # sclera half-width
    eye_height: float  # eye line v
    iris: tuple[float, float, float]
    brow_arch: float
    brow_thickness: float
    brow_tilt: float
    nose_length: float  # nose tip v
    nose_width: float
    mouth_width: float
    lip_thickness: float
    lip_color: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: str
    hairline: float  # v of the hairline at the centre
    glasses: bool
    beard: bool
    ear_size: float

    @classmethod
    def random(cls, seed: int | np.random.Generator, name: str | None = None) -> "SyntheticIdentity":
        """Draw a person from a seed (int) or a generator; same seed, same person."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        skin = _mix(rng, _SKIN, jitter=10)
        hair = _mix(rng, _HAIR, jitter=12) if rng.random() < 0.85 else _pick(rng, _HAIR)
        style = str(rng.choice(HAIR_STYLES, p=[0.32, 0.25, 0.1, 0.18, 0.15]))
        lips = np.clip(np.array(skin) * (0.78, 0.52, 0.52) + rng.normal(0, 8, 3), 0, 255)
        return cls(
            name=name or f"person_{rng.integers(1 << 30):09d}",
            face_width=float(rng.uniform(0.86, 1.05)),
            face_height=float(rng.uniform(0.92, 1.08)),
            jaw=float(rng.uniform(0, 1)),
            skin=skin,
            eye_spacing=float(rng.uniform(0.35, 0.45)),
            eye_size=float(rng.uniform(0.15, 0.21)),
            eye_height=float(rng.uniform(-0.2, -0.08)),
            iris=_mix(rng, _IRIS, jitter=10),
            brow_arch=float(rng.uniform(0.0, 0.09)),
            brow_thickness=float(rng.uniform(0.035, 0.075)),
            brow_tilt=float(rng.uniform(-0.06, 0.08)),
            nose_length=float(rng.uniform(0.22, 0.36)),
            nose_width=float(rng.uniform(0.11, 0.19)),
            mouth_width=float(rng.uniform(0.22, 0.36)),
            lip_thickness=float(rng.uniform(0.035, 0.07)),
            lip_color=tuple(float(c) for c in lips),
            hair=hair,
            hair_style=style,
            hairline=float(rng.uniform(-0.72, -0.55)) if style != "bald" else -0.95,
            glasses=bool(rng.random() < 0.25),
            beard=bool(rng.random() < 0.18),
            ear_size=float(rng.uniform(0.14, 0.22)),
        )


def make_identities(n: int, seed: int = 0) -> list[SyntheticIdentity]:
    """``n`` distinct people named ``person_00`` ... drawn from one seed."""
    rng = np.random.default_rng(seed)
    return [SyntheticIdentity.random(rng, name=f"person_{i:02d}") for i in range(n)]


def render_face(identity: SyntheticIdentity, rng: np.random.Generator, size: int = 150,
                pose_jitter: bool = True, lighting: bool = True, alpha: bool = False) -> Image.Image:
    """Draw one ``size`` x ``size`` RGB photo of ``identity``.

    ``pose_jitter`` adds a small random rotation (about +-8 deg), scale, shift and
    yaw; ``lighting`` a random light direction, colour cast and exposure. Noise,
    expression and background always vary, so two photos are never identical.
    With ``alpha=True`` the image is RGBA and the alpha channel covers the person
    (head, hair, neck), which :func:`compose_photo` uses to cut them out.
    """
    s = size * _SUPERSAMPLE
    pose = _random_pose(rng) if pose_jitter else _Pose(0.0, 1.0, 0.0, 0.0, 0.0)
    u, v, a_px = _face_grid(identity, s, pose)
    light = _random_light(rng) if lighting else np.array([0.0, -0.3, 1.0]) / np.hypot(0.3, 1.0)
    img = _background(rng, s)
    person = _draw_head(img, identity, u, v, a_px, light, rng, pose.yaw)
    out = Image.fromarray(_finish(img, rng, lighting)).resize((size, size), Image.LANCZOS)
    if alpha:
        mask = Image.fromarray((person * 255).astype(np.uint8)).resize((size, size), Image.LANCZOS)
        out.putalpha(mask)
    return out


def make_identity_folder(root: str | Path, n_people: int = 8, per_person: int = 10,
                         size: int = 150, seed: int = 0, ext: str = "png") -> Path:
    """Write ``root/<person>/<i>.<ext>`` for ``n_people`` synthetic people and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for identity in make_identities(n_people, seed=seed):
        person_dir = root / identity.name
        person_dir.mkdir(parents=True, exist_ok=True)
        for i in range(per_person):
            render_face(identity, rng, size=size).save(person_dir / f"{i:03d}.{ext}")
    return root


def compose_photo(faces: list[Image.Image], canvas_size: tuple[int, int] = (640, 480),
                  rng: np.random.Generator | None = None,
                  ) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Paste ``faces`` into a textured scene without overlap.

    RGBA faces (``render_face(..., alpha=True)``) are cut out along their alpha;
    other faces are blended in through a feathered oval so the square tile edge
    does not show. Returns the RGB photo and one box ``(x0, y0, x1, y1)`` per
    face (the pasted tile, in input order; exclusive right/bottom edge).
    Raises ``ValueError`` when the faces cannot fit.
    """
    rng = rng if rng is not None else np.random.default_rng()
    w, h = canvas_size
    canvas = Image.fromarray(_scene(rng, w, h))
    boxes = _place_boxes([f.size for f in faces], w, h, rng)
    for face, box in zip(faces, boxes):
        mask = face.getchannel("A") if face.mode == "RGBA" else _head_mask(face.size)
        canvas.paste(face.convert("RGB"), box[:2], mask)
    return canvas, boxes


# ----------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Pose:
    angle: float  # radians, in-plane
    scale: float
    dx: float  # shift, fraction of the image side
    dy: float
    yaw: float  # shifts the inner features sideways, in head units


def _random_pose(rng: np.random.Generator) -> _Pose:
    return _Pose(angle=float(np.deg2rad(rng.uniform(-8, 8))), scale=float(rng.uniform(0.92, 1.08)),
                 dx=float(rng.uniform(-0.04, 0.04)), dy=float(rng.uniform(-0.04, 0.04)),
                 yaw=float(rng.uniform(-0.08, 0.08)))


def _face_grid(ident: SyntheticIdentity, s: int, pose: _Pose) -> tuple[np.ndarray, np.ndarray, float]:
    """Head-ellipse coordinates (u, v) of every pixel: the face is u^2 + v^2 < 1."""
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


def _draw_head(img, ident, u, v, a_px, light, rng, yaw):
    soft = 1.5 * _SUPERSAMPLE / a_px  # ~1.5 output pixels of anti-aliasing
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


# ----------------------------------------------------------------- photo finish


def _random_light(rng: np.random.Generator) -> np.ndarray:
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.1), 1.0])
    return light / np.linalg.norm(light)


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    c0, c1 = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (t[None, :] - 0.5) * np.cos(angle) + (t[:, None] - 0.5) * np.sin(angle), 0, 1)
    return (c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]).astype(np.float32)


def _finish(img: np.ndarray, rng: np.random.Generator, lighting: bool) -> np.ndarray:
    if lighting:
        img *= rng.uniform(0.9, 1.1, 3).astype(np.float32)  # colour cast
        img = (img - 128.0) * rng.uniform(0.8, 1.15) + 128.0 + rng.uniform(-25, 25)
    img += rng.normal(0.0, rng.uniform(2.0, 7.0), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _scene(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A room-ish background: a gradient, a few soft rectangles, fine noise."""
    img = np.asarray(Image.fromarray(_finish(_background(rng, max(w, h)), rng, False)).resize((w, h)),
                     dtype=np.float32).copy()
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(40, w // 2)), y0 + int(rng.integers(40, h // 2))
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * 0.5 + rng.uniform(30, 230, 3) * 0.5
    img += rng.normal(0.0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _head_mask(size: tuple[int, int]) -> Image.Image:
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    d = np.sqrt(((x - w / 2) / (0.45 * w)) ** 2 + ((y - 0.52 * h) / (0.5 * h)) ** 2)
    return Image.fromarray((np.clip((1.0 - d) / 0.12, 0, 1) * 255).astype(np.uint8))


def _place_boxes(sizes, w, h, rng, tries=400):
    """Non-overlapping tile positions: random rejection sampling, largest first."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i][0] * sizes[i][1])
    boxes: dict[int, tuple[int, int, int, int]] = {}
    for i in order:
        fw, fh = sizes[i]
        if fw > w or fh > h:
            raise ValueError(f"face {i} ({fw}x{fh}) is larger than the canvas {w}x{h}")
        for _ in range(tries):
            x, y = int(rng.integers(0, w - fw + 1)), int(rng.integers(0, h - fh + 1))
            box = (x, y, x + fw, y + fh)
            if not any(_overlap(box, other) for other in boxes.values()):
                boxes[i] = box
                break
        else:
            raise ValueError(f"could not fit {len(sizes)} faces into a {w}x{h} canvas without overlap")
    return [boxes[i] for i in range(len(sizes))]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _mix(rng, palette, jitter):
    i = int(rng.integers(0, len(palette) - 1))
    t = rng.random()
    c = palette[i] * (1 - t) + palette[i + 1] * t + rng.normal(0, jitter, 3)
    return tuple(float(x) for x in np.clip(c, 0, 255))


def _pick(rng, palette):
    return tuple(float(x) for x in palette[int(rng.integers(0, len(palette)))])


# ----------------------------------------------------------------- measuring detectability


def _detection_rates(n: int = 100, size: int = 150, seed: int = 0, per_photo: int = 4) -> dict[str, float | None]:
    """Share of rendered faces found by dlib HOG and OpenCV Haar, as tiles and in composed photos.

    A composed face counts as found when a detection's centre lies in its tile.
    Haar is None where OpenCV has no ``CascadeClassifier`` (OpenCV 5 moved it out).
    """
    import dlib  # dev-only measurement; not a dependency of the module

    hog = dlib.get_frontal_face_detector()
    haar = _haar_or_none()
    ids, rng = make_identities(max(1, n // 5), seed=seed), np.random.default_rng(seed)
    faces = [render_face(ids[i % len(ids)], rng, size=size, alpha=True) for i in range(n)]
    tiles = [np.asarray(f.convert("RGB")) for f in faces]
    photos = [compose_photo(faces[k:k + per_photo], (640, 480), rng) for k in range(0, n, per_photo)]

    def found(detect) -> tuple[float, float]:
        tile_rate = np.mean([len(detect(t)) > 0 for t in tiles])
        hits = [any(b[0] <= (d[0] + d[2]) / 2 <= b[2] and b[1] <= (d[1] + d[3]) / 2 <= b[3] for d in dets)
                for photo, boxes in photos for dets in [detect(np.asarray(photo))] for b in boxes]
        return float(tile_rate), float(np.mean(hits))

    out: dict[str, float | None] = {}
    for up in (0, 1):
        det = lambda a, up=up: [(r.left(), r.top(), r.right(), r.bottom()) for r in hog(a, up)]  # noqa: E731
        out[f"hog_upsample{up}_tile"], out[f"hog_upsample{up}_photo"] = found(det)
    if haar is None:
        out["haar_tile"] = out["haar_photo"] = None
    else:
        out["haar_tile"], out["haar_photo"] = found(haar)
    return out


def _haar_or_none():
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        return None
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(rgb: np.ndarray):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return [(x, y, x + w, y + h) for x, y, w, h in cascade.detectMultiScale(grey, 1.1, 5, minSize=(40, 40))]

    return detect


if __name__ == "__main__":  # python -m facesearch.photos.synthetic [n] [size]
    import sys

    n_faces = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    side = int(sys.argv[2]) if len(sys.argv) > 2 else 150
    for key, rate in _detection_rates(n_faces, side).items():
        print(f"{key:22s} {'n/a' if rate is None else f'{rate:.2f}'}")
