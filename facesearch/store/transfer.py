"""What the user said about faces, carried from one index to another built from the same photos.

``rebuild --weights`` re-detects and re-embeds every photo into a new index. The user's words
belong to *faces*, not files: a name given to one of two people in a photo must stay on that face
and not spread to the other. So each old face hands its label and its person (with the pin and the
"not these people" list) to the new face of the same file that overlaps it by
:data:`~facesearch.store.carry.LABEL_CARRY_IOU`, as re-indexing does (:mod:`facesearch.store.carry`).
A file's own label (``--label-from-folder``, ``label PATH``) stays the file's. People keep their ids
and names.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from facesearch.store.carry import best_overlaps
from facesearch.store.face_index import FaceIndex
from facesearch.store.people import has_people
from facesearch.store.records import FaceRecord
from facesearch.store.labels import needs_repair
from facesearch.store.sqlite import LABELS_PLACED, from_db, to_db


@dataclass
class FaceWords:
    """One face's box and what the user said about it."""

    box: tuple[float, float, float, float]
    label: str | None
    people: tuple | None  # (person_id, pinned, not_people) or None


@dataclass
class Words:
    """Everything an index knows from its user, by file path."""

    faces: dict[str, list[FaceWords]] = field(default_factory=dict)
    file_labels: dict[str, str] = field(default_factory=dict)
    people: list[tuple[int, str | None]] = field(default_factory=list)
    names_placed: bool = True  # False: names from before they were placed on one face, still to repair


def read_words(store: FaceIndex) -> Words:
    """The labels, people and corrections of ``store``'s faces and files, in one read transaction."""
    people = has_people(store)
    out = Words()
    with store.read_transaction() as db:
        out.names_placed = not needs_repair(db)
        for path, label in db.execute("SELECT path, label FROM files WHERE label IS NOT NULL"):
            out.file_labels[from_db(path)] = label
        for row in db.execute(_FACES_SQL if people else _FACES_SQL_NO_PEOPLE):
            face = FaceWords(tuple(row[1:5]), row[5], tuple(row[6:9]) if row[6:9] != (None, None, None) else None)
            if face.label is not None or face.people is not None:
                out.faces.setdefault(from_db(row[0]), []).append(face)
        if people:
            out.people = [tuple(r) for r in db.execute("SELECT id, name FROM people ORDER BY id")]
    return out


_FACES_SQL = ("SELECT fi.path, fa.x1, fa.y1, fa.x2, fa.y2, fa.label, fp.person_id, fp.pinned, fp.not_people "
              "FROM faces fa JOIN files fi ON fi.id = fa.file_id LEFT JOIN face_people fp ON fp.face_id = fa.id")
_FACES_SQL_NO_PEOPLE = ("SELECT fi.path, fa.x1, fa.y1, fa.x2, fa.y2, fa.label, NULL, NULL, NULL "
                        "FROM faces fa JOIN files fi ON fi.id = fa.file_id")


def write_words(store: FaceIndex, words: Words) -> int:
    """Give ``store``'s faces the words of the old faces they overlap; the number of faces that got some."""
    carried = 0
    with store.write_transaction() as db:
        db.executemany("INSERT OR IGNORE INTO people(id, name) VALUES (?, ?)", words.people)
        db.executemany("UPDATE files SET label = ? WHERE path = ?",
                       [(label, to_db(path)) for path, label in words.file_labels.items()])
        for path, old in words.faces.items():
            carried += _carry_file(db, path, old)
        if not words.names_placed:  # the new index inherits the repair the old one still needed
            db.execute("DELETE FROM state WHERE key = ?", (LABELS_PLACED,))
    return carried


def _carry_file(db: sqlite3.Connection, path: str, old: list[FaceWords]) -> int:
    rows = db.execute("SELECT fa.id, fa.x1, fa.y1, fa.x2, fa.y2 FROM faces fa JOIN files fi ON fi.id = fa.file_id "
                      "WHERE fi.path = ?", (to_db(path),)).fetchall()
    new = [FaceRecord(box=tuple(r[1:5])) for r in rows]
    carried = 0
    # Each old face goes to the one new face it overlaps most; best_overlaps answers per new face.
    for (face_id, *_), k in zip(rows, best_overlaps([w.box for w in old], new)):
        if k is None:
            continue
        if old[k].label is not None:
            db.execute("UPDATE faces SET label = ? WHERE id = ?", (old[k].label, face_id))
        if old[k].people is not None:
            db.execute("INSERT OR REPLACE INTO face_people(face_id, person_id, pinned, not_people) "
                       "VALUES (?, ?, ?, ?)", (face_id, *old[k].people))
        carried += 1
    return carried
