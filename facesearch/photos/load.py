"""Decoding photos (layer 1): every file becomes a clean RGB image or one typed error.

:func:`load_image` always returns a fully decoded RGB image or raises
:class:`~facesearch.core.errors.BadImageError`, so a batch can skip a bad file and go on.
Cheap checks (file kind, size, header's pixel count) come before any pixel is decoded.
Whole-photo hashes (:func:`dhash`) live here too: they are computed from decoded pixels.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facesearch.core.errors import BadImageError, FacesearchError, one_line

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 80_000_000
"""Largest decoded image (width*height) accepted; override with ``FACESEARCH_MAX_PIXELS``."""

_MAX_PIXELS_ENV = "FACESEARCH_MAX_PIXELS"

# Only these Pillow decoders are ever tried. Besides matching scan.IMAGE_EXTS this keeps
# untrusted files away from plugins such as EPS, which shells out to Ghostscript.
# (Camera multi-picture JPEGs still work: the JPEG opener hands them to MPO.)
_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM", "HEIF", "AVIF")

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


# --------------------------------------------------------------------------- decoding


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel cap to use: ``max_pixels`` if given, else ``$FACESEARCH_MAX_PIXELS``, else the default."""
    if max_pixels is not None:
        value, source = max_pixels, "max_pixels"
    else:
        raw = os.environ.get(_MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            value, source = int(raw.replace("_", "")), _MAX_PIXELS_ENV
        except ValueError:
            value, source = -1, _MAX_PIXELS_ENV
    if value <= 0:
        raise FacesearchError(
            f"invalid pixel limit {source}={value!r}",
            hint=f"use a positive integer, e.g. {_MAX_PIXELS_ENV}={DEFAULT_MAX_PIXELS}",
        )
    return value


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB image with its EXIF orientation applied.

    The first frame is used for animated/multi-page files; transparency is
    composited on white; 16-bit and float greyscale are scaled to 0..255.
    The size is checked from the header before any pixel is decoded, so a
    decompression bomb fails fast. The image is fully decoded, so truncation
    is detected here rather than later.

    Raises:
        BadImageError: missing, unreadable, empty, not an image, corrupt or
            truncated, or more than ``max_pixels`` pixels (see :func:`max_pixels_limit`).
    """
    limit = max_pixels_limit(max_pixels)
    path = Path(path)
    _register_heif()
    try:
        _check_regular_file(path)
        with open(path, "rb") as fp:
            image = _decode(fp, path, limit)
        _apply_exif_orientation(image, path)
        return to_rgb(image)
    except BadImageError:
        raise
    except Exception as exc:  # anything Pillow or the OS throws becomes one typed error
        raise _classify(path, exc) from exc


def load_array(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Like :func:`load_image` but return an ``HxWx3`` ``uint8`` RGB array."""
    return np.asarray(load_image(path, max_pixels))


@functools.cache
def _register_heif() -> bool:
    """HEIC/HEIF (iPhone photos) through pillow-heif, registered on first decode (40 ms of import)."""
    try:
        import pillow_heif
    except ImportError:
        log.warning("pillow-heif is not installed: HEIC/HEIF photos will be reported as bad files")
        return False
    pillow_heif.register_heif_opener()
    return True


def _check_regular_file(path: Path) -> None:
    if (problem := regular_file_problem(path, "image")) is not None:
        raise _bad(path, *problem)


def regular_file_problem(path: Path, kind: str) -> tuple[str, str] | None:
    """``(reason, hint)`` when ``path`` is not a non-empty regular file, else None; raises OSError as
    ``stat`` does (a folder as IsADirectoryError). Checked before opening: opening a FIFO for reading
    would block for ever. ``kind`` names the files the hint asks for (image, video)."""
    st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file", f"pass {kind} files, not devices, pipes or sockets"
    if st.st_size == 0:
        return "empty file (0 bytes)", "the file is empty; re-copy it from the original"
    return None


def _decode(fp, path: Path, limit: int) -> Image.Image:
    """Open the header, enforce the pixel cap, then decode the first frame fully."""
    # catch_warnings is process-global (not thread-safe before Python 3.14); the
    # filters are narrowed to Pillow so a rare race can only silence Pillow's own
    # warnings. The bomb warning is redundant: our own cap below is the check.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        image = Image.open(fp, formats=_PIL_FORMATS)
        width, height = image.size
        if width * height > limit:
            raise _bad(
                path,
                f"image is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,}",
                f"downscale it, or raise the limit with {_MAX_PIXELS_ENV}",
            )
        image.load()
    return image


def _apply_exif_orientation(image: Image.Image, path: Path) -> None:
    """Rotate/flip in place per the EXIF Orientation tag; broken EXIF keeps pixels as stored."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:  # pixels decoded fine; only the metadata is unusable
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", path, one_line(exc))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited on white, high bit depth scaled)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "F") or mode.startswith("I;"):
        return Image.fromarray(_scale_to_uint8(image), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _composite_on_white(image.convert("RGBA"))
    # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX: Pillow's own conversion is correct.
    return image.convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _scale_to_uint8(image: Image.Image) -> np.ndarray:
    """Map a 16/32-bit integer or float greyscale image to uint8.

    ``convert("L")`` clips at 255, turning most 16-bit images white, so scale by
    the range the data lives in: 0..65535 for 16-bit (also the usual content of
    mode ``I``, which is how Pillow opens 16-bit PGM), 0..1 for normalised
    floats, else the image's own min..max.
    """
    if image.mode.startswith("I;"):
        image = image.convert("I")
    data = np.asarray(image, dtype=np.float64)
    if data.size == 0:
        return np.zeros(data.shape, np.uint8)
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode == "I" and lo >= 0 and hi <= 65535:
        lo, hi = 0.0, 65535.0
    elif image.mode == "F" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    span = hi - lo if hi > lo else 1.0
    data = np.nan_to_num(data, nan=lo, posinf=hi, neginf=lo)
    return np.clip(np.rint((data - lo) * (255.0 / span)), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- errors


def _bad(path: Path, reason: str, hint: str) -> BadImageError:
    return BadImageError(f"cannot read image {path}: {reason}", hint=hint)


def file_problem(exc: Exception) -> tuple[str, str] | None:
    """``(reason, hint)`` when ``exc`` is about the file rather than its content (missing, unreadable, a
    folder), else None: the words every decoder of user files uses for these."""
    if isinstance(exc, FileNotFoundError):
        return "file not found", "check the path; the file may have been moved or deleted"
    if isinstance(exc, PermissionError):
        return "permission denied", "make the file readable (chmod +r) or run as its owner"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file", "pass image files, or use scan_images for folders"
    return None


def _classify(path: Path, exc: Exception) -> BadImageError:
    """Turn an OS or Pillow exception into a one-line BadImageError with a hint."""
    if (problem := file_problem(exc)) is not None:
        return _bad(path, *problem)
    if isinstance(exc, Image.DecompressionBombError):
        return _bad(path, f"too many pixels ({one_line(exc)})",
                    "downscale it; Pillow refuses images this large whatever the facesearch limit")
    if isinstance(exc, UnidentifiedImageError):
        return _bad(path, "not a recognised image (expected JPEG, PNG, WebP, BMP, GIF, TIFF or PNM)",
                    "convert it to JPEG or PNG, or remove it from the collection")
    if isinstance(exc, MemoryError):
        return _bad(path, "out of memory while decoding", f"downscale it or lower {_MAX_PIXELS_ENV}")
    return _bad(path, f"corrupt or truncated ({one_line(exc)})",
                "re-copy or re-export the file; it cannot be fully decoded")


# --------------------------------------------------------------------------- whole-photo hashes


def dhash(img: np.ndarray | Image.Image, size: int = 8) -> int:
    """64-bit difference hash of a whole photo (signed, as SQLite stores it).

    Each bit says whether a pixel of the 9x8 greyscale thumbnail is brighter than its left
    neighbour, so re-encoding, resizing and small colour changes leave it (nearly) unchanged:
    near-duplicate photos are found even where their faces are not.
    """
    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
    g = np.asarray(im.convert("L").resize((size + 1, size), Image.BILINEAR), dtype=np.int16)
    return int.from_bytes(np.packbits(g[:, 1:] > g[:, :-1]).tobytes(), "big", signed=True)


def hamming64(a: int, b: int) -> int:
    """Bits that differ between two (signed) 64-bit hashes."""
    return ((a ^ b) & 0xFFFF_FFFF_FFFF_FFFF).bit_count()
