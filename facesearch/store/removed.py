"""Files the index forgot, kept restorable by content hash: a photo that comes back gets its names back.

When a file leaves the index (``index --prune``, ``watch`` after its grace window, ``remove``) and
the user had said something about it -- a label on the file or a face, a person, a pin, a "not these
people" -- that is written here first, under the file's content hash, for :data:`KEEP_DAYS` days (or
until a ``rebuild`` makes a new index). When a file with that hash is indexed again, under any path,
:func:`take` hands those words to its new faces the way re-indexing does (:mod:`facesearch.store.carry`:
each new face gets the words of the old face it overlaps), so the faces may be re-embedded but the
labels and people come back. The person is the same row, name included, so no "ghost" person is
left holding the name while the returning faces form an unnamed one. The table is
``removed_files`` (:data:`facesearch.store.sqlite.SCHEMA`).
"""

from __future__ import annotations

import json
import sqlite3
import time

from facesearch.store.carry import OldFaces
from facesearch.store.sqlite import chunks, placeholders as qs

KEEP_DAYS = 30  # how long a forgotten file's words wait for it to come back

def keep(db: sqlite3.Connection, file_ids: list[int]) -> None:
    """Inside the transaction that deletes ``file_ids``, before it does: keep what the user said about them."""
    db.execute("DELETE FROM removed_files WHERE removed_at < ?", (time.time() - KEEP_DAYS * 86400,))
    for c in chunks(file_ids):
        for fid, digest, path, label in db.execute(
                f"SELECT id, hash, path, label FROM files WHERE hash IS NOT NULL AND id IN ({qs(c)})", c).fetchall():
            faces = _said(db, fid)
            if label is not None or faces:
                db.execute("INSERT INTO removed_files(hash, path, label, faces, removed_at) VALUES (?, ?, ?, ?, ?)",
                           (digest, path, label, json.dumps(faces), time.time()))


def _said(db: sqlite3.Connection, file_id: int) -> list[dict]:
    """The faces of ``file_id`` that carry a label or a people row, with their person's name."""
    rows = db.execute(
        "SELECT fa.x1, fa.y1, fa.x2, fa.y2, fa.label, fp.person_id, fp.pinned, fp.not_people, p.name FROM faces fa "
        "LEFT JOIN face_people fp ON fp.face_id = fa.id LEFT JOIN people p ON p.id = fp.person_id "
        "WHERE fa.file_id = ?", (file_id,)).fetchall()
    return [{"box": list(r[0:4]), "label": r[4], "person": [r[5], r[6], r[7]] if r[6] is not None else None,
             "name": r[8]} for r in rows if r[4] is not None or r[6] is not None]


def take(db: sqlite3.Connection, digest: str | None) -> tuple[OldFaces, str | None] | None:
    """The words kept for a file with content ``digest`` (the latest one), removed from the table as
    they are handed on: (faces as :class:`OldFaces`, the file's label); None when nothing was kept."""
    if digest is None:
        return None
    row = db.execute("SELECT id, label, faces FROM removed_files WHERE hash = ? ORDER BY removed_at DESC LIMIT 1",
                     (digest,)).fetchone()
    if row is None:
        return None
    db.execute("DELETE FROM removed_files WHERE id = ?", (row[0],))
    old = OldFaces([], [], [])
    for f in json.loads(row[2]):
        box = tuple(f["box"])
        if f["label"] is not None:
            old.labelled.append((box, f["label"]))
        if f["person"] is not None:
            old.people.append((box, (_person(db, f["person"][0], f["name"]), *f["person"][1:])))
    return old, row[1]


def _person(db: sqlite3.Connection, person_id: int | None, name: str | None) -> int | None:
    """The person a returning face goes back to: the same row if it is still there, else the person
    who has the name now, else the row made again (an unnamed person clustering dropped: none)."""
    if person_id is not None and db.execute("SELECT 1 FROM people WHERE id = ?", (person_id,)).fetchone():
        return person_id
    if name is None:
        return None
    row = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else int(db.execute("INSERT INTO people(name) VALUES (?)", (name,)).lastrowid)
