"""Where an XMP face region lies: the photo as stored, its EXIF orientation, and the box maths.

The Metadata Working Group's region schema (MWG 2.0, section 5.9) places regions on the image *as
stored*, before the EXIF Orientation is applied, with ``AppliedToDimensions`` giving the stored width
and height. facesearch detects faces on the EXIF-rotated image (:func:`facesearch.photos.load.load_image`),
so every region crosses between the two: :func:`to_display` on the way in, :func:`to_stored` on the
way out. Some tools write regions on the rotated image instead; their ``AppliedToDimensions`` then
names the rotated size, which :meth:`Frame.as_written` recognises, so both read back where they were.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

Box = tuple[float, float, float, float]  # (x1, y1, x2, y2)

ORIENTATION_TAG = 0x0112
_TRANSPOSED = frozenset({5, 6, 7, 8})  # orientations that swap width and height

# EXIF orientation -> where a stored point (u, v), normalised to 0..1, shows on the rotated image.
_FORWARD = {
    1: lambda u, v: (u, v), 2: lambda u, v: (1 - u, v), 3: lambda u, v: (1 - u, 1 - v),
    4: lambda u, v: (u, 1 - v), 5: lambda u, v: (v, u), 6: lambda u, v: (1 - v, u),
    7: lambda u, v: (1 - v, 1 - u), 8: lambda u, v: (v, 1 - u),
}
# Each mapping undoes itself except the two quarter turns, which undo each other.
_INVERSE = {**_FORWARD, 6: _FORWARD[8], 8: _FORWARD[6]}


@dataclass(frozen=True)
class Frame:
    """A photo's stored pixel size and EXIF orientation (1 = none, 2-8 as EXIF defines them)."""

    width: int
    height: int
    orientation: int = 1

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of the image facesearch sees: the stored one, rotated."""
        return (self.height, self.width) if self.orientation in _TRANSPOSED else (self.width, self.height)

    def as_written(self, applied_to: tuple[float, float] | None) -> "Frame":
        """The frame a region list was written in: this one, or the rotated image (orientation 1) when its
        ``AppliedToDimensions`` name the rotated size and not the stored one."""
        if applied_to is None or self.orientation not in _TRANSPOSED or self.width == self.height:
            return self
        w, h = applied_to
        if (round(w), round(h)) == self.display_size:
            dw, dh = self.display_size
            return replace(self, width=dw, height=dh, orientation=1)
        return self


def read_frame(path: str | Path) -> Frame:
    """The stored size and EXIF orientation of the photo at ``path`` (header only; raises OSError/ValueError)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        with Image.open(path) as im:
            try:
                orientation = int(im.getexif().get(ORIENTATION_TAG, 1))
            except Exception:  # broken EXIF: the loader keeps the pixels as stored too
                orientation = 1
            return Frame(im.width, im.height, orientation if orientation in _FORWARD else 1)


def to_display(frame: Frame, norm: Box) -> Box:
    """A box normalised to the stored image (0..1) -> pixels of the rotated image, clipped to it."""
    (u1, v1), (u2, v2) = (_FORWARD[frame.orientation](u, v) for u, v in ((norm[0], norm[1]), (norm[2], norm[3])))
    w, h = frame.display_size
    x1, x2 = sorted((_clip(u1) * w, _clip(u2) * w))
    y1, y2 = sorted((_clip(v1) * h, _clip(v2) * h))
    return (x1, y1, x2, y2)


def to_stored(frame: Frame, box: Box) -> Box:
    """Pixels of the rotated image -> a box normalised to the stored image (0..1), clipped to it."""
    w, h = frame.display_size
    corners = ((box[0] / w, box[1] / h), (box[2] / w, box[3] / h))
    (u1, v1), (u2, v2) = (_INVERSE[frame.orientation](_clip(u), _clip(v)) for u, v in corners)
    return (min(u1, u2), min(v1, v2), max(u1, u2), max(v1, v2))


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))
