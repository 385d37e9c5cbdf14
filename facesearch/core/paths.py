"""Where indexes live. ``--index NAME`` is ``<home>/indexes/NAME``; a path is used as is.

The index home is ``$FACESEARCH_HOME/indexes`` when set, else ``./indexes``
(the repo's ``indexes/`` when run from the checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_INDEX = "default"


def home() -> Path | None:
    """``$FACESEARCH_HOME`` (the user's indexes, weights and settings), or None when unset or empty.

    The one place that reads the variable, so every module agrees on what an empty value means.
    """
    value = os.environ.get("FACESEARCH_HOME")
    return Path(value) if value else None


def cache_dir() -> Path:
    """``$FACESEARCH_CACHE`` or ``~/.cache/facesearch``: derived files that can always be remade
    (cached chips, compiled networks, converted dlib weights). The one reader of the variable."""
    value = os.environ.get("FACESEARCH_CACHE")
    return Path(value) if value else Path.home() / ".cache" / "facesearch"


def index_home() -> Path:
    """Where index names resolve: ``$FACESEARCH_HOME/indexes``, else ``./indexes``."""
    return (home() or Path.cwd()) / "indexes"


def resolve_index(name: str | os.PathLike | None = None) -> Path:
    """Map an index name or folder path to its folder (``$FACESEARCH_INDEX`` or ``default``)."""
    name = name or os.environ.get("FACESEARCH_INDEX") or DEFAULT_INDEX
    s = str(name)
    if os.sep in s or s.startswith(".") or Path(s).is_absolute():
        return Path(s)
    return index_home() / s


def canonical(path: str | os.PathLike) -> str:
    """The one spelling of a photo's path stored in an index: absolute, with symlinks resolved.

    One file is one photo, whatever path reached it: a folder indexed by its real path and again
    through a symlinked alias, or a symlink loop, must find the rows it already has. Resolving here
    is the cheapest fix for those; hard links and bind mounts (one file, two real paths) are caught
    by :func:`same_file` where a new path is planned. A path that no longer exists resolves as far
    as its folders still do, so a deleted photo still finds its row.
    """
    return os.path.realpath(os.fspath(path))


def file_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """The file ``path`` reaches now, as (device, inode); None when it is gone or unreadable."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one file now (same device and inode: an alias, a hard link, a
    bind mount); False when either is gone. Checked live, never from stored inode numbers, which
    a copied or restored folder would make stale."""
    key = file_key(a)
    return key is not None and key == file_key(b)


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes (lone surrogates, PEP 383) written as ``\\xNN``:
    valid UTF-8 for SQLite labels and terminals, and still readable."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def journal_dir(index: str | os.PathLike) -> Path:
    """Where an index keeps the journals of its destructive runs (dedupe moves), for ``undo``."""
    return Path(index) / "journal"
