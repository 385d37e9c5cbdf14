"""Writing files into the catalogue: a batch of new file states, or files forgotten.

Each function runs one write transaction and returns the face ids it removed and added, so
:class:`~facesearch.store.face_index.FaceIndex` can mirror exactly that change into the vector
store. Labels and people of re-detected faces carry over (:mod:`facesearch.store.carry`), and those
of a forgotten file come back with a file of the same content (:mod:`facesearch.store.removed`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Iterable, Sequence

import numpy as np

from facesearch.store import carry, moments, removed
from facesearch.store.catalogue import Catalogue, replace_sidecars
from facesearch.store.records import STATUSES, FaceRecord, FileUpdate, as_face
from facesearch.store.sqlite import chunks, placeholders as qs, to_db
from facesearch.store.vectors import ops


def validated(u: FileUpdate, dim: int) -> FileUpdate:
    """``u`` checked, with faces as :class:`FaceRecord` and embeddings as an (n, dim) matrix.

    A file with status ``ok`` and no faces becomes ``noface``.
    """
    if u.status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {u.status!r}")
    faces = [as_face(f) for f in u.faces]
    emb = np.zeros((0, dim), np.float32) if not faces else ops.as_matrix(u.embeddings, dim)
    if len(emb) != len(faces):
        raise ValueError(f"{u.path}: {len(faces)} faces but {len(emb)} embeddings")
    status = "noface" if u.status == "ok" and not faces else u.status
    return FileUpdate(os.fspath(u.path), u.size, u.mtime_ns, u.hash, status, u.error, faces, emb, u.label,
                      u.dhash, u.sidecars)


def write_files(cat: Catalogue, updates: Sequence[FileUpdate]) -> tuple[list[int], list[list[int]]]:
    """Store validated updates in one transaction: (old face ids removed, new face ids of each file)."""
    removed: list[int] = []
    new_ids: list[list[int]] = []
    with cat.write_transaction() as db:
        next_id = _next_face_id(db)
        for u in updates:
            old, ids = _write_file(db, u, next_id, cat.run_id)
            next_id += len(ids)
            removed.extend(old)
            new_ids.append(ids)
        if removed or any(new_ids):
            cat.bump_generation(db)
    return removed, new_ids


def remove_under(cat: Catalogue, paths: Iterable[str | os.PathLike]) -> tuple[int, list[int]]:
    """Forget the files at or under ``paths``: (number of files, their face ids)."""
    with cat.write_transaction() as db:
        file_ids = sorted({fid for p in paths for fid in cat.file_ids_under(p)})
        return len(file_ids), _delete_files(db, file_ids)


def remove_files(cat: Catalogue, file_ids: list[int]) -> list[int]:
    """Forget files by id; their face ids."""
    with cat.write_transaction() as db:
        return _delete_files(db, file_ids)


def _write_file(db: sqlite3.Connection, u: FileUpdate, next_id: int, run_id: int | None
                ) -> tuple[list[int], list[int]]:
    """Upsert one file and replace its faces; (old face ids, new face ids)."""
    file_id = _upsert_file(db, u, run_id)
    _replace_photo_hash(db, file_id, u.dhash)
    if u.sidecars is not None:
        replace_sidecars(db, file_id, u.sidecars)
    old = carry.read_old(db, file_id)
    if not old.ids:  # a photo that was forgotten and came back (any path): the words kept for it
        old = _returning(db, file_id, u.hash) or old
    db.execute("DELETE FROM faces WHERE file_id = ?", (file_id,))
    ids = list(range(next_id, next_id + len(u.faces)))
    _insert_faces(db, file_id, ids, u.faces, carry.labels_for(old, u.faces), u.embeddings)
    carry.restore_people(db, old, ids, u.faces)  # people survive re-indexing
    return old.ids, ids


def _returning(db: sqlite3.Connection, file_id: int, digest: str | None) -> carry.OldFaces | None:
    """What was kept when a file with this content left the index (its file label restored here)."""
    kept = removed.take(db, digest)
    if kept is None:
        return None
    old, label = kept
    db.execute("UPDATE files SET label = COALESCE(label, ?) WHERE id = ?", (label, file_id))
    return old


def _upsert_file(db: sqlite3.Connection, u: FileUpdate, run_id: int | None) -> int:
    """Insert or update the file's row (a None label keeps the stored one); its id."""
    db.execute(
        "INSERT INTO files(path, size, mtime_ns, hash, status, error, n_faces, label, indexed_at, run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
        "mtime_ns = excluded.mtime_ns, hash = excluded.hash, status = excluded.status, error = excluded.error, "
        "n_faces = excluded.n_faces, label = COALESCE(excluded.label, files.label), "
        "indexed_at = excluded.indexed_at, run_id = excluded.run_id",
        (to_db(u.path), u.size, u.mtime_ns, u.hash, u.status, u.error, len(u.faces), u.label, time.time(), run_id))
    return db.execute("SELECT id FROM files WHERE path = ?", (to_db(u.path),)).fetchone()[0]


def _replace_photo_hash(db: sqlite3.Connection, file_id: int, dhash: int | None) -> None:
    db.execute("DELETE FROM photo_hashes WHERE file_id = ?", (file_id,))
    if dhash is not None:
        db.execute("INSERT INTO photo_hashes(file_id, dhash) VALUES (?, ?)", (file_id, dhash))


def _insert_faces(db: sqlite3.Connection, file_id: int, ids: list[int], faces: Sequence[FaceRecord],
                  labels: list[str | None], embeddings) -> None:
    db.executemany(
        "INSERT INTO faces(id, file_id, x1, y1, x2, y2, score, landmarks, label, emb) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(fid, file_id, *map(float, f.box), _opt_float(f.score), _landmarks_json(f.landmarks), lab,
          np.asarray(e, dtype="<f4").tobytes())
         for fid, f, lab, e in zip(ids, faces, labels, embeddings)])
    moments.write(db, [(fid, f.moment) for fid, f in zip(ids, faces) if f.moment is not None])


def _delete_files(db: sqlite3.Connection, file_ids: list[int]) -> list[int]:
    """Delete files and their faces; the deleted face ids. Bumps the generation if faces went."""
    face_ids: list[int] = []
    removed.keep(db, file_ids)  # restorable by content hash if the photo comes back
    for c in chunks(file_ids):
        face_ids += [r[0] for r in db.execute(f"SELECT id FROM faces WHERE file_id IN ({qs(c)})", c)]
        db.execute(f"DELETE FROM faces WHERE file_id IN ({qs(c)})", c)
        db.execute(f"DELETE FROM files WHERE id IN ({qs(c)})", c)
    if face_ids:
        Catalogue.bump_generation(db)
    return face_ids


def _next_face_id(db: sqlite3.Connection) -> int:
    """The next face id: never reuses a deleted one (AUTOINCREMENT's sqlite_sequence)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'faces'").fetchone()
    return (row[0] if row else 0) + 1


def _opt_float(x) -> float | None:
    return None if x is None else float(x)


def _landmarks_json(lm) -> str | None:
    return None if lm is None else json.dumps(np.round(np.asarray(lm, dtype=np.float64), 2).tolist())
