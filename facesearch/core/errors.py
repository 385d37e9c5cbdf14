"""Error types. Every user-facing failure carries a one-line message and a hint.

The CLI turns a :class:`FacesearchError` into exit code 1 with ``error: msg``
and ``hint: ...`` on stderr; anything else is a bug and shows a traceback only
with ``FACESEARCH_DEBUG=1``.
"""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """An error's first non-empty line (dlib's and gRPC's messages span many); its type when empty."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def one_line(e: BaseException) -> str:
    """An error's whole message on one line (whitespace runs collapsed); its type when empty."""
    text = " ".join(str(e).split())
    return text or type(e).__name__


def os_reason(e: OSError) -> str:
    """An OS error's reason without errno or path ("No space left on device"); its text when it has none."""
    return e.strerror or str(e)


class FacesearchError(Exception):
    """A user or data error: bad input, missing index, mismatched weights."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # one line, no hint: the CLI prints the hint itself
        return self.message


class BadImageError(FacesearchError):
    """A file that cannot be decoded as an image (corrupt, truncated, too large, not an image)."""


class NoFaceError(FacesearchError):
    """No face was found where one was required."""


class ModelMismatchError(FacesearchError):
    """Weights or an index were made with a different model config than the one in use."""


class IndexMissingError(FacesearchError):
    """The named index does not exist."""


class NotFoundError(FacesearchError):
    """Something named by id or asked for does not exist (a person, a journal to undo): the service's 404."""


class DataError(FacesearchError):
    """A dataset folder that cannot be used as asked (empty, one identity, ...)."""


class IndexLockedError(FacesearchError):
    """Another process holds the index's writer lock."""
