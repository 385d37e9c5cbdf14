"""Replacing a whole index folder by a new one (``rebuild --weights``), and finishing or undoing a swap
that a crash interrupted.

The new index is built beside the live one as ``NAME.rebuild``. When it is complete a marker file is
written into it; then ``NAME`` becomes ``NAME.old``, ``NAME.rebuild`` becomes ``NAME``, and ``NAME.old``
is removed. A process killed anywhere in between leaves one of these states, and :func:`recover`
(run whenever the index is looked for) puts it right:

==============================  ==============================================================
what is on disk                 recovery
==============================  ==============================================================
no NAME, NAME.rebuild complete  finish: NAME.rebuild becomes NAME (the old folder is removed)
no NAME, NAME.rebuild partial   roll back: NAME.old becomes NAME again
NAME and NAME.old               the swap had finished: remove NAME.old
NAME and a partial .rebuild     the rebuild had not finished: remove NAME.rebuild
==============================  ==============================================================

Nothing is touched while a rebuild is still running: it holds the live index's writer lock, which
travels with the folder when it is renamed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from facesearch.core.errors import IndexLockedError
from facesearch.store.lock import LOCK_NAME, WriterLock

COMPLETE = "rebuild-complete"  # written into NAME.rebuild once it is a whole index


def staging(folder: Path) -> Path:
    """Where the new index of ``folder`` is built."""
    return folder.with_name(folder.name + ".rebuild")


def retired(folder: Path) -> Path:
    """Where the old index of ``folder`` waits while the new one takes its place."""
    return folder.with_name(folder.name + ".old")


def swap_in(folder: Path) -> None:
    """Make the complete :func:`staging` index the live ``folder`` (the caller holds its writer lock)."""
    new, old = staging(folder), retired(folder)
    (new / COMPLETE).write_bytes(b"")
    _remove(old)
    os.replace(folder, old)
    os.replace(new, folder)
    (folder / COMPLETE).unlink(missing_ok=True)
    _remove(old)


def recover(folder: Path, is_index) -> None:
    """Finish or undo an interrupted :func:`swap_in` of ``folder`` (see the table above).

    ``is_index(path)`` says whether a folder holds an index: only folders of ours are ever removed.
    """
    new, old = staging(folder), retired(folder)
    if not (new.is_dir() or old.is_dir()) or _busy(folder, old):
        return
    if not folder.exists():
        if (new / COMPLETE).is_file():
            os.replace(new, folder)
            (folder / COMPLETE).unlink(missing_ok=True)
        elif is_index(old):
            os.replace(old, folder)
    if is_index(folder):
        for leftover in (old, new):
            if is_index(leftover) or (leftover / LOCK_NAME).is_file():
                _remove(leftover)


def _busy(*folders: Path) -> bool:
    """True while some process (a running rebuild) holds the writer lock of one of ``folders``."""
    for f in folders:
        if (f / LOCK_NAME).is_file():
            try:
                WriterLock(f).acquire().release()
            except IndexLockedError:
                return True
            except OSError:
                return True  # cannot tell (a read-only folder): leave it alone
    return False


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
