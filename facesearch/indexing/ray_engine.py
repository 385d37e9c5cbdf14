"""``facesearch index --engine ray``: the indexing pipeline as Ray Data stages.

The same work as the local engine (:mod:`facesearch.indexing.run`), spread over a Ray
cluster, or over a Ray runtime started on this machine:

1. the driver plans the run (the same incremental ``_plan``: unchanged files are skipped);
2. CPU tasks load, detect and align each file (``detection.detect_batch``, the local
   workers' own code), and pass the chips on through Arrow;
3. a pool of actors, one GPU each when the cluster has GPUs, embeds the chips;
4. the driver writes each block of results as a Parquet shard under
   ``<index>/shards/<run id>/`` (atomically), then commits them into the index through
   ``work.commit_results``, :data:`~facesearch.indexing.work.WRITE_EVERY` files per transaction,
   and deletes the run's shards once everything is committed.

A run that dies between writing a shard and committing it leaves the shard behind; the
next run commits those files from it, without recomputing them, when their size, mtime
and hash still match and the model is the same.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from facesearch.faces.chips import assemble_chips
from facesearch.faces.detect import Face
from facesearch.core.errors import FacesearchError
from facesearch.models.weights_meta import resolve_weights
from facesearch.indexing.detection import detect_batch
from facesearch.indexing.ray_cluster import cluster_failure, ray_runtime
from facesearch.indexing.work import Committer, IndexOptions, IndexSummary, ProgressFn, Result, Work

log = logging.getLogger(__name__)

SHARDS = "shards"  # <index>/shards/<run id>/<block>.parquet
DETECT_BATCH = 8  # files per detection task: small, so the tasks spread evenly over the cores
EMBED_BATCH = 64  # files per call of an embedding actor


def require_ray() -> None:
    """Raise a one-line error with a hint when Ray (with Ray Data) is not installed."""
    try:
        import ray.data  # noqa: F401
    except ImportError as e:
        raise FacesearchError(f"the ray engine needs Ray Data, which is not installed ({e.name or e})",
                              hint="pip install 'facesearch[ray]', or use --engine local") from None


def run_ray(store, weights: Path, todo: list[Work], opts: IndexOptions, summary: IndexSummary,
            notify: ProgressFn, run_id: int) -> None:
    """Detect, embed and record ``todo`` on Ray; the ray half of ``pipeline.index_collection``."""
    root = Path(store.folder) / SHARDS
    stale = _shard_dirs(root)  # left by runs that died before committing them
    manifest = store.manifest  # a copy each time it is read
    model_id, align = manifest["model_id"], manifest["model_config"]["align"]
    saved, todo = _split_saved(todo, stale, model_id)
    commit = Committer(store, summary, notify)
    commit.add(saved)
    folder = root / str(run_id)
    if todo:
        with ray_runtime(opts.address, opts.workers), cluster_failure(opts.address, folder):
            for seq, table in enumerate(_results_stream(todo, weights, opts, model_id, align)):
                commit.add(_shard_results(table, folder / f"{seq:06d}.parquet"))
    commit.flush()
    # Every file of this run's shards is committed now, and so is every file of the stale ones this
    # run was asked for; a stale shard's other files are recomputed if they are ever asked for again.
    for d in (*stale, folder):
        shutil.rmtree(d, ignore_errors=True)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


# --- the dataset ---------------------------------------------------------


def _results_stream(todo: list[Work], weights: Path, opts: IndexOptions, model_id: str, align: str) -> Iterator:
    """Arrow tables of embedded results for ``weights`` (chips for its ``align``), as the cluster finishes
    them (in no particular order)."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    gpus = _gpus_to_use(opts.device)
    actors = max(gpus, 1)
    # The tasks' cap must differ from the actor pool's size, else Ray Data fuses detection into
    # the actors and detects on as few processes as there are embedders.
    tasks = max(int(ray.cluster_resources().get("CPU", 1)), actors + 1)
    ds = ray.data.from_items([_work_row(w) for w in todo])
    ds = ds.map_batches(_detect_stage, fn_args=((opts.detector, opts.min_face, opts.policy, align),),
                        batch_format="pyarrow", batch_size=DETECT_BATCH, num_cpus=1,
                        compute=ray.data.TaskPoolStrategy(size=tasks))
    # An actor pool: each actor loads the model once; with GPUs, one actor per GPU.
    # Ray gives each GPU actor one GPU of its own (CUDA_VISIBLE_DEVICES): "cuda:1" would not exist there.
    device = "cuda" if gpus else opts.device
    ds = ds.map_batches(_Embedder, fn_constructor_args=(str(weights), model_id, device, opts.batch_size),
                        batch_format="pyarrow", batch_size=EMBED_BATCH, num_cpus=1, num_gpus=1 if gpus else 0,
                        compute=ray.data.ActorPoolStrategy(size=actors))
    return ds.iter_batches(batch_format="pyarrow", batch_size=None)


