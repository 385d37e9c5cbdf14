"""Image decoding and photo-collection scanning (layer 1).

Everything here turns messy files into clean data or a typed error:
:func:`load_image` always returns a fully decoded RGB image or raises
:class:`~facesearch.core.errors.BadImageError`, so a batch can skip a bad file and go on.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facesearch.core.errors import BadImageError, FacesearchError

log = logging.getLogger(__name__)

IMAGE_EXTS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
     ".pgm", ".ppm", ".pbm", ".pnm", ".heic", ".heif", ".avif"}
)
"""File extensions (lower-case, with dot) that :func:`scan_images` collects."""

DEFAULT_MAX_PIXELS = 80_000_000
"""Largest decoded image (width*height) accepted; override with ``FACESEARCH_MAX_PIXELS``."""

_MAX_PIXELS_ENV = "FACESEARCH_MAX_PIXELS"

# Only these Pillow decoders are ever tried. Besides matching IMAGE_EXTS this keeps
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


def load_array(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Like :func:`load_image` but return an ``HxWx3`` ``uint8`` RGB array."""
    return np.asarray(load_image(path, max_pixels))


def _check_regular_file(path: Path) -> None:
    # Checked before open(): opening a FIFO for reading would block forever.
    st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(st.st_mode):
        raise _bad(path, "not a regular file", "pass image files, not devices, pipes or sockets")
    if st.st_size == 0:
        raise _bad(path, "empty file (0 bytes)", "the file is empty; re-copy it from the original")


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
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", path, _one_line(exc))


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _classify(path: Path, exc: Exception) -> BadImageError:
    """Turn an OS or Pillow exception into a one-line BadImageError with a hint."""
    if isinstance(exc, FileNotFoundError):
        return _bad(path, "file not found", "check the path; the file may have been moved or deleted")
    if isinstance(exc, PermissionError):
        return _bad(path, "permission denied", "make the file readable (chmod +r) or run as its owner")
    if isinstance(exc, IsADirectoryError):
        return _bad(path, "is a directory, not a file", "pass image files, or use scan_images for folders")
    if isinstance(exc, Image.DecompressionBombError):
        return _bad(path, f"too many pixels ({_one_line(exc)})",
                    "downscale it; Pillow refuses images this large whatever the facesearch limit")
    if isinstance(exc, UnidentifiedImageError):
        return _bad(path, "not a recognised image (expected JPEG, PNG, WebP, BMP, GIF, TIFF or PNM)",
                    "convert it to JPEG or PNG, or remove it from the collection")
    if isinstance(exc, MemoryError):
        return _bad(path, "out of memory while decoding", f"downscale it or lower {_MAX_PIXELS_ENV}")
    return _bad(path, f"corrupt or truncated ({_one_line(exc)})",
                "re-copy or re-export the file; it cannot be fully decoded")


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileStat:
    """What identifies a file version cheaply: path, size in bytes, modification time in ns."""

    path: Path
    size: int
    mtime_ns: int


def stat_file(path: str | os.PathLike) -> FileStat:
    """Stat ``path`` (following symlinks); raises ``OSError`` as os.stat does, and for anything
    that is not a regular file (a FIFO or device named on the command line must never be opened)."""
    path = Path(path)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a pipe, device or folder)", str(path))
    return FileStat(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def content_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex BLAKE2b (16-byte digest) of the file's bytes, read in ``chunk``-sized pieces.

    Raises ``OSError`` if the file cannot be read.
    """
    digest = hashlib.blake2b(digest_size=16)
    # Non-blocking open: a FIFO swapped in after the stat must not hang the run holding the lock.
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fp:
        st = os.fstat(fp.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a pipe, device or folder)", str(path))
        left = st.st_size  # never past the size it had: a growing file cannot keep us reading
        while left > 0 and (block := fp.read(min(chunk, left))):
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- scanning


def scan_images(
    paths: Iterable[str | os.PathLike],
    exts: Iterable[str] = IMAGE_EXTS,
    follow_symlinks: bool = True,
    skipped: list[dict] | None = None,
    unsupported: Counter | None = None,
) -> list[Path]:
    """List image files under ``paths``, recursively, sorted and without duplicates.

    Files named directly are always included, whatever their extension. Inside
    folders, files match ``exts`` case-insensitively; entries whose name starts
    with ``.`` (``.git``, ``.facesearch``, macOS ``._x.jpg``) are skipped, as are
    broken symlinks and unreadable folders (logged, and listed in ``skipped`` as
    ``{"path", "error"}`` when a list is given); other files inside folders are counted
    by extension in ``unsupported``. Symlinked folders are
    followed when ``follow_symlinks`` and each real folder is walked once, so
    symlink loops terminate; a file reached twice through symlinks is listed once.

    Raises:
        FacesearchError: a given path does not exist.
    """
    wanted = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)
    walker = _Walker(wanted, follow_symlinks, skipped if skipped is not None else [],
                     unsupported if unsupported is not None else Counter())
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise FacesearchError(
                f"path not found: {root}", hint="check the spelling; give image files or folders"
            )
        if root.is_dir():
            walker.walk(root)
        else:
            walker.add(root)
    return sorted(walker.found.values())


class _Walker:
    """Iterative depth-first walk that remembers visited folders and files by identity."""

    def __init__(self, exts: frozenset[str], follow_symlinks: bool, skipped: list[dict], unsupported: Counter):
        self.exts = exts
        self.follow_symlinks = follow_symlinks
        self.skipped = skipped
        self.unsupported = unsupported
        self.seen_dirs: set[tuple[int, int]] = set()
        self.found: dict[str, Path] = {}  # resolved path -> first path it was reached by

    def add(self, path: Path) -> None:
        key = os.path.realpath(path)
        self.found.setdefault(key, path)

    def walk(self, root: Path) -> None:
        stack = [root]
        while stack:
            folder = stack.pop()
            if not self._first_visit(folder):
                continue
            subdirs = self._scan_folder(folder)
            stack.extend(reversed(subdirs))  # keeps sorted order when popping

    def _first_visit(self, folder: Path) -> bool:
        try:
            st = folder.stat()
        except OSError as exc:
            self._skip(folder, exc)
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            return False
        self.seen_dirs.add(key)
        return True

    def _skip(self, folder: Path, exc: OSError) -> None:
        log.warning("skipping folder %s: %s", folder, _one_line(exc))
        self.skipped.append({"path": str(folder), "error": f"unreadable folder: {_one_line(exc)}"})

    def _scan_folder(self, folder: Path) -> list[Path]:
        """Record matching files in ``folder``; return its subfolders to walk, sorted."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._skip(folder, exc)
            return []
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            kind = self._kind(entry)
            if kind == "dir":
                subdirs.append(folder / entry.name)
            elif kind == "file" and os.path.splitext(entry.name)[1].lower() in self.exts:
                self.add(folder / entry.name)
            elif kind == "file":  # said in the summary, not silently passed over
                self.unsupported[os.path.splitext(entry.name)[1].lower() or "(none)"] += 1
        return subdirs

    def _kind(self, entry: os.DirEntry) -> str | None:
        """'dir', 'file' or None (broken link, skipped symlinked dir, socket, ...)."""
        try:
            is_link = entry.is_symlink()
            mode = entry.stat(follow_symlinks=True).st_mode
        except OSError:
            log.debug("skipping broken or unreadable entry %s", entry.path)
            return None
        if stat.S_ISDIR(mode):
            return "dir" if self.follow_symlinks or not is_link else None
        return "file" if stat.S_ISREG(mode) else None
