"""People in the catalogue (SQLite): who each face is, and what the user said about it.

Two tables beside ``faces`` (created by writers on open, like ``photo_hashes``):

- ``people(id, name)``: a person, named or not;
- ``face_people(face_id, person_id, pinned, not_people)``: a face's person; ``pinned`` when the
  user put it there (naming, merging, splitting) so no re-clustering moves it; ``not_people``
  (JSON ids) the people the user said it is *not*.

Both survive re-indexing: a re-detected face takes the row of the old face it overlaps
(:mod:`facesearch.store.carry`). Face *labels* and named people are one thing seen twice: naming a
person labels its faces (so ``query`` answers with the name), and labelled faces are pinned to
the person of that name when people are clustered.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import numpy as np

from facesearch.core.errors import DataError, NotFoundError
from facesearch.store.catalogue import PEOPLE_GENERATION
from facesearch.store.face_index import FaceIndex
from facesearch.store.sqlite import chunks, from_db, placeholders



@dataclass
class PeopleState:
    """Every face with its photo, person (-1: none), pin and "not" constraints."""

    face_ids: np.ndarray
    file_ids: np.ndarray
    person: np.ndarray
    pinned: np.ndarray
    not_people: list[set[int]]


def has_people(store: FaceIndex) -> bool:
    """False for an index written before people existed and opened read-only (no tables yet)."""
    with store.read_transaction() as db:
        return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'face_people'").fetchone() is not None


def read_state(store: FaceIndex) -> PeopleState:
    """The people state of every face, in face id order."""
    rows = _read(store, "SELECT fa.id, fa.file_id, fp.person_id, COALESCE(fp.pinned, 0), fp.not_people FROM faces fa "
                        "LEFT JOIN face_people fp ON fp.face_id = fa.id ORDER BY fa.id")
    return PeopleState(
        np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
        np.array([-1 if r[2] is None else r[2] for r in rows], np.int64), np.array([bool(r[3]) for r in rows]),
        [set(json.loads(r[4])) if r[4] else set() for r in rows])


def _read(store: FaceIndex, sql: str) -> list[tuple]:
    """The rows of a query on the people tables; none where they do not exist yet."""
    with store.read_transaction() as db:
        return db.execute(sql).fetchall() if has_people(store) else []


def write_assignment(store: FaceIndex, face_ids: np.ndarray, person: np.ndarray, generation: int) -> None:
    """Store a clustering: each unpinned face's person (-1: unassigned); drop people left empty.

    ``person`` values are existing people ids, or ``-2 - k`` for the k-th new person.
    """
    with store.write_transaction() as db:
        new: dict[int, int] = {}
        for p in sorted({int(v) for v in person if v <= -2}, reverse=True):
            new[p] = int(db.execute("INSERT INTO people(name) VALUES (NULL)").lastrowid)
        rows = [(int(f), new.get(int(p), int(p)) if p != -1 else None) for f, p in zip(face_ids, person)]
        db.executemany("INSERT INTO face_people(face_id, person_id) VALUES (?, ?) ON CONFLICT(face_id) DO UPDATE "
                       "SET person_id = excluded.person_id WHERE face_people.pinned = 0", rows)
        _label_named_faces(db)
        db.execute("DELETE FROM people WHERE name IS NULL AND id NOT IN "
                   "(SELECT person_id FROM face_people WHERE person_id IS NOT NULL)")
        db.execute("INSERT INTO state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                   (PEOPLE_GENERATION, str(generation)))


def _label_named_faces(db: sqlite3.Connection) -> None:
    """A named person's unlabelled faces take its name (what ``query`` names them by)."""
    db.execute("UPDATE faces SET label = (SELECT p.name FROM face_people fp JOIN people p ON p.id = fp.person_id "
               "WHERE fp.face_id = faces.id) WHERE label IS NULL AND id IN (SELECT fp.face_id FROM face_people fp "
               "JOIN people p ON p.id = fp.person_id WHERE p.name IS NOT NULL)")


def person_for_name(db: sqlite3.Connection, name: str) -> int:
    """The id of the person called ``name``, created if there is none."""
    row = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else int(db.execute("INSERT INTO people(name) VALUES (?)", (name,)).lastrowid)


