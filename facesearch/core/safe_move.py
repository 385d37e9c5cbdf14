"""Moving one file so that a complete copy exists at every instant, even across filesystems.

The building blocks of :mod:`facesearch.core.journal`: a rename where one is possible, else
copy to a hidden ``.part`` file, fsync, verify size and SHA-256, rename into place, and only
then delete the original. Nothing here journals; the caller records its intent first.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path

from facesearch.core.atomic import fsync_dir
from facesearch.core.errors import FacesearchError, os_reason


def check_move(src: Path, dst: Path) -> None:
    """Refuse before journaling: undo would take a pre-existing identical ``dst`` for our copy."""
    try:
        st = os.lstat(src)
    except OSError as e:
        raise FacesearchError(f"cannot move {src}: {os_reason(e)}", hint="check the path; nothing was moved") from e
    if not stat.S_ISREG(st.st_mode):
        raise FacesearchError(f"cannot move {src}: not a regular file",
                              hint="only regular files are moved; symlinks and folders are left alone")
    if os.path.lexists(dst):
        raise FacesearchError(f"cannot move {src}: {dst} already exists",
                              hint="facesearch never overwrites a file; choose an empty destination folder")


def linked_folder(dst: Path, root: Path | None) -> Path | None:
    """The first folder between ``root`` and ``dst`` (both absolute) that is a symlink or not a folder,
    or None. A move into ``root`` must not land outside it through a link planted below it; folders
    not made yet are fine (the mover makes them, as real folders)."""
    if root is None:
        return None
    try:
        below = dst.parent.relative_to(root).parts
    except ValueError:
        return dst.parent
    here = root
    for part in below:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):  # lstat: a symlink to a folder is S_ISLNK, not S_ISDIR
            return here
    return None


def transfer(src: Path, dst: Path, tmp: Path) -> str:
    """Move ``src`` to ``dst`` through ``tmp`` if it must copy; ``"rename"`` or ``"copy"``.

    At every instant a complete copy exists at ``src`` or ``dst``. Raises ``OSError``.
    """
    if _same_filesystem(src, dst.parent):
        try:
            os.rename(src, dst)
        except OSError as e:
            if e.errno != errno.EXDEV:  # same device, other mount (bind mounts): copy instead
                raise
        else:
            fsync_dirs(dst.parent, src.parent)
            return "rename"
    _copy_verified(src, tmp)
    os.replace(tmp, dst)
    fsync_dirs(dst.parent)  # dst must be durable before the only other copy goes
    os.unlink(src)
    fsync_dirs(src.parent)
    return "copy"


def same_content(a: Path, b: Path) -> bool:
    """Identical regular files that are not one file under two names (deleting one would lose it)."""
    if not (is_regular(a) and is_regular(b)) or os.path.samefile(a, b):
        return False
    return _digest(a) == _digest(b)


def is_regular(path: Path) -> bool:
    """Whether ``path`` itself (not a symlink's target) is a regular file; raises ``OSError`` if absent."""
    return stat.S_ISREG(os.lstat(path).st_mode)


def remove(path: Path) -> int:
    """Delete ``path`` if it is there; 1 if something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


def missing_dirs(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first (the order to rmdir them)."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def part_path(near: Path, tag: str) -> Path:
    """The hidden part file for a copy that will become ``near``, tagged so undo can find it."""
    # Beside the final name (same filesystem, so os.replace is atomic); the name is cut so
    # that even 4-byte UTF-8 characters keep the part name under the 255-byte limit.
    return near.parent / f".{near.name[:40]}.facesearch-{tag}.part"


def fsync_dirs(*folders: Path) -> None:
    """:func:`~facesearch.core.atomic.fsync_dir` each folder once."""
    for folder in dict.fromkeys(folders):
        fsync_dir(folder)


def _copy_verified(src: Path, tmp: Path) -> None:
    """Copy ``src`` to ``tmp`` and check it; a failure removes ``tmp`` (undo removes a killed one)."""
    try:
        _copy_file(src, tmp)
        if _digest(tmp) != _digest(src):
            raise OSError(errno.EIO, "the copy differs from the original")
    except BaseException:  # Ctrl-C too: never leave a half-written part file behind
        remove(tmp)
        raise


def _copy_file(src: Path, tmp: Path) -> None:
    """Copy bytes, mode and times, then fsync, so the copy survives a power cut. Tests patch this."""
    shutil.copy2(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())


def _same_filesystem(path: Path, folder: Path) -> bool:
    """Whether ``path`` can be renamed into ``folder``. Tests patch this to force the copy path."""
    return os.stat(path).st_dev == os.stat(folder).st_dev


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return os.stat(path).st_size, h.hexdigest()
