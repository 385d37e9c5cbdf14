"""The indexing run: scan → load (EXIF-rotated) → detect + align → embed in batches → store.

Decoding and detection run in worker processes (:mod:`facesearch.indexing.detection`) while this
process embeds and writes, so every core is busy. Files are written to the index in batches, each
batch one SQLite transaction (:mod:`facesearch.indexing.work`): a run killed at any point keeps every
batch already written, and the next run skips those files and resumes.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from facesearch.core.errors import FacesearchError
from facesearch.core.paths import canonical, printable
from facesearch.faces.detect import create_detector
from facesearch.indexing.detection import detections
from facesearch.indexing.video_index import clip_results, split_videos
from facesearch.indexing.moves import moved_from, same_file_as, take_over
from facesearch.indexing.work import ENGINES, Committer, IndexOptions, IndexSummary, ProgressFn, Work
from facesearch.models.weights_meta import read_meta, resolve_weights
from facesearch.photos.scan import COLLECTION_EXTS, FileStat, content_hash, scan_images, stat_file
from facesearch.photos.xmp import sidecar_signature
from facesearch.store.face_index import FaceIndex
from facesearch.store.vectors.base import DEFAULT_BACKEND

__all__ = ["ENGINES", "IndexOptions", "IndexSummary", "index_collection"]


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
        files = scan_images(opts.paths, COLLECTION_EXTS, skipped=summary.bad_files, unsupported=unsupported)
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
        from facesearch.indexing.ray_engine import require_ray

        require_ray()


def _index_todo(store, weights: Path, todo: list[Work], opts: IndexOptions, summary: IndexSummary,
                notify: ProgressFn, run_id: int) -> None:
    """Detect, embed and record ``todo`` with the engine ``opts.engine`` names."""
    if opts.engine == "ray":
        from facesearch.indexing.ray_engine import run_ray  # imported here: Ray is an optional extra

        photos, clips = split_videos(todo)  # Ray's stages take photos; clips are tracked here
        if photos:
            run_ray(store, weights, photos, opts, summary, notify, run_id)
        _run_clips(store, weights, clips, opts, summary, notify, len(photos))
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
    return _loaded_engine(str(weights), weights.stat().st_mtime_ns, opts.device, opts.batch_size)


@functools.lru_cache(maxsize=1)
def _loaded_engine(weights: str, _mtime_ns: int, device: str, batch_size: int):
    """The model, loaded once for a process that indexes again and again (``watch``, ``serve``): a
    reload costs seconds per batch. Keyed by the weights file's mtime too, so new weights are seen."""
    from facesearch.models.embed import open_engine

    return open_engine(Path(weights), device=device, batch_size=batch_size)


def _plan(store: FaceIndex, files: list[Path], opts: IndexOptions, summary: IndexSummary) -> list[Work]:
    """Skip files whose size+mtime (then content hash), and XMP sidecars, are unchanged since the last run,
    and paths that reach a file another path already holds (one file is one photo)."""
    todo = []
    xmp = opts.xmp and opts.engine == "local"  # the Ray engine's result tables carry no region names yet
    for path, key, st in _distinct_files(store, files, summary):
        work = _plan_file(store, path, key, st, opts, xmp, summary)
        if work is not None:
            todo.append(work)
    return todo


def _distinct_files(store: FaceIndex, files: list[Path], summary: IndexSummary) -> list[tuple[Path, str, FileStat]]:
    """``(path, stored path, stat)`` of each file once, by device and inode: a file reached under two real
    paths in one run (a hard link, a bind mount) is planned under the name the index has, else the first,
    and its other names are listed as ``same_file``. Files that cannot be stat'ed are bad."""
    names: dict[tuple[int, int], list[tuple[Path, str, FileStat]]] = {}
    for path in files:
        try:
            st = stat_file(path)
        except OSError as e:
            summary.bad += 1
            summary.bad_files.append({"path": str(path), "error": str(e)})
            continue
        # Resolved once here: resolving costs a stat per folder of the path.
        names.setdefault((st.dev, st.ino), []).append((path, canonical(path), st))
    out = []
    for group in names.values():
        owner = next((n for n in group if len(group) > 1 and store.lookup_file(n[1]) is not None), group[0])
        out.append(owner)
        summary.same_file += [{"path": n[1], "same_as": owner[1]} for n in group if n is not owner]
    return out


