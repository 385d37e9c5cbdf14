"""Single-writer lock for an index folder: ``fcntl.flock`` on ``<folder>/lock``.

flock locks belong to an open file description, so a second writer conflicts
even inside the same process, and the kernel drops the lock when the holder
dies (kill -9 included): there are no stale locks to clean up. Readers never
take it; SQLite WAL and the atomically replaced FAISS file keep them consistent.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from facesearch.core.errors import FacesearchError, IndexLockedError, os_reason

LOCK_NAME = "lock"


class WriterLock:
    """An exclusive, non-blocking lock on ``folder``; raises IndexLockedError when held elsewhere."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        """Take the lock now or raise: a second writer must not wait silently."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only folder or mount, another user's index
            raise FacesearchError(f"cannot write to the index {self.path.parent}: {os_reason(e)}",
                                  hint="this index is read-only to you; query, info and dedupe (report only) "
                                       "still work") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise IndexLockedError(
                f"index {self.path.parent} is locked by another facesearch process{who}",
                hint="wait for it to finish, or stop it; read-only commands (query, info, dedupe without --yes) still work",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
