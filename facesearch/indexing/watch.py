"""``facesearch watch``: keep an index current from file-system events.

Events come from ``watchfiles`` (inotify, FSEvents, ReadDirectoryChangesW) and are taken in batches
once the folders have been quiet for ``settle`` seconds, so a photo still being copied is indexed
once, whole. Each batch, in order:

1. **moves**: a photo that appeared with the content hash of an indexed photo that is gone (renamed,
   moved to another folder, a whole folder moved) takes over its record -- faces, labels, people,
   nothing re-embedded;
2. **deletions**: indexed photos that are gone are held for a grace window (``grace``, a few settle
   intervals), so a folder moved out and back meanwhile is a no-op, and a photo that reappears under
   another path is still a move; then they are forgotten, their names kept by content hash for their
   return (:mod:`facesearch.store.removed`). A watched root that is gone (moved away, unmounted) is an
   ``error`` event and prunes nothing;
3. **new and changed photos**, and photos whose XMP sidecar changed, are indexed
   (:func:`~facesearch.indexing.run.index_collection`, incremental as ever) in runs of at most
   ``batch`` files.

The writer lock is taken for each step and let go between batches, so ``query`` and ``serve`` (and a
``people`` correction) get in while the watcher waits.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from facesearch.core.errors import FacesearchError, IndexLockedError, IndexMissingError
from facesearch.core.paths import canonical
from facesearch.indexing.moves import moved_from, take_over
from facesearch.indexing.run import index_collection
from facesearch.indexing.work import IndexOptions
from facesearch.photos.scan import COLLECTION_EXTS, IMAGE_EXTS, content_hash, scan_images, stat_file
from facesearch.photos.xmp import is_sidecar
from facesearch.store.face_index import FaceIndex

EventFn = Callable[[dict], None]
IN_PROCESS_MAX = 64  # files a batch detects in this process rather than in a pool
LOCK_TRIES = 30  # seconds a batch waits for another writer before it is reported and left for later
GRACE_SETTLES = 5  # a deletion is held this many settle intervals before it is pruned (by default)


@dataclass
class WatchOptions:
    """What to watch and how to index it: ``index`` carries the paths, the index and every indexing
    option (detector, weights, workers, labels from folders, XMP)."""

    index: IndexOptions
    settle: float = 1.0  # seconds without events before a batch is taken
    batch: int = 64  # files per indexing run
    catch_up: bool = True  # index what changed while nobody watched before waiting for events
    grace: float | None = None  # seconds a deletion is held before pruning; None: GRACE_SETTLES x settle

    def grace_s(self) -> float:
        return GRACE_SETTLES * self.settle if self.grace is None else self.grace


@dataclass
class Held:
    """Deletions held for the grace window (indexed path -> monotonic time it may be pruned), and the
    watched roots seen gone (said once; nothing under them is pruned)."""

    grace: float = 0.0
    until: dict[str, float] = field(default_factory=dict)
    roots_gone: set[str] = field(default_factory=set)


def watch(opts: WatchOptions, on_event: EventFn, stop: threading.Event | None = None) -> dict:
    """Watch ``opts.index.paths`` until ``stop`` is set (or Ctrl-C, which raises KeyboardInterrupt);
    every change is reported to ``on_event`` as a dict with an ``event`` key. Returns the totals."""
    import watchfiles

    totals = {"batches": 0, "indexed": 0, "faces": 0, "moved": 0, "pruned": 0, "errors": 0}
    if not opts.catch_up and not FaceIndex.exists(opts.index.index):
        raise IndexMissingError(f"no face index at {opts.index.index}", hint="let watch index the folders first "
                                                                          "(without --no-catch-up)")
    index_dir = os.path.abspath(opts.index.index)
    ms = max(1, int(opts.settle * 1000))
    ready = False
    held = Held(opts.grace_s())
    # yield_on_timeout: the first (empty) yield says the watches are in place; the catch-up runs only
    # then, so a photo added meanwhile is in the next batch instead of lost between the two.
    for changes in watchfiles.watch(*opts.index.paths, watch_filter=lambda _c, p: _wanted(p, index_dir),
                                    step=ms, debounce=max(ms * 10, 5000), stop_event=stop, raise_interrupt=True,
                                    rust_timeout=min(ms, 500), yield_on_timeout=True):
        if not ready:
            _catch_up(opts, on_event, totals)
            on_event({"event": "ready", "paths": [str(p) for p in opts.index.paths], **totals})
            ready = True
        if changes:
            handle_batch(opts, {p for _, p in changes}, on_event, totals, held=held)
        elif held.until:  # a quiet tick: deletions whose grace window ended
            _prune_due(opts, held, on_event, totals)
    return totals


def _catch_up(opts: WatchOptions, on_event: EventFn, totals: dict) -> None:
    """What changed while nothing watched: a new index is built; an existing one is brought up to date
    like one big batch (moves and deletions included)."""
    if not opts.catch_up:
        return
    if not FaceIndex.exists(opts.index.index):
        _index(opts, [str(p) for p in opts.index.paths], on_event, totals, "catch-up")
    else:
        handle_batch(opts, {os.path.abspath(p) for p in opts.index.paths}, on_event, totals, "catch-up")


def _wanted(path: str, index_dir: str) -> bool:
    """Photos, clips, sidecars and folders (a deleted path's kind is unknown); not hidden files (our own temp
    files are hidden) and nothing inside the index folder."""
    if os.path.basename(path).startswith(".") or path == index_dir or path.startswith(index_dir + os.sep):
        return False
    ext = os.path.splitext(path)[1].lower()
    return ext in COLLECTION_EXTS or is_sidecar(path) or ext == "" or os.path.isdir(path)


def handle_batch(opts: WatchOptions, paths: set[str], on_event: EventFn, totals: dict, kind: str = "batch",
                 held: Held | None = None) -> None:
    """One batch of changed paths: moves, then deletions, then indexing (see the module docstring).
    Without ``held`` (the catch-up) deletions are pruned at once."""
    t0 = time.perf_counter()
    held = held if held is not None else Held()
    totals["batches"] += 1
    present, gone = _expand(paths)
    gone |= {p for p in paths if os.path.isdir(p)}  # a folder moved in may replace indexed photos gone from it
    roots = _roots_gone(opts, held, on_event, totals)
    gone = {p for p in gone if not _under(p, roots)}
    try:
        moved = _when_unlocked(lambda: _moves_and_deletions(opts.index.index, present, gone, on_event, held))
    except FacesearchError as e:  # the photos are indexed below all the same; moves become new + pruned later
        totals["errors"] += 1
        on_event({"event": "error", "error": e.message})
        moved = {}
    totals["moved"] += len(moved)
    _prune_due(opts, held, on_event, totals)
    todo = sorted(p for p in present if p not in moved)
    for i in range(0, len(todo), opts.batch):
        _index(opts, todo[i:i + opts.batch], on_event, totals, kind, t0)


def _moves_and_deletions(index: Path, present: set[str], gone: set[str], on_event: EventFn, held: Held
                         ) -> dict[str, str]:
    """Moves are taken over now (from any indexed photo that is gone, held ones too); the other
    photos gone are held until their grace window ends."""
    with FaceIndex.open(index) as store:
        gone_indexed = {p for g in gone for p in _indexed_under(store, g) if not os.path.exists(p)}
        moved = _moves(store, present, on_event)
    for old in moved.values():
        held.until.pop(old, None)
    now = time.monotonic()
    for p in gone_indexed - set(moved.values()):
        held.until.setdefault(p, now + held.grace)
    return moved


def _prune_due(opts: WatchOptions, held: Held, on_event: EventFn, totals: dict) -> None:
    """Forget the held photos whose grace window ended and that are still gone (not under a root that
    is gone: those are never pruned by the watcher)."""
    now = time.monotonic()
    due = sorted(p for p, t in held.until.items() if t <= now)
    for p in due:
        del held.until[p]
    due = [p for p in due if not os.path.exists(p) and not _under(p, held.roots_gone)]
    if not due:
        return
    try:
        pruned = _when_unlocked(lambda: _remove(opts.index.index, due))
    except FacesearchError as e:
        totals["errors"] += 1
        on_event({"event": "error", "error": e.message})
        return
    totals["pruned"] += pruned
    if pruned:
        on_event({"event": "pruned", "files": pruned})


def _remove(index: Path, paths: list[str]) -> int:
    with FaceIndex.open(index) as store:
        return store.remove_paths(paths)


def _roots_gone(opts: WatchOptions, held: Held, on_event: EventFn, totals: dict) -> set[str]:
    """The watched roots that are not there now; each one newly gone is an ``error`` event. A root that
    vanished is far more likely moved or unmounted than emptied on purpose: its photos stay indexed."""
    gone = {canonical(r) for r in opts.index.paths if not os.path.isdir(r)}
    for root in sorted(gone - held.roots_gone):
        totals["errors"] += 1
        on_event({"event": "error", "root": root,
                  "error": f"the watched folder {root} is gone: nothing was pruned, its photos stay in the index "
                           f"(put it back, or forget them with `facesearch remove {root}`)"})
    held.roots_gone = gone
    return gone


def _under(path: str, folders: set[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def _when_unlocked(fn: Callable, tries: int = LOCK_TRIES):
    """``fn()``, tried again while another process (a ``people`` correction, an ``index`` run) writes."""
    for n in range(tries):
        try:
            return fn()
        except IndexLockedError:
            if n == tries - 1:
                raise
            time.sleep(1.0)


def _expand(paths: set[str]) -> tuple[set[str], set[str]]:
    """The photos to look at (files in new folders, the photos of changed sidecars) and the paths gone."""
    present, gone = set(), set()
    for p in paths:
        if os.path.isdir(p):
            present |= {canonical(f) for f in scan_images([p], exts=COLLECTION_EXTS)}
        elif not os.path.exists(p):
            gone.add(canonical(p))
        elif is_sidecar(p):
            present |= _photos_of_sidecar(Path(p))
        elif os.path.splitext(p)[1].lower() in COLLECTION_EXTS:
            present.add(canonical(p))
    return present, gone


def _photos_of_sidecar(sidecar: Path) -> set[str]:
    """``photo.jpg.xmp`` belongs to ``photo.jpg``; ``photo.xmp`` to every ``photo.<image ext>`` beside it."""
    full = sidecar.with_suffix("")
    if full.suffix.lower() in IMAGE_EXTS:
        return {canonical(full)} if full.is_file() else set()
    return {canonical(full.with_suffix(ext)) for ext in IMAGE_EXTS if full.with_suffix(ext).is_file()}


def _indexed_under(store: FaceIndex, path: str) -> list[str]:
    """Indexed photos at ``path`` or under it (a folder that went away takes its photos with it)."""
    return [p for p in store.file_paths() if _under(p, {path})]


def _moves(store: FaceIndex, present: set[str], on_event: EventFn) -> dict[str, str]:
    """New path -> old path for each photo that is an indexed one moved: same content hash, old path gone."""
    moved: dict[str, str] = {}
    for new in sorted(present):
        if store.lookup_file(new) is not None:
            continue
        try:
            digest, st = content_hash(new), stat_file(new)
        except OSError:
            continue
        old = moved_from(store, digest)
        if old is not None and take_over(store, old, new, st):
            moved[new] = old
            on_event({"event": "moved", "from": old, "to": new})
    return moved


def _batch_options(opts: IndexOptions, paths: list[str]) -> IndexOptions:
    """The options of one run: these paths, no pruning, and this process for a small batch (a pool of
    worker processes takes seconds to start: 20 photos took 11 s with one, under 3 s without)."""
    workers = opts.workers if opts.workers is not None or len(paths) > IN_PROCESS_MAX else 0
    return dataclasses.replace(opts, paths=paths, prune=False, workers=workers)


def _index(opts: WatchOptions, paths: list[str], on_event: EventFn, totals: dict, kind: str,
           t0: float | None = None) -> None:
    """Index ``paths`` (incrementally) and report it; an error is reported and the watch goes on."""
    t0 = time.perf_counter() if t0 is None else t0
    try:
        s = _when_unlocked(lambda: index_collection(_batch_options(opts.index, paths)))
    except Exception as e:  # a locked index, a full disk: said, and the next batch tries again
        totals["errors"] += 1
        on_event({"event": "error", "error": f"{type(e).__name__}: {getattr(e, 'message', e)}", "files": len(paths)})
        return
    changed = s.new + s.updated
    totals["indexed"] += changed
    totals["faces"] += s.faces
    if changed or s.bad:
        on_event({"event": "indexed", "kind": kind, "files": changed, "faces": s.faces, "bad": s.bad,
                  "unchanged": s.unchanged, "xmp_labelled": s.xmp_labelled, "xmp_conflicts": len(s.xmp_conflicts),
                  "seconds": round(time.perf_counter() - t0, 3)})
