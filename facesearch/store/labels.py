"""Names given to photos, and the one face each of them lands on (SQL).

A photo's name (``--label-from-folder``, ``label PATH NAME``, ``enroll``, an upload's label) is kept
on its ``files`` row as what the user *asked*; only the face it was placed on carries it
(``faces.label``), so bystanders stay unnamed. The choice of that face is
:mod:`facesearch.people.placement`'s; this module reads what the choice needs and writes its outcome.
A photo whose name is on none of its faces is "unplaced".
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from facesearch.store.catalogue import mark_people_stale
from facesearch.store.sqlite import LABELS_PLACED, chunks, embeddings, from_db, placeholders

_UNPLACED = ("SELECT f.id FROM files f WHERE f.label IS NOT NULL AND f.n_faces > 0 AND NOT EXISTS "
             "(SELECT 1 FROM faces fa WHERE fa.file_id = f.id AND fa.label = f.label)")


@dataclass
class PhotoFaces:
    """One photo's faces: ids, boxes, embeddings and labels, in face id order."""

    file_id: int
    path: str
    name: str | None  # the photo's name (its file label)
    ids: list[int]
    boxes: list[tuple]
    emb: np.ndarray
    labels: list[str | None]


def photo_faces(db: sqlite3.Connection, file_id: int, dim: int) -> PhotoFaces:
    """The faces of one photo, with its path and file label."""
    path, name = db.execute("SELECT path, label FROM files WHERE id = ?", (file_id,)).fetchone()
    rows = db.execute("SELECT id, x1, y1, x2, y2, label, emb FROM faces WHERE file_id = ? ORDER BY id",
                      (file_id,)).fetchall()
    emb = embeddings((r[6] for r in rows), dim)
    return PhotoFaces(file_id, from_db(path), name, [r[0] for r in rows], [tuple(r[1:5]) for r in rows],
                      emb, [r[5] for r in rows])


def named_embeddings(db: sqlite3.Connection, name: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(file_ids, X)`` of the faces that carry ``name``: the evidence of what that person looks like."""
    rows = db.execute("SELECT file_id, emb FROM faces WHERE label = ?", (name,)).fetchall()
    return (np.array([r[0] for r in rows], np.int64),
            embeddings((r[1] for r in rows), dim))


def unplaced_files(db: sqlite3.Connection, run_id: int | None = None) -> list[int]:
    """Files with faces whose name is on none of them (of run ``run_id`` only, when given)."""
    if run_id is None:
        return [r[0] for r in db.execute(_UNPLACED + " ORDER BY f.id")]
    return [r[0] for r in db.execute(_UNPLACED + " AND f.run_id = ? ORDER BY f.id", (int(run_id),))]


def set_photo_name(db: sqlite3.Connection, file_id: int, name: str) -> None:
    """Name a photo: its old name leaves the face it was on, and the new one is not placed yet."""
    old = db.execute("SELECT label FROM files WHERE id = ?", (file_id,)).fetchone()[0]
    if old is not None and old != name:
        db.execute("UPDATE faces SET label = NULL WHERE file_id = ? AND label = ?", (file_id, old))
    db.execute("UPDATE files SET label = ? WHERE id = ?", (name, file_id))


def place(db: sqlite3.Connection, face_id: int, name: str) -> None:
    """Put a photo's name on the face it means."""
    if db.execute("UPDATE faces SET label = ? WHERE id = ? AND label IS NOT ?", (name, int(face_id), name)).rowcount:
        mark_people_stale(db)  # a name pins its face: `people` must cluster again


def unname_faces(db: sqlite3.Connection, face_ids: list[int], name: str) -> None:
    """Take ``name`` off faces, and out of the person of that name (pinned or not): they had it only
    because their photo did, or the user moved the photo's name to another of its faces."""
    for c in chunks(face_ids):
        named = db.execute(f"UPDATE faces SET label = NULL WHERE label = ? AND id IN ({placeholders(c)})",
                           (name, *c)).rowcount
        pinned = db.execute(f"UPDATE face_people SET person_id = NULL, pinned = 0 WHERE face_id IN "
                            f"({placeholders(c)}) AND person_id IN (SELECT id FROM people WHERE name = ?)",
                            (*c, name)).rowcount
        if named or pinned:
            mark_people_stale(db)  # a name pins its face: `people` must cluster again


def files_named(db: sqlite3.Connection) -> list[int]:
    """Every file that has a name and faces (what a repair re-places), by id."""
    return [r[0] for r in db.execute("SELECT id FROM files WHERE label IS NOT NULL AND n_faces > 0 ORDER BY id")]


def needs_repair(db: sqlite3.Connection) -> bool:
    """An index from before names were placed, with named photos: its names are not to be trusted yet."""
    flag = db.execute("SELECT value FROM state WHERE key = ?", (LABELS_PLACED,)).fetchone()
    return flag is None and db.execute("SELECT 1 FROM files WHERE label IS NOT NULL LIMIT 1").fetchone() is not None


OLD_NAMES_WARNING = ("this index was made before a photo's name named only its person's face: its names are not "
                     "used until it is repaired; run `facesearch verify --fix` (or any `index`, `label`, `people`)")


def set_placed(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO state(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET value = '1'",
               (LABELS_PLACED,))