def pin_labelled(store: FaceIndex) -> list[dict]:
    """Pin every labelled face to the person of that name: a label is the user's word, unless the
    user also said the face is not that person, or it would give the person two faces of one photo.

    Cannot-link is the law: where labels name two faces of one photo alike, the face already pinned
    there stays (if one is), the others are left to clustering, and each case is returned
    (``{"path", "name", "face_ids", "kept"}``) to be reported, never obeyed.
    """
    with store.write_transaction() as db:
        rows = db.execute("SELECT fa.id, fa.file_id, fi.path, fa.label, fp.not_people, fp.person_id, "
                          "COALESCE(fp.pinned, 0) FROM faces fa JOIN files fi ON fi.id = fa.file_id "
                          "LEFT JOIN face_people fp ON fp.face_id = fa.id WHERE fa.label IS NOT NULL "
                          "ORDER BY fa.id").fetchall()
        wanted: dict[tuple[int, int], list[tuple]] = {}  # (person, photo) -> its faces
        for fid, file_id, path, label, nots, person, pinned in rows:
            pid = person_for_name(db, label)
            if pid not in set(json.loads(nots or "[]")):
                wanted.setdefault((pid, file_id), []).append((fid, from_db(path), label, person == pid and pinned))
        by_person: dict[int, list[int]] = {}
        conflicts = []
        for (pid, _), faces in wanted.items():
            keep = _one_per_photo(faces)
            if len(faces) > 1:
                conflicts.append({"path": faces[0][1], "name": faces[0][2], "face_ids": [f[0] for f in faces],
                                  "kept": keep})
                unpin(db, [f[0] for f in faces if f[0] != keep], pid)
            if keep is not None:
                by_person.setdefault(pid, []).append(keep)
        for pid, faces in by_person.items():
            pin(db, faces, pid)
        _unpin_second_faces(db)
    return conflicts


def _unpin_second_faces(db: sqlite3.Connection) -> None:
    """A pin that gives a person a second face of one photo (an index from before cannot-link held for
    pins, a hand-made one) is dropped: the photo's first face keeps the person, clustering places the rest."""
    db.execute("UPDATE face_people SET person_id = NULL, pinned = 0 WHERE face_id IN (SELECT fp.face_id FROM "
               "face_people fp JOIN faces fa ON fa.id = fp.face_id WHERE fp.pinned = 1 AND EXISTS (SELECT 1 FROM "
               "face_people fq JOIN faces fb ON fb.id = fq.face_id WHERE fq.pinned = 1 AND fq.person_id = "
               "fp.person_id AND fb.file_id = fa.file_id AND fb.id < fa.id) "
               "AND NOT EXISTS (SELECT 1 FROM video_faces v WHERE v.face_id = fa.id))")  # a clip: tracks, not faces


def _one_per_photo(faces: list[tuple]) -> int | None:
    """The face of one photo a person may hold: the only one, else the one the user already
    pinned there (if exactly one), else none."""
    if len(faces) == 1:
        return faces[0][0]
    pinned = [f[0] for f in faces if f[3]]
    return pinned[0] if len(pinned) == 1 else None


def check_one_per_photo(db: sqlite3.Connection, face_ids: list[int]) -> None:
    """DataError when ``face_ids`` (a person's faces to be) hold two faces of one photo, or of two tracks
    of one clip on screen at the same time."""
    seen: dict[int, int] = {}
    tracks: dict[int, list[tuple]] = {}  # clip file -> (face, track, start, end)
    for c in chunks(sorted(set(face_ids))):
        for fid, file_id, track, a, b in db.execute(
                "SELECT f.id, f.file_id, v.track, v.start_s, v.end_s FROM faces f LEFT JOIN video_faces v "
                f"ON v.face_id = f.id WHERE f.id IN ({placeholders(c)})", c):
            if track is not None:
                _check_together(tracks.setdefault(file_id, []), (fid, track, a, b))
                continue
            if file_id in seen:
                raise DataError(f"faces {seen[file_id]} and {fid} are in one photo: one person cannot be both",
                                hint="two faces of one photo are two people; leave one of them out")
            seen[file_id] = fid


def _check_together(held: list[tuple], face: tuple) -> None:
    """DataError when ``face`` is of another track of its clip on screen at the same time as one ``held``."""
    fid, track, a, b = face
    for other, t, c, d in held:
        if t != track and a <= d and c <= b:
            raise DataError(f"faces {other} and {fid} are on screen together in one clip: one person cannot be both",
                            hint="two faces seen at the same time are two people; leave one of them out")
    held.append(face)


def unpin(db: sqlite3.Connection, face_ids: list[int], person: int) -> None:
    """Take faces out of ``person`` (back to clustering, which keeps them apart by photo)."""
    for c in chunks(face_ids):
        db.execute(f"UPDATE face_people SET person_id = NULL, pinned = 0 WHERE person_id = ? "
                   f"AND face_id IN ({placeholders(c)})", (person, *c))


