"""The engines' shared contract: what an indexing run is asked (options), what it reports (summary),
the unit of work (one file) and its result, and how results are committed -- the same for the local
and the Ray engine, so a file's outcome does the same to the index and the summary in both.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from facesearch.core.errors import BadImageError, first_line

from facesearch.store.face_index import FaceIndex
from facesearch.store.records import FaceRecord

WRITE_EVERY = 64  # files per SQLite transaction
ENGINES = ("local", "ray")


@dataclass
class IndexOptions:
    paths: list[str]
    index: Path
    weights: str | None = None
    detector: str = "auto"
    min_face: int | None = None  # the detector's own floor
    policy: str = "all"
    batch_size: int = 64
    device: str = "auto"
    label_from_folder: bool = False
    prune: bool = False
    workers: int | None = None
    index_type: str = "auto"
    backend: str | None = None  # vector store of a new index (facesearch.store.vectors.base); None: faiss
    engine: str = "local"  # local: a process pool here | ray: Ray Data stages (facesearch.indexing.ray_engine)
    address: str | None = None  # ray: the cluster to join (auto, ray://host:10001); None starts one here
    xmp: bool = True  # read XMP face regions (embedded and sidecars): names other photo tools gave faces
    video_every_s: float = 0.5  # clips: seconds between sampled frames (keyframes are sampled too)
    video_min_face: int | None = None  # clips: smallest face searched for, px; None: 1/18 of the short side


@dataclass
class IndexSummary:
    index: str
    scanned: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: int = 0
    noface: int = 0
    faces: int = 0
    pruned: int = 0
    seconds: float = 0.0
    files_per_s: float = 0.0
    bad_files: list[dict] = field(default_factory=list)
    unsupported: dict[str, int] = field(default_factory=dict)  # files in the folders we cannot read, by extension
    # paths skipped because they reach a file indexed under another path: {"path", "same_as"}
    same_file: list[dict] = field(default_factory=list)
    # photos found at a new path while their old one is gone: their record taken over, {"from", "to"}
    moved: list[dict] = field(default_factory=list)
    clips: int = 0  # of the files read, how many were clips (facesearch.indexing.video_index)
    failed: int = 0  # files an unexpected error stopped: not recorded, so the next run retries them
    failed_files: list[dict] = field(default_factory=list)
    # XMP face regions (facesearch.indexing.regions): named regions read, faces they labelled, faces
    # embedded from a region's box, regions that could not be embedded, disagreements, unreadable XMP
    xmp_regions: int = 0
    xmp_labelled: int = 0
    xmp_added: int = 0
    xmp_failed: list[dict] = field(default_factory=list)
    xmp_conflicts: list[dict] = field(default_factory=list)
    xmp_warnings: list[str] = field(default_factory=list)
    # Photo names (folder, upload) placed on one face each after the run (facesearch.people.labels):
    # how many were, the photos where none could be, and an old index's repair (None: none needed)
    names_placed: int = 0
    unplaced: list[dict] = field(default_factory=list)
    repaired: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Work:
    """One file to index: where it is, what it was when planned, its folder label, and whether its XMP
    regions are read (``sidecars``: their signature when planned)."""

    path: str
    size: int
    mtime_ns: int
    hash: str | None
    label: str | None
    xmp: bool = False
    sidecars: str | None = None


@dataclass
class Result:
    """What detection made of one :class:`Work` (and, once embedded, its embeddings)."""


    work: Work
    error: str | None = None  # the file's own fault (unreadable, odd content): recorded as bad
    failed: str | None = None  # anything else (a bug, MemoryError): not recorded, retried next run
    dhash: int | None = None  # the whole photo's difference hash
    faces: list = field(default_factory=list)  # list[Face]
    chips: list = field(default_factory=list)  # list[np.ndarray]
    embeddings: np.ndarray | None = None  # (len(faces), dim) once embedded
    labels: list = field(default_factory=list)  # per face: a name from an XMP region, or None
    regions: dict | None = None  # what the XMP regions did (facesearch.indexing.regions), when read
    # A clip's faces (facesearch.indexing.video_index): per face its time, track, track start and end
    moments: list = field(default_factory=list)


ProgressFn = Callable[[str, dict], None]
log = logging.getLogger(__name__)


def guarded(work: Work, run: Callable[[], Result]) -> Result:
    """``run()``'s result for one file, or what went wrong: the file's fault (unreadable, a detector
    refusing odd content such as 1x1 or 100000x10) as ``error``, recorded and not retried until the file
    changes; anything else as ``failed``, reported, the batch kept going, retried next run."""
    try:
        return run()
    except BadImageError as e:
        return Result(work, error=e.message)
    except RuntimeError as e:  # dlib/OpenCV refusing odd content: the file's fault
        return Result(work, error=f"detector failed: {first_line(e)}")
    except Exception as e:  # not the file's fault
        log.warning("failed on %s: %s", work.path, first_line(e), exc_info=log.isEnabledFor(logging.DEBUG))
        return Result(work, failed=f"{type(e).__name__}: {first_line(e)}")


class Committer:
    """Results in, one transaction per WRITE_EVERY files out, and one progress event per file: what
    both engines do with their results. With an ``engine`` the chips are embedded at each commit (the
    local engine); without one the results come embedded (Ray)."""

    def __init__(self, store: FaceIndex, summary: IndexSummary, notify: ProgressFn, engine=None):
        self.store, self.summary, self.notify, self.engine = store, summary, notify, engine
        self.pending: list[Result] = []
        self.done = 0

    def add(self, results: list[Result]) -> None:
        for r in results:
            self.pending.append(r)
            self.done += 1
            if len(self.pending) >= WRITE_EVERY:
                self.flush()
            pending_faces = sum(len(p.faces) for p in self.pending)  # a failed result has none
            self.notify("file", {"done": self.done, "faces": self.summary.faces + pending_faces})

    def flush(self) -> None:
        results = _drop_failed(self.pending, self.summary)
        if self.engine is not None:
            _embed(self.engine, results)
        commit_results(self.store, results, self.summary)
        self.pending = []


def _embed(engine, results: list[Result]) -> None:
    """Embed the chips of ``results`` in one call and hand each result its rows (a clip's come embedded)."""
    results = [r for r in results if r.embeddings is None]
    emb = engine.embed([c for r in results for c in r.chips])
    at = 0
    for r in results:
        r.embeddings, at = emb[at : at + len(r.chips)], at + len(r.chips)


def _drop_failed(results: list[Result], summary: IndexSummary) -> list[Result]:
    """The results to record; the failed ones go into the summary only (retried next run)."""
    for r in (r for r in results if r.failed):
        summary.failed += 1
        summary.failed_files.append({"path": r.work.path, "error": r.failed})
    return [r for r in results if not r.failed]


def commit_results(store: FaceIndex, results: list[Result], summary: IndexSummary) -> None:
    """Record embedded results (none failed) in one transaction and count them in the summary.

    Both engines end here, so what a file's outcome does to the index and the summary is the same.
    """
    if not results:
        return
    items = []
    for r in results:
        w, n = r.work, len(r.faces)
        status = "bad" if r.error else ("ok" if n else "noface")
        # A file without faces needs no embeddings: the store records an empty (0, dim) block.
        items.append(dict(path=w.path, size=w.size, mtime_ns=w.mtime_ns, hash=w.hash, status=status,
                          error=r.error, faces=_records(r), embeddings=r.embeddings, label=w.label, dhash=r.dhash,
                          sidecars=w.sidecars))
        _count_regions(r.regions, summary)
        if r.error:
            summary.bad += 1
            summary.bad_files.append({"path": w.path, "error": r.error})
        elif n == 0:
            summary.noface += 1
        summary.faces += n
    store.write_batch(items)


def _records(r: Result) -> list[FaceRecord]:
    """The faces to store, each with its XMP region's name as its label (None: none)."""
    labels = r.labels or [None] * len(r.faces)
    times = r.moments or [None] * len(r.faces)
    return [FaceRecord(tuple(f.box), f.score, f.landmarks, lab, t) for f, lab, t in zip(r.faces, labels, times)]


def _count_regions(regions: dict | None, summary: IndexSummary) -> None:
    if not regions:
        return
    summary.xmp_regions += regions["named"]
    summary.xmp_labelled += regions["labelled"]
    summary.xmp_added += regions["added"]
    summary.xmp_failed += regions["failed"]
    summary.xmp_conflicts += regions["conflicts"]
    summary.xmp_warnings += regions["warnings"]
