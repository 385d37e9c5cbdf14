"""The indexing pipeline: scan → load (EXIF-rotated) → detect + align → embed in batches → store.

Decoding and detection run in worker processes while the main process embeds
and writes, so every core is busy. Files are written to the index in batches,
each batch one SQLite transaction: a run killed at any point keeps every batch
already written, and the next run skips those files and resumes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from facesearch.detect import create_detector
from facesearch.errors import BadImageError, FacesearchError, first_line
from facesearch.faces import extract_faces
from facesearch.imageio import content_hash, dhash, load_array, scan_images, stat_file
from facesearch.index.store import FaceIndex
from facesearch.index.vectors import DEFAULT_BACKEND
from facesearch.models.weights_meta import read_meta, resolve_weights
from facesearch.paths import canonical, printable

log = logging.getLogger(__name__)
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
    backend: str | None = None  # vector store of a new index (facesearch.index.vectors); None: faiss
    engine: str = "local"  # local: a process pool here | ray: Ray Data stages (facesearch.ray_engine)
    address: str | None = None  # ray: the cluster to join (auto, ray://host:10001); None starts one here


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
    failed: int = 0  # files an unexpected error stopped: not recorded, so the next run retries them
    failed_files: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Work:
    path: str
    size: int
    mtime_ns: int
    hash: str | None
    label: str | None


@dataclass
class _Result:
    work: _Work
    error: str | None = None  # the file's own fault (unreadable, odd content): recorded as bad
    failed: str | None = None  # anything else (a bug, MemoryError): not recorded, retried next run
    dhash: int | None = None  # the whole photo's difference hash
    faces: list = field(default_factory=list)  # list[Face]
    chips: list = field(default_factory=list)  # list[np.ndarray]
    embeddings: np.ndarray | None = None  # (len(faces), dim) once embedded


ProgressFn = Callable[[str, dict], None]


def index_collection(opts: IndexOptions, on_progress: ProgressFn | None = None) -> IndexSummary:
    """Index every face under ``opts.paths`` into ``opts.index``, incrementally."""
    t0 = time.perf_counter()
    notify = on_progress or (lambda event, data: None)
    # Options first, in this process: a bad name inside a pool initializer respawns workers forever.
    create_detector(opts.detector, policy=opts.policy)
    _check_engine(opts.engine, opts.address)
    # Once: an existing index names its own model; the engine and the workers' chips follow it.
    weights = resolve_weights(opts.weights, model=FaceIndex.model_of(opts.index))
    meta = read_meta(weights)
    store = _open_or_create(opts, meta)
    summary = IndexSummary(index=str(opts.index))
    with store:
        run_id = store.begin_run({k: str(v) for k, v in asdict(opts).items()})
        unsupported: Counter = Counter()
        files = scan_images(opts.paths, skipped=summary.bad_files, unsupported=unsupported)
        summary.unsupported = dict(sorted(unsupported.items()))
        summary.bad += len(summary.bad_files)  # unreadable folders: reported like bad files
        summary.scanned = len(files)
        todo = _plan(store, files, opts, summary)
        notify("start", {"total": len(files), "todo": len(todo), "unchanged": summary.unchanged})
        if todo:  # torch and the model load only when there is something to embed
            _index_todo(store, weights, todo, opts, summary, notify, run_id)
        if opts.prune:
            summary.pruned = len(store.prune_missing())
        summary.seconds = round(time.perf_counter() - t0, 3)
        summary.files_per_s = round(summary.scanned / summary.seconds, 2) if summary.seconds else 0.0
        store.end_run(run_id, summary.to_dict())
    return summary


def _check_engine(name: str, address: str | None) -> None:
    if name not in ENGINES:
        raise FacesearchError(f"unknown engine {name!r}", hint=f"use one of {', '.join(ENGINES)}")
    if address is not None and name != "ray":
        raise FacesearchError("--address names a Ray cluster, for the ray engine only", hint="add --engine ray")
    if name == "ray":
        from facesearch.ray_engine import require_ray

        require_ray()


def _index_todo(store, weights: Path, todo: list[_Work], opts: IndexOptions, summary: IndexSummary,
                notify: ProgressFn, run_id: int) -> None:
    """Detect, embed and record ``todo`` with the engine ``opts.engine`` names."""
    if opts.engine == "ray":
        from facesearch.ray_engine import run_ray  # imported here: Ray is an optional extra

        run_ray(store, weights, todo, opts, summary, notify, run_id)
    else:
        _run(store, weights, todo, opts, summary, notify)


def _open_or_create(opts: IndexOptions, meta: dict) -> FaceIndex:
    if FaceIndex.exists(opts.index):
        store = FaceIndex.open(opts.index, model_id=meta["model_id"])
        _check_same_backend(store, opts.backend)
        return store
    config = meta["config"]
    return FaceIndex.create(opts.index, model_id=meta["model_id"], model_config=config,
                            dim=config["embedding_dim"], index_type=opts.index_type,
                            vectors=opts.backend or DEFAULT_BACKEND)


def _check_same_backend(store: FaceIndex, backend: str | None) -> None:
    """A backend is chosen when an index is created; asking for another one later is a mistake."""
    have = store.manifest.get("vectors", DEFAULT_BACKEND)
    if backend is not None and backend != have:
        store.close()
        raise FacesearchError(f"the index at {store.folder} keeps its vectors in {have}, not {backend}",
                              hint="--backend applies when an index is created; index into a new folder to switch")


def _engine(opts: IndexOptions, weights: Path):
    from facesearch.embed import EmbeddingEngine
    from facesearch.models.weights import load_weights

    return EmbeddingEngine(load_weights(weights), device=opts.device, batch_size=opts.batch_size)


def _plan(store: FaceIndex, files: list[Path], opts: IndexOptions, summary: IndexSummary) -> list[_Work]:
    """Skip files whose size+mtime (then content hash) are unchanged since the last run."""
    todo = []
    for path in files:
        try:
            st = stat_file(path)
        except OSError as e:
            summary.bad += 1
            summary.bad_files.append({"path": str(path), "error": str(e)})
            continue
        rec = store.lookup_file(canonical(path))
        # A folder name with bytes that are not UTF-8 becomes a readable label ("Jos\\xe9").
        label = printable(path.parent.name) if opts.label_from_folder else None
        if rec is not None and rec.size == st.size and rec.mtime_ns == st.mtime_ns:
            summary.unchanged += 1
            continue
        digest = _safe_hash(path)
        if rec is not None and digest is not None and rec.hash == digest:
            store.touch_file(canonical(path), st.size, st.mtime_ns)  # touched, not changed
            summary.unchanged += 1
            continue
        todo.append(_Work(canonical(path), st.size, st.mtime_ns, digest, label))
        if rec is None:
            summary.new += 1
        else:
            summary.updated += 1
    return todo


def _safe_hash(path: Path) -> str | None:
    try:
        return content_hash(path)
    except OSError:
        return None


def _run(store, weights: Path, todo, opts, summary, notify) -> None:
    # The detection workers start before the embedding model loads here, so their start-up
    # (torch and the detector's models, in each worker) overlaps this process's instead of
    # following it.
    with _detections(todo, opts, store.manifest["model_config"]["align"]) as results:
        commit = Committer(store, summary, notify, _engine(opts, weights))
        for res in results:
            commit.add([res])
        commit.flush()


class Committer:
    """Results in, one transaction per WRITE_EVERY files out, and one progress event per file: what
    both engines do with their results. With an ``engine`` the chips are embedded at each commit (the
    local engine); without one the results come embedded (Ray)."""

    def __init__(self, store: FaceIndex, summary: IndexSummary, notify: ProgressFn, engine=None):
        self.store, self.summary, self.notify, self.engine = store, summary, notify, engine
        self.pending: list[_Result] = []
        self.done = 0

    def add(self, results: list[_Result]) -> None:
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


def _embed(engine, results: list[_Result]) -> None:
    """Embed the chips of ``results`` in one call and hand each result its rows."""
    emb = engine.embed([c for r in results for c in r.chips])
    at = 0
    for r in results:
        r.embeddings, at = emb[at : at + len(r.chips)], at + len(r.chips)


def _drop_failed(results: list[_Result], summary: IndexSummary) -> list[_Result]:
    """The results to record; the failed ones go into the summary only (retried next run)."""
    for r in (r for r in results if r.failed):
        summary.failed += 1
        summary.failed_files.append({"path": r.work.path, "error": r.failed})
    return [r for r in results if not r.failed]


def commit_results(store: FaceIndex, results: list[_Result], summary: IndexSummary) -> None:
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
                          error=r.error, faces=r.faces, embeddings=r.embeddings, label=w.label, dhash=r.dhash))
        if r.error:
            summary.bad += 1
            summary.bad_files.append({"path": w.path, "error": r.error})
        elif n == 0:
            summary.noface += 1
        summary.faces += n
    store.write_batch(items)


# --- worker side -----------------------------------------------------------------------------

_DETECTOR = None
_ALIGN = None
_WORKER_ARGS: tuple | None = None  # what _init_worker last set this process up with


def _init_worker(detector: str, min_face: int | None, policy: str, align: str) -> None:
    global _DETECTOR, _ALIGN, _WORKER_ARGS
    # One thread per worker: the workers themselves are the parallelism.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _DETECTOR = create_detector(detector, min_face=min_face, policy=policy)
    _ALIGN = align
    _WORKER_ARGS = (detector, min_face, policy, align)


def detect_batch(todo: list[_Work], init_args: tuple) -> list[_Result]:
    """Load, detect and align ``todo`` in this process, set up once per process for ``init_args``
    (``(detector, min_face, policy, align)``): Ray reuses its worker processes across tasks."""
    if _WORKER_ARGS != tuple(init_args):
        _init_worker(*init_args)
    return [_detect_one(w) for w in todo]


def _init_pool_worker(*args) -> None:
    # Ctrl-C goes to the whole process group: only the parent handles it (it stops the pool);
    # workers that also raised KeyboardInterrupt printed tracebacks and could hang the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(*args)


def _detect_one(work: _Work) -> _Result:
    try:
        img = load_array(work.path)
        crops = extract_faces(img, _DETECTOR, _ALIGN)
        return _Result(work, faces=[c.face for c in crops], chips=[c.chip for c in crops], dhash=dhash(img))
    except BadImageError as e:
        return _Result(work, error=e.message)
    except RuntimeError as e:  # dlib/OpenCV refusing odd content (1x1, 100000x10): the file's fault
        return _Result(work, error=f"detector failed: {first_line(e)}")
    except Exception as e:  # not the file's fault: report it, keep the batch going, retry next run
        log.warning("failed on %s: %s", work.path, first_line(e), exc_info=log.isEnabledFor(logging.DEBUG))
        return _Result(work, failed=f"{type(e).__name__}: {first_line(e)}")


@contextmanager
def _detections(todo: list[_Work], opts: IndexOptions, align: str) -> Iterator[Iterator[_Result]]:
    """Results in input order (chips for ``align``); a process pool, started and fed on entry, when
    there is more than a handful of files."""
    init_args = (opts.detector, opts.min_face, opts.policy, align)
    # One detection worker per core: detection is the bottleneck and embedding in the main
    # process is cheap (1,000 photos on 2 cores: 39 photos/s with 1 worker, 53 with 2).
    workers = opts.workers if opts.workers is not None else (os.cpu_count() or 1)
    if workers < 1 or len(todo) < 8:
        yield _in_process(todo, init_args)
        return
    ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
    with ctx.Pool(workers, initializer=_init_pool_worker, initargs=init_args) as pool:
        yield pool.imap(_detect_one, todo, chunksize=4)


def _in_process(todo: list[_Work], init_args: tuple) -> Iterator[_Result]:
    # Set up on the first result, after the caller has loaded its model: _init_worker's one
    # OpenMP thread is for workers, not for this process's torch.
    _init_worker(*init_args)
    yield from map(_detect_one, todo)