def check_person(db: sqlite3.Connection, person: int) -> str | None:
    """The person's name; NotFoundError for an unknown id."""
    row = db.execute("SELECT name FROM people WHERE id = ?", (int(person),)).fetchone()
    if row is None:
        raise NotFoundError(f"no person {person} in this index", hint="`facesearch people` lists them")
    return row[0]


def faces_of(db: sqlite3.Connection, person: int) -> list[int]:
    return [r[0] for r in db.execute("SELECT face_id FROM face_people WHERE person_id = ?", (int(person),))]


def pin(db: sqlite3.Connection, face_ids: list[int], person: int) -> None:
    """Put faces in a person as the user's decision."""
    for c in chunks(face_ids):
        db.execute(f"UPDATE face_people SET person_id = ?, pinned = 1 WHERE face_id IN ({placeholders(c)})", (person, *c))
        db.executemany("INSERT OR IGNORE INTO face_people(face_id, person_id, pinned) VALUES (?, ?, 1)",
                       [(f, person) for f in c])


def not_people(db: sqlite3.Connection, face_id: int) -> tuple[int | None, set[int]]:
    """A face's person (None if none) and the people the user said it is not; DataError if unknown."""
    row = db.execute("SELECT person_id, not_people FROM face_people WHERE face_id = ?", (int(face_id),)).fetchone()
    if row is None:
        raise DataError(f"face {face_id} is in no person", hint="`facesearch people --json` lists face ids")
    return row[0], set(json.loads(row[1] or "[]"))


def set_not_people(db: sqlite3.Connection, face_id: int, nots: set[int]) -> None:
    """Unassign a face and record the people it is not (it may still join anyone else)."""
    db.execute("UPDATE face_people SET person_id = NULL, pinned = 0, not_people = ? WHERE face_id = ?",
               (json.dumps(sorted(nots)), int(face_id)))


def relabel(db: sqlite3.Connection, faces: list[int], name: str) -> None:
    """Label faces with their person's name."""
    for c in chunks(faces):
        db.execute(f"UPDATE faces SET label = ? WHERE id IN ({placeholders(c)})", (name, *c))


def unlabel(db: sqlite3.Connection, faces: list[int], name: str) -> None:
    """Clear a person's name from faces that leave it."""
    for c in chunks(faces):
        db.execute(f"UPDATE faces SET label = NULL WHERE label = ? AND id IN ({placeholders(c)})", (name, *c))


def listing(store: FaceIndex) -> dict:
    """``{"people": [{"id", "name", "faces": [{"face_id", "path", "box"}]}], "unassigned": [...]}``,
    people largest first (named before unnamed at equal size), faces by path."""
    rows = _read(store, "SELECT fa.id, fi.path, fa.x1, fa.y1, fa.x2, fa.y2, fp.person_id, p.name FROM faces fa "
                        "JOIN files fi ON fi.id = fa.file_id LEFT JOIN face_people fp ON fp.face_id = fa.id "
                        "LEFT JOIN people p ON p.id = fp.person_id ORDER BY fi.path, fa.id")
    people: dict[int, dict] = {}
    unassigned = []
    for fid, path, x1, y1, x2, y2, pid, name in rows:
        face = {"face_id": fid, "path": from_db(path), "box": [round(v, 1) for v in (x1, y1, x2, y2)]}
        if pid is None:
            unassigned.append(face)
        else:
            people.setdefault(pid, {"id": pid, "name": name, "faces": []})["faces"].append(face)
    ordered = sorted(people.values(), key=lambda p: (-len(p["faces"]), p["name"] is None, p["id"]))
    return {"people": ordered, "unassigned": unassigned}


def named_faces(store: FaceIndex, persons: list[int] | None = None) -> list[tuple[str, tuple, int, str]]:
    """``(path, box, person_id, name)`` of every face of a named person (of ``persons`` only, when given),
    by path; DataError for an unknown or unnamed person in ``persons``."""
    if persons:
        with store.read_transaction() as db:
            for p in persons:
                if check_person(db, p) is None:
                    raise DataError(f"person {p} has no name to write",
                                    hint=f"name it first: facesearch people name {p} NAME")
    rows = _read(store, "SELECT fi.path, fa.x1, fa.y1, fa.x2, fa.y2, p.id, p.name FROM faces fa "
                        "JOIN files fi ON fi.id = fa.file_id JOIN face_people fp ON fp.face_id = fa.id "
                        "JOIN people p ON p.id = fp.person_id WHERE p.name IS NOT NULL ORDER BY fi.path, fa.id")
    wanted = set(persons or ())
    return [(from_db(r[0]), tuple(r[1:5]), r[5], r[6]) for r in rows if not wanted or r[5] in wanted]