def _gpus_to_use(device: str) -> int:
    """The GPUs in the cluster when the device allows one (auto, cuda), else 0."""
    import ray

    if device != "auto" and not device.startswith("cuda"):
        return 0
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device.startswith("cuda") and not gpus:
        raise FacesearchError(f"--device {device} was asked for, but the Ray cluster has no GPU",
                              hint="use --device auto or cpu, or join a cluster with GPUs (--address)")
    return gpus


def _detect_stage(table, init_args: tuple):
    """Ray task: a block of files -> their faces and chips (``detection.detect_batch``)."""
    works = [_row_work(row) for row in table.to_pylist()]
    return results_table(detect_batch(works, init_args), chips_for=init_args[3].split("+"))


class _Embedder:
    """Ray actor: the model, loaded once, embeds the chips of each block and drops them."""

    def __init__(self, weights: str, model_id: str, device: str, batch_size: int):
        from facesearch.models.embed import open_engine

        # On another node the driver's path may not exist: the same model by its id, then.
        path = weights if Path(weights).is_file() else resolve_weights(None, model=model_id)
        self.engine = open_engine(path, device=device, batch_size=batch_size)
        self.names = self.engine.config.align.split("+")
        self.model_id = model_id

    def __call__(self, table):
        chips = _chips_of(table, self.names)
        emb = self.engine.embed(chips)
        table = table.drop_columns([f"chip_{n}" for n in self.names])
        return _with_embeddings(table, emb, self.model_id)


# --- Arrow: results <-> tables ---------------------------------------------------------------
# Paths and error texts travel as bytes: a file name need not be UTF-8 (PEP 383 surrogates), and
# an Arrow string must be.


def _pa():
    import pyarrow as pa

    return pa


def _b(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _s(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _work_row(w: Work) -> dict:
    return {"path": _b(w.path), "size": w.size, "mtime_ns": w.mtime_ns, "hash": w.hash, "label": w.label}


def _row_work(row: dict) -> Work:
    return Work(_s(row["path"]), row["size"], row["mtime_ns"], row["hash"], row["label"])


def _schema(chips_for: list[str] = ()):
    """Columns of a result table; ``chip_<template>`` while chips travel, ``embedding`` after."""
    pa = _pa()
    pts = pa.list_(pa.list_(pa.float64()))  # per face: a flat list of coordinates, or null
    chip = pa.list_(pa.struct([("h", pa.int32()), ("w", pa.int32()), ("data", pa.binary())]))
    return pa.schema([("path", pa.binary()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("hash", pa.string()),
                      ("label", pa.string()), ("status", pa.string()), ("error", pa.binary()),
                      ("failed", pa.binary()), ("dhash", pa.int64()), ("box", pts),
                      ("score", pa.list_(pa.float64())), ("landmarks", pts), ("points5", pts),
                      *((f"chip_{n}", chip) for n in chips_for)])


def results_table(results: list[Result], chips_for: list[str]):
    """Detection results as an Arrow table, each file's chips under ``chip_<template>``."""
    cols: dict[str, list] = {name: [] for name in _schema(chips_for).names}
    for r in results:
        w = r.work
        for k, v in zip(("path", "size", "mtime_ns", "hash", "label", "error", "failed", "dhash"),
                        (_b(w.path), w.size, w.mtime_ns, w.hash, w.label, _b(r.error), _b(r.failed), r.dhash)):
            cols[k].append(v)
        cols["status"].append("bad" if r.error else ("ok" if r.faces else "noface"))
        cols["box"].append([[float(x) for x in f.box] for f in r.faces])
        cols["score"].append([float(f.score) for f in r.faces])
        cols["landmarks"].append([_flat(f.landmarks) for f in r.faces])
        cols["points5"].append([_flat(f.points5) for f in r.faces])
        for n in chips_for:
            cols[f"chip_{n}"].append([_chip_cell(c[n] if isinstance(c, dict) else c) for c in r.chips])
    return _pa().table(cols, schema=_schema(chips_for))


def _flat(points) -> list[float] | None:
    return None if points is None else np.asarray(points, np.float64).ravel().tolist()


def _chip_cell(chip: np.ndarray) -> dict:
    chip = np.ascontiguousarray(chip, np.uint8)
    return {"h": chip.shape[0], "w": chip.shape[1], "data": chip.tobytes()}


def _chips_of(table, names: list[str]) -> list:
    """Every face's chip in the table, in row order: an array, or ``{template: array}`` for a fused model."""
    per = {n: [np.frombuffer(c["data"], np.uint8).reshape(c["h"], c["w"], -1)
               for cell in table.column(f"chip_{n}").to_pylist() for c in cell] for n in names}
    return assemble_chips(per, names)


def _with_embeddings(table, emb: np.ndarray, model_id: str):
    """``table`` with each file's embeddings (a list of float32 vectors) and the model id."""
    pa = _pa()
    counts = [len(b) for b in table.column("box").to_pylist()]
    dim = emb.shape[1]
    vectors = pa.ListArray.from_arrays(pa.array(np.arange(0, emb.size + 1, dim, dtype=np.int32)),
                                       pa.array(np.ascontiguousarray(emb, np.float32).ravel()))
    per_file = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)), vectors)
    table = table.append_column("embedding", per_file)
    return table.append_column("model_id", pa.array([model_id] * table.num_rows, pa.string()))


