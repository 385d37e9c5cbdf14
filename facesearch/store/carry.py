"""What a re-detected face inherits from the face it replaces: its label, its person, the user's word.

Re-indexing a file deletes its faces and stores the new detections. A new face that overlaps
an old one by :data:`LABEL_CARRY_IOU` (box IoU) is taken to be the same face: it keeps the old
face's label and its ``face_people`` row (person, pin, "not these people"), so labels and
people survive re-indexing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facesearch.faces.face import iou
from facesearch.store.records import FaceRecord

LABEL_CARRY_IOU = 0.5  # a re-detected face keeps the label of an old face it overlaps this much

Box = tuple[float, float, float, float]


@dataclass
class OldFaces:
    """A file's faces before they are replaced: ids, labelled boxes and people rows."""

    ids: list[int]
    labelled: list[tuple[Box, str]]
    people: list[tuple[Box, tuple]]  # (box, (person_id, pinned, not_people))


def read_old(db: sqlite3.Connection, file_id: int) -> OldFaces:
    """What the faces of ``file_id`` could hand on; read before they are deleted."""
    faces = db.execute("SELECT id, x1, y1, x2, y2, label FROM faces WHERE file_id = ?", (file_id,)).fetchall()
    people = db.execute(
        "SELECT fa.x1, fa.y1, fa.x2, fa.y2, fp.person_id, fp.pinned, fp.not_people FROM faces fa "
        "JOIN face_people fp ON fp.face_id = fa.id WHERE fa.file_id = ?", (file_id,)).fetchall()
    return OldFaces([r[0] for r in faces], [(tuple(r[1:5]), r[5]) for r in faces if r[5] is not None],
                    [(tuple(r[0:4]), tuple(r[4:])) for r in people])


def labels_for(old: OldFaces, faces: Sequence[FaceRecord]) -> list[str | None]:
    """New faces' labels: their own, else that of the best-overlapping labelled old face."""
    best = best_overlaps([box for box, _ in old.labelled], faces)
    return [f.label if f.label is not None else (old.labelled[k][1] if k is not None else None)
            for f, k in zip(faces, best)]


def restore_people(db: sqlite3.Connection, old: OldFaces, new_ids: list[int], faces: Sequence[FaceRecord]) -> None:
    """Give each new face the people row of the old face it replaces (after it is inserted)."""
    best = best_overlaps([box for box, _ in old.people], faces)
    db.executemany("INSERT INTO face_people(face_id, person_id, pinned, not_people) VALUES (?, ?, ?, ?)",
                   [(fid, *old.people[k][1]) for fid, k in zip(new_ids, best) if k is not None])


def best_overlaps(old_boxes: Sequence[Box], faces: Sequence[FaceRecord]) -> list[int | None]:
    """For each new face, the index of the old box it overlaps most, if by LABEL_CARRY_IOU."""
    out = []
    for f in faces:
        ious = [iou(b, f.box) for b in old_boxes]
        k = int(np.argmax(ious)) if ious else None
        out.append(k if k is not None and ious[k] >= LABEL_CARRY_IOU else None)
    return out

