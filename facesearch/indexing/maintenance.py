"""Index maintenance: info, remove, rebuild, verify, export (names: :mod:`facesearch.people.labels`).

Plain functions over an index folder; they return data and print nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from facesearch.core.atomic import atomic_path
from facesearch.core.errors import FacesearchError
from facesearch.store.lock import WriterLock
from facesearch.store import swap
from facesearch.store.face_index import FaceIndex
from facesearch.store.transfer import read_words, write_words
from facesearch.core.paths import canonical, journal_dir
from facesearch.indexing.run import IndexOptions, index_collection


def info(index: os.PathLike) -> dict:
    """Model, counts, index type, size on disk and last run."""
    with FaceIndex.open(index, readonly=True) as store:
        return {"index": str(index), "manifest": store.manifest, **store.stats()}


def sample_photos(index: os.PathLike, n: int = 24) -> list[dict]:
    """Up to ``n`` indexed photos with their face boxes (for the index report), in path order."""
    with FaceIndex.open(index, readonly=True) as store:
        ids, _ = store.all_embeddings()
        by_path: dict[str, list] = {}
        for row in store.faces(ids.tolist()):
            by_path.setdefault(row.path, []).append(list(row.box))
    return [{"path": p, "boxes": by_path[p]} for p in sorted(by_path)[:n]]


def remove(index: os.PathLike, paths: list[str]) -> dict:
    """Delete the entries of ``paths`` (files, or folders: everything under them) from both stores."""
    with FaceIndex.open(index) as store:
        n = store.remove_paths([canonical(p) for p in paths])
    if n == 0:
        raise FacesearchError(f"nothing under {', '.join(map(str, paths))} is in the index",
                              hint="check the path (`facesearch info` shows the index); nothing was changed")
    return {"removed_files": n}


def verify(index: os.PathLike, fix: bool = False) -> dict:
    """Check FAISS against SQLite against the files on disk; ``fix`` rebuilds the FAISS part."""
    with FaceIndex.open(index, readonly=not fix) as store:
        return store.verify(fix=fix)


def rebuild(index: os.PathLike, weights: str | None = None, index_type: str | None = None, **kw) -> dict:
    """Re-embed with new weights (re-reading the images), or rebuild the FAISS index type.

    With new weights the new index is built beside the old one, which stays usable
    until the new one is complete; then the folders are swapped.
    """
    index = Path(index)
    if weights is None:
        with FaceIndex.open(index) as store:
            store.rebuild_vectors(index_type=index_type)
            return {"rebuilt": "faiss", "index_type": store.manifest.get("index_type")}
    # The live index stays readable but takes no writes until the swap: a label or remove made
    # meanwhile would be silently lost with the old folder (they now fail: "index is locked").
    with WriterLock(index):
        with FaceIndex.open(index, readonly=True) as store:
            files = store.file_paths(status="ok")
            words = read_words(store)
        tmp = swap.staging(index)
        shutil.rmtree(tmp, ignore_errors=True)
        summary = index_collection(IndexOptions(paths=files, index=tmp, weights=weights,
                                                index_type=index_type or "auto", **kw))
        with FaceIndex.open(tmp) as new:
            write_words(new, words)  # labels and people follow faces, not files
        if journal_dir(index).is_dir():  # dedupe journals: undo must survive a rebuild
            shutil.copytree(journal_dir(index), journal_dir(tmp), dirs_exist_ok=True)
        swap.swap_in(index)
    return {"rebuilt": "embeddings", "summary": {**summary.to_dict(), "index": str(index)}}


def export(index: os.PathLike, out: str) -> dict:
    """Write all embeddings with paths, boxes and labels, one row per face in id order."""
    with FaceIndex.open(index, readonly=True) as store:
        ids, emb = store.all_embeddings()
        rows = store.faces(ids.tolist())
    cols = {
        "ids": ids.astype(np.int64), "emb": emb.astype(np.float32),
        "paths": np.array([r.path for r in rows], dtype=str),
        "boxes": np.array([list(r.box) for r in rows], dtype=np.float32).reshape(-1, 4),
        "labels": np.array([r.label or "" for r in rows], dtype=str),
    }
    if out.endswith(".npz"):
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **cols)
    elif out.endswith(".parquet"):
        _write_parquet(out, cols)
    else:
        raise FacesearchError(f"unknown export format: {out}", hint="use a .npz or .parquet file name")
    return {"out": out, "rows": int(len(ids))}


def _write_parquet(out: str, cols: dict) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise FacesearchError("parquet export needs pyarrow", hint="pip install pyarrow, or export to .npz") from e
    table = pa.table({k: list(v) if v.ndim > 1 else v for k, v in cols.items()})
    with atomic_path(out) as tmp:
        pq.write_table(table, str(tmp))
