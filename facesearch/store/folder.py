"""The index folder: its manifest, its writer lock, and creating or opening it.

Folder layout::

    manifest.json      model id + config (with its τ calibration), metric "l2", dim, index type,
                       vector backend ("vectors"), version
    meta.sqlite        the catalogue: files, faces (with embeddings), labels, people, runs, state (WAL)
    faces.faiss(.json) the FAISS vector store's cache and its stamp (facesearch.store.vectors.faiss_store)
    milvus.db/, milvus.json  or an embedded Milvus Lite store (facesearch.store.vectors.milvus_store)
    lock               flock'ed by the one writer
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from facesearch import __version__
from facesearch.core.atomic import atomic_write_json, read_json_dict
from facesearch.core.errors import FacesearchError, IndexMissingError, ModelMismatchError
from facesearch.store import sqlite
from facesearch.store.lock import WriterLock
from facesearch.store.vectors import ops
from facesearch.store.vectors.base import check_backend

MANIFEST = "manifest.json"
DB = "meta.sqlite"
FORMAT = 1


@dataclass
class Opened:
    """An index folder opened: its database, its manifest and (writers) its lock."""

    folder: Path
    db: sqlite3.Connection
    manifest: dict
    readonly: bool
    lock: WriterLock | None


def exists(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds an index (manifest and database)."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() and (folder / DB).is_file()


def read_manifest(folder: Path) -> dict:
    """The manifest of the index in ``folder``; FacesearchError when unreadable or too new."""
    manifest = read_json_dict(folder / MANIFEST)
    if manifest is None or "model_id" not in manifest or "dim" not in manifest:
        raise FacesearchError(f"the index manifest {folder / MANIFEST} is unreadable",
                              hint=f"rebuild the index: facesearch index PATH --index {folder}")
    if int(manifest.get("format", 1)) > FORMAT:
        raise FacesearchError(f"index {folder} was written by a newer facesearch",
                              hint="upgrade facesearch (pip install -U facesearch)")
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    """Replace the manifest atomically."""
    atomic_write_json(folder / MANIFEST, manifest)


def check_model(manifest: dict, model_id: str | None, folder: Path) -> None:
    """Raise ModelMismatchError when ``model_id`` is given and the index was built with another."""
    if model_id is not None and manifest.get("model_id") != model_id:
        raise ModelMismatchError(
            f"index {folder} was built with model {manifest.get('model_id')}, not {model_id}",
            hint=f"use the weights it was built with, or re-embed: facesearch rebuild --weights ... --index {folder}")


def check_index_type(index_type: str) -> None:
    """Validate a FAISS index type name (``auto`` always passes)."""
    if index_type != "auto":
        ops.resolve_index_type(index_type, 0)


def create(folder: str | os.PathLike, model_id: str, model_config: dict, dim: int, index_type: str,
           overwrite: bool, vectors: str) -> Opened:
    """A new, empty index folder opened for writing (see :meth:`FaceIndex.create`)."""
    folder = Path(folder)
    vectors = check_backend(vectors)
    check_index_type(index_type)
    if exists(folder) and not overwrite:
        raise FacesearchError(f"an index already exists at {folder}",
                              hint="open it instead, or choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    lock = WriterLock(folder).acquire()
    try:
        # Manifest first: an interrupted create leaves a folder that exists() rejects.
        for name in (MANIFEST, DB, DB + "-wal", DB + "-shm"):
            (folder / name).unlink(missing_ok=True)
        db = sqlite.connect(folder / DB, readonly=False)
        sqlite.create_schema(db, FORMAT)
        manifest = _new_manifest(model_id, model_config, dim, index_type, vectors)
        write_manifest(folder, manifest)
    except BaseException:
        lock.release()
        raise
    return Opened(folder, db, manifest, False, lock)


def _new_manifest(model_id: str, model_config: dict, dim: int, index_type: str, vectors: str) -> dict:
    return {
        "format": FORMAT, "model_id": model_id, "model_config": model_config, "metric": "l2",
        "dim": int(dim), "facesearch_version": __version__, "index_type": index_type,
        "vectors": vectors,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def open_existing(folder: str | os.PathLike, model_id: str | None, readonly: bool) -> Opened:
    """An existing index folder opened; writers take the lock (see :meth:`FaceIndex.open`)."""
    folder = Path(folder)
    if not exists(folder):
        raise IndexMissingError(f"no face index at {folder}", hint="build one first: facesearch index PATH")
    manifest = read_manifest(folder)
    check_model(manifest, model_id, folder)
    lock = None if readonly else WriterLock(folder).acquire()
    try:
        db = sqlite.connect(folder / DB, readonly=readonly)
        if not readonly:
            db.executescript(sqlite.PHOTO_HASHES)
    except BaseException:
        if lock:
            lock.release()
        raise
    return Opened(folder, db, manifest, readonly, lock)