def _plan_file(store: FaceIndex, path: Path, key: str, st: FileStat, opts: IndexOptions, xmp: bool,
               summary: IndexSummary) -> Work | None:
    """The work for one file (``key``: its stored path), or None when it is unchanged, moved or already
    indexed under another path."""
    rec = store.lookup_file(key)
    # Names edited in another tool change the sidecar, not the photo: its size+mtime count too.
    sidecars = sidecar_signature(path) if xmp else None
    if rec is None:
        return _plan_new(store, path, key, st, opts, xmp, sidecars, summary)
    same_sidecars = sidecars is None or sidecars == store.catalogue.sidecar_signature(rec.path)
    if rec.size == st.size and rec.mtime_ns == st.mtime_ns and same_sidecars:
        summary.unchanged += 1
        return None
    digest = _safe_hash(path)
    if digest is not None and rec.hash == digest and same_sidecars:
        store.touch_file(key, st.size, st.mtime_ns)  # touched, not changed
        summary.unchanged += 1
        return None
    summary.updated += 1
    return Work(key, st.size, st.mtime_ns, digest, _folder_label(path, opts), xmp, sidecars)


def _plan_new(store: FaceIndex, path: Path, key: str, st: FileStat, opts: IndexOptions, xmp: bool,
              sidecars: str | None, summary: IndexSummary) -> Work | None:
    """A path the index does not know: another path's file (skipped), a photo that moved here (its
    record taken over, nothing re-embedded), or a new photo."""
    digest = _safe_hash(path)
    twin = same_file_as(store, path, digest)
    if twin is not None:
        summary.same_file.append({"path": key, "same_as": twin})
        return None
    # With --label-from-folder the new folder names the photo: it is indexed, not taken over.
    old = None if opts.label_from_folder else moved_from(store, digest)
    if old is not None and take_over(store, old, key, st):
        summary.moved.append({"from": old, "to": key})
        if sidecars is None or sidecars == store.catalogue.sidecar_signature(key):
            return None
        summary.updated += 1  # its sidecar changed on the way: read again
    else:
        summary.new += 1
    return Work(key, st.size, st.mtime_ns, digest, _folder_label(path, opts), xmp, sidecars)


def _folder_label(path: Path, opts: IndexOptions) -> str | None:
    # A folder name with bytes that are not UTF-8 becomes a readable label ("Jos\\xe9").
    return printable(path.parent.name) if opts.label_from_folder else None


def _safe_hash(path: Path) -> str | None:
    try:
        return content_hash(path)
    except OSError:
        return None


def _run(store, weights: Path, todo, opts, summary, notify) -> None:
    # The detection workers start before the embedding model loads here, so their start-up
    # (torch and the detector's models, in each worker) overlaps this process's instead of
    # following it.
    photos, clips = split_videos(todo)
    with detections(photos, opts, store.manifest["model_config"]["align"]) as results:
        commit = Committer(store, summary, notify, _engine(opts, weights))
        for res in results:
            commit.add([res])
        commit.flush()
    _run_clips(store, weights, clips, opts, summary, notify, commit.done)


def _run_clips(store, weights: Path, clips, opts, summary, notify, done: int = 0) -> None:
    """Clips, one after another in this process (each tracks its faces with the model here); both engines."""
    if not clips:
        return
    engine = _engine(opts, weights)
    commit = Committer(store, summary, notify)
    commit.done = done
    for res in clip_results(clips, opts, engine):
        summary.clips += not res.error and not res.failed
        commit.add([res])
        commit.flush()  # a clip is minutes of work: committed at once, so a killed run keeps it
