"""Synthetic faces drawn in code: identities that really differ, photos that really vary.

Used by the always-on tests and by ``make demo``, so nothing has to be
downloaded. Each :class:`SyntheticIdentity` is a set of seeded facial
parameters (face shape, skin, eyes, brows, nose, mouth, hair, glasses, beard);
:func:`render_face` draws one photo of that person with a random small pose,
expression, lighting and noise.

The drawing itself is :mod:`facesearch.photos.synthetic_draw`. Faces are frontal,
shaded like an ellipsoid and have dark eye sockets, white sclera, brows, a nose
shadow, darker lips and framing hair, which is what lets classic detectors (dlib
HOG, OpenCV Haar) fire on them; ``python bench/synthetic_detect.py`` measures
detection rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facesearch.photos.synthetic_draw import SUPERSAMPLE, Pose, draw_head, face_grid, random_pose

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
    s = size * SUPERSAMPLE
    pose = random_pose(rng) if pose_jitter else Pose(0.0, 1.0, 0.0, 0.0, 0.0)
    u, v, a_px = face_grid(identity, s, pose)
    light = _random_light(rng) if lighting else np.array([0.0, -0.3, 1.0]) / np.hypot(0.3, 1.0)
    img = _background(rng, s)
    person = draw_head(img, identity, u, v, a_px, light, rng, pose.yaw)
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


def group_photo(crops: list[Image.Image], rng: np.random.Generator, height: int = 112
                ) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A group photo of real face crops (2-3 people): each scaled to ``height`` px and pasted, apart,
    into a scene wide enough for all; the photo and each crop's box (in ``crops`` order)."""
    tiles = [c.convert("RGB").resize((max(1, round(c.width * height / c.height)), height)) for c in crops]
    width = int(sum(t.width for t in tiles) * 1.8) + 40
    return compose_photo(tiles, (width, int(height * 1.6)), rng)


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
