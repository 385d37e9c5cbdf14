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
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from facesearch import __version__
from facesearch.core.atomic import atomic_write_json, read_json_dict
from facesearch.core.errors import FacesearchError, IndexMissingError, ModelMismatchError, os_reason
from facesearch.store import sqlite, swap
from facesearch.store.lock import WriterLock
from facesearch.store.vectors import ops
from facesearch.store.vectors.base import check_backend

MANIFEST = "manifest.json"
DB = "meta.sqlite"
FORMAT = 1
KIND = "facesearch-index"  # the manifest's marker: this folder is a facesearch index


@dataclass
class Opened:
    """An index folder opened: its database, its manifest and (writers) its lock."""

    folder: Path
    db: sqlite3.Connection
    manifest: dict
    readonly: bool
    lock: WriterLock | None


def exists(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds an index (manifest and database), after finishing or undoing a
    rebuild that a crash interrupted (:func:`facesearch.store.swap.recover`)."""
    folder = Path(folder)
    try:
        swap.recover(folder, is_index)
    except OSError:
        pass  # a folder we may not write: look at what is there
    return is_index(folder)


def is_index(folder: Path) -> bool:
    """True when ``folder`` holds an index's manifest and database."""
    return (folder / MANIFEST).is_file() and (folder / DB).is_file()


# What an index folder may hold besides its manifest (an interrupted create leaves some of these).
OURS = (DB, DB + "-wal", DB + "-shm", "lock", "faces.faiss", "faces.faiss.json", "milvus.db", "milvus.json",
        "journal", "shards", "uploads", "people", swap.COMPLETE)


def check_ours(folder: Path) -> None:
    """Refuse to make an index in a folder that holds something else: it is not ours to overwrite.

    An empty folder, a missing one, or one with only an index's own files (an interrupted create)
    is fine; a manifest counts as ours only when it says it is a facesearch index.
    """
    if folder.exists() and not folder.is_dir():
        raise FacesearchError(f"{folder} is a file, not a folder", hint="--index takes a name or a folder path")
    foreign = sorted(p.name for p in folder.iterdir()
                     if not (p.name in OURS or p.name.startswith(MANIFEST) and _our_manifest(p))) \
        if folder.is_dir() else []
    if not foreign and (folder / DB).is_file() and not _our_manifest(folder / MANIFEST) \
            and not _started_by_us(folder):
        foreign = [f"{DB}, a database facesearch did not start"]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FacesearchError(f"{folder} is not empty and holds no facesearch index (it has {shown})",
                              hint="choose a new or empty folder for the index; nothing was changed")


def _our_manifest(path: Path) -> bool:
    return _says_ours(read_json_dict(path) if path.is_file() else None)


def _says_ours(data: dict | None) -> bool:
    """Whether a manifest's contents say it is ours (older ones have no ``kind``, but our keys)."""
    return data is not None and (data.get("kind") == KIND or {"model_id", "dim", "metric"} <= data.keys())


# An interrupted create leaves a database with the schema and nothing else (a few pages, and its WAL):
# anything bigger is someone's data (another program's, or an index that lost its manifest).
_STARTED_MAX = 4 << 20


def _started_by_us(folder: Path) -> bool:
    """Whether ``folder``'s database, with no manifest beside it, is what an interrupted create of ours
    left: empty, or small with our schema. Read from a copy: the file and its WAL stay byte for byte."""
    files = [folder / name for name in (DB, DB + "-wal") if (folder / name).is_file()]
    size = sum(f.stat().st_size for f in files)
    if size == 0 or size > _STARTED_MAX:
        return size == 0
    with tempfile.TemporaryDirectory(prefix="facesearch-check-") as tmp:
        for f in files:
            shutil.copyfile(f, Path(tmp) / f.name)
        return sqlite.has_our_schema(Path(tmp) / DB)


def read_manifest(folder: Path) -> dict:
    """The manifest of the index in ``folder``; FacesearchError when unreadable or too new."""
    manifest = read_json_dict(folder / MANIFEST)
    if not _says_ours(manifest):  # another program's folder: never suggest writing into it
        raise FacesearchError(f"{folder} is not a facesearch index (its {MANIFEST} was written by another "
                              "program, or is unreadable)",
                              hint="choose another folder for the index (--index NAME|PATH); this one was not changed")
    if "model_id" not in manifest or "dim" not in manifest:
        raise FacesearchError(f"the index manifest {folder / MANIFEST} is damaged",
                              hint="rebuild it: move the index folder aside and re-run `facesearch index` on your "
                                   "photo folders")
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
    check_ours(folder)
    _make_folder(folder)
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


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FacesearchError(f"cannot create the index folder {folder}: {os_reason(e)}",
                              hint="choose a folder you can write (--index NAME|PATH)") from None


def _new_manifest(model_id: str, model_config: dict, dim: int, index_type: str, vectors: str) -> dict:
    return {
        "kind": KIND, "format": FORMAT, "model_id": model_id, "model_config": model_config, "metric": "l2",
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