def table_results(table) -> list[Result]:
    """An embedded result table back into results, faces and embeddings included."""
    rows = table.drop_columns(["embedding"]).to_pylist()
    vectors = table.column("embedding").combine_chunks().flatten()  # one list per face
    dim = len(vectors[0]) if len(vectors) else 1
    emb = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    out, at = [], 0
    for row in rows:
        faces = [Face(tuple(b), s, _points(lm), _points(p5))
                 for b, s, lm, p5 in zip(row["box"], row["score"], row["landmarks"], row["points5"])]
        out.append(Result(_row_work(row), error=_s(row["error"]), failed=_s(row["failed"]), dhash=row["dhash"],
                           faces=faces, embeddings=emb[at : at + len(faces)]))
        at += len(faces)
    return out


def _points(flat: list[float] | None) -> np.ndarray | None:
    return None if flat is None else np.asarray(flat, np.float64).reshape(-1, 2)


# --- shards ----------------------------------------------------------------------------------


def _shard_results(table, path: Path) -> list[Result]:
    """Write the recorded results of ``table`` as the shard ``path`` (atomically); all its results.

    Failed files stay out of the shard: they are not recorded, so a later run retries them.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from facesearch.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table.filter(pc.is_null(table.column("failed"))), tmp)
    return table_results(table)


def _shard_dirs(root: Path) -> list[Path]:
    """The shard folders under ``root``, oldest run first (a later run's shard wins)."""
    dirs = [d for d in root.glob("*") if d.is_dir()] if root.is_dir() else []
    return sorted(dirs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def _split_saved(todo: list[Work], dirs: list[Path], model_id: str) -> tuple[list[Result], list[Work]]:
    """(results a shard already holds for these very files, the files still to compute)."""
    saved = _read_shards(dirs, model_id)
    found, rest = [], []
    for w in todo:
        r = saved.get(w.path)
        if r is not None and (r.work.size, r.work.mtime_ns, r.work.hash) == (w.size, w.mtime_ns, w.hash):
            r.work = w  # this run's label option, not the dead run's
            found.append(r)
        else:
            rest.append(w)
    if found:
        log.info("%d files committed from the shards of an interrupted run", len(found))
    return found, rest


def _read_shards(dirs: list[Path], model_id: str) -> dict[str, Result]:
    """Path -> result from the shards in ``dirs`` made with ``model_id``; unreadable shards are skipped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out: dict[str, Result] = {}
    for f in (f for d in dirs for f in sorted(d.glob("*.parquet"))):
        try:
            table = pq.read_table(f)
        except (OSError, pa.ArrowException) as e:
            log.warning("skipping unreadable shard %s: %s", f, e)
            continue
        if table.num_rows and set(table.column("model_id").to_pylist()) == {model_id}:
            out.update((r.work.path, r) for r in table_results(table))
    return out
