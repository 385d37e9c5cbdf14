"""Walking photo collections (layer 1): which files to index, and what identifies a file version.

:func:`scan_images` lists image files under folders, skipping hidden entries, broken links and
unreadable folders while saying so (``skipped``, ``unsupported``); :func:`stat_file` and
:func:`content_hash` tell an unchanged file from a changed one without decoding it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from facesearch.core.errors import FacesearchError, one_line

log = logging.getLogger(__name__)

IMAGE_EXTS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
     ".pgm", ".ppm", ".pbm", ".pnm", ".heic", ".heif", ".avif"}
)
"""File extensions (lower-case, with dot) that :func:`scan_images` collects."""

VIDEO_EXTS: frozenset[str] = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".3gp"})
"""Clips an index collects besides photos (which path a file takes is decided by its content:
:func:`facesearch.photos.video.is_video`)."""

COLLECTION_EXTS: frozenset[str] = IMAGE_EXTS | VIDEO_EXTS
"""What ``index`` and ``watch`` collect: photos and clips."""

COMPANION_EXTS: frozenset[str] = frozenset({".xmp"})
"""Files that belong to a photo (XMP sidecars): neither collected nor reported as unreadable."""


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileStat:
    """What identifies a file version cheaply: path, size in bytes, modification time in ns; and
    the file itself (device, inode), which a hard link or a bind mount shares under another path."""

    path: Path
    size: int
    mtime_ns: int
    dev: int = field(default=0, compare=False)
    ino: int = field(default=0, compare=False)


def stat_file(path: str | os.PathLike) -> FileStat:
    """Stat ``path`` (following symlinks); raises ``OSError`` as os.stat does, and for anything
    that is not a regular file (a FIFO or device named on the command line must never be opened)."""
    path = Path(path)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a pipe, device or folder)", str(path))
    return FileStat(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, dev=st.st_dev, ino=st.st_ino)


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
    unreadable folders, and photo names on broken links, pipes, devices and sockets (listed in
    ``skipped`` as ``{"path", "error"}`` when a list is given); other files inside folders are counted
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
        log.warning("skipping folder %s: %s", folder, one_line(exc))
        self.skipped.append({"path": str(folder), "error": f"unreadable folder: {one_line(exc)}"})

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
            elif kind == "file" and os.path.splitext(entry.name)[1].lower() in COMPANION_EXTS:
                continue  # read with its photo (facesearch.photos.xmp), not a photo of its own
            elif kind == "file":  # said in the summary, not silently passed over
                self.unsupported[os.path.splitext(entry.name)[1].lower() or "(none)"] += 1
            elif kind is not None and os.path.splitext(entry.name)[1].lower() in self.exts:
                # A photo's name on a pipe, device, socket or broken link: listed, never opened.
                self.skipped.append({"path": str(folder / entry.name), "error": kind})
        return subdirs

    def _kind(self, entry: os.DirEntry) -> str | None:
        """'dir', 'file', None (a symlinked folder not followed) or why the entry cannot be a photo
        (a broken link, a pipe, device or socket, an entry that cannot be read)."""
        try:
            is_link = entry.is_symlink()
            mode = entry.stat(follow_symlinks=True).st_mode
        except FileNotFoundError:
            return "broken link (its target does not exist)"
        except OSError as exc:
            return f"unreadable: {one_line(exc)}"
        if stat.S_ISDIR(mode):
            return "dir" if self.follow_symlinks or not is_link else None
        return "file" if stat.S_ISREG(mode) else "not a regular file (a pipe, device or socket)"
