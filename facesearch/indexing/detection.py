"""The worker side of indexing: load, detect and align files, in a process pool or in this process.

Both engines use it: the local engine through :func:`detections` (a pool started and fed on entry),
Ray through :func:`detect_batch` (its worker processes are reused across tasks).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from facesearch.core.errors import first_line
from facesearch.core.pool import worker_pool
from facesearch.faces.chips import extract_faces
from facesearch.faces.detect import create_detector
from facesearch.indexing.regions import import_regions
from facesearch.indexing.work import IndexOptions, Result, Work, guarded
from facesearch.photos.load import dhash, load_array

_DETECTOR = None
_ALIGN = None
_WORKER_ARGS: tuple | None = None  # what _init_worker last set this process up with


def _init_worker(detector: str, min_face: int | None, policy: str, align: str) -> None:
    global _DETECTOR, _ALIGN, _WORKER_ARGS
    # One OpenMP thread in this process (Ray's workers, or this one after its model has loaded):
    # the workers themselves are the parallelism. Pool workers are held to one by worker_pool.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _DETECTOR = create_detector(detector, min_face=min_face, policy=policy, align=align)
    _ALIGN = align
    _WORKER_ARGS = (detector, min_face, policy, align)


def detect_batch(todo: list[Work], init_args: tuple) -> list[Result]:
    """Load, detect and align ``todo`` in this process, set up once per process for ``init_args``
    (``(detector, min_face, policy, align)``): Ray reuses its worker processes across tasks."""
    if _WORKER_ARGS != tuple(init_args):
        _init_worker(*init_args)
    return [_detect_one(w) for w in todo]


def _detect_one(work: Work) -> Result:
    return guarded(work, lambda: _detected(work))


def _detected(work: Work) -> Result:
    img = load_array(work.path)
    crops = extract_faces(img, _DETECTOR, _ALIGN)
    res = Result(work, faces=[c.face for c in crops], chips=[c.chip for c in crops], dhash=dhash(img))
    return _with_regions(res, img) if work.xmp else res


def _with_regions(res: Result, img) -> Result:
    """``res`` with the faces labelled, and faces added, by the photo's XMP regions; unreadable XMP is
    reported and the photo indexed all the same."""
    try:
        imp = import_regions(res.work.path, img, res.faces, _ALIGN, res.work.label)
    except Exception as e:  # the metadata's fault, never the photo's: its faces are kept
        res.regions = _report(0, 0, 0, [], [], [f"{res.work.path}: XMP regions not read ({first_line(e)})"])
        return res
    res.labels = imp.labels + imp.added_labels
    res.faces, res.chips = res.faces + imp.added, res.chips + imp.added_chips
    res.regions = _report(imp.named, sum(lab is not None for lab in imp.labels), len(imp.added), imp.failed,
                          imp.conflicts, imp.warnings)
    return res


def _report(named: int, labelled: int, added: int, failed: list, conflicts: list, warnings: list) -> dict:
    return {"named": named, "labelled": labelled, "added": added, "failed": failed, "conflicts": conflicts,
            "warnings": warnings}


@contextmanager
def detections(todo: list[Work], opts: IndexOptions, align: str) -> Iterator[Iterator[Result]]:
    """Results in input order (chips for ``align``); a process pool, started and fed on entry, when
    there is more than a handful of files."""
    init_args = (opts.detector, opts.min_face, opts.policy, align)
    # One detection worker per core: detection is the bottleneck and embedding in the main
    # process is cheap (1,000 photos on 2 cores: 39 photos/s with 1 worker, 53 with 2).
    workers = opts.workers if opts.workers is not None else (os.cpu_count() or 1)
    if workers < 1 or len(todo) < 8:
        yield _in_process(todo, init_args)
        return
    with worker_pool(workers, _init_worker, init_args) as pool:
        yield pool.imap(_detect_one, todo, chunksize=4)


def _in_process(todo: list[Work], init_args: tuple) -> Iterator[Result]:
    # Set up on the first result, after the caller has loaded its model: _init_worker's one
    # OpenMP thread is for workers, not for this process's torch.
    _init_worker(*init_args)
    yield from map(_detect_one, todo)

