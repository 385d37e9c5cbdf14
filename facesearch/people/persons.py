"""People: an index's faces grouped into persons, named once, with corrections that stick.

``people()`` clusters the faces when the index changed since the last clustering (or when
asked), then lists the persons. Clustering (:func:`facesearch.people.cluster.chinese_whispers` on the
index's kNN graph within the model's clustering τ, ``TauPolicy.people``: the best of the methods
compared on dev by ``bench/people.py``) is a full run that keeps every
decision of the user: faces the user placed (naming, merging, splitting, labels) stay where they
are, people the user keeps apart never merge, a face told "not this person" never rejoins it, and
two faces of one photo are never one person. Unnamed people keep their ids across runs where
their faces mostly stay together; faces without enough evidence stay unassigned.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from facesearch.people import cluster
from facesearch.people.labels import repair_if_needed
from facesearch.people.tracks import fold
from facesearch.core.errors import DataError, IndexLockedError
from facesearch.core.names import check_name
from facesearch.eval.tau import TauPolicy
from facesearch.store import people as catalogue
from facesearch.store.face_index import FaceIndex

GRAPH_K = 40  # nearest faces each face is linked to: dev BCubed F rises to k 30-40 and is level to 80 (bench/people.py)
MIN_FACES = 2  # a person needs this many faces (unless the user placed one there)


@dataclass
class PeopleOptions:
    index: os.PathLike
    recluster: bool = False


def people(opts: PeopleOptions) -> dict:
    """The index's people (JSON contract of ``facesearch people --json``), clustering first if stale.

    Returns ``{"people": [...], "unassigned": [...], "clustered": bool, "warnings": [...], "tau": …,
    "tau_source": …}``; while another process writes the index, the last clustering with a warning.
    """
    with FaceIndex.open(opts.index, readonly=True) as store:
        if not (opts.recluster or _stale(store)):
            return {**catalogue.listing(store), "clustered": False, "warnings": []}
    try:
        store = FaceIndex.open(opts.index)
    except IndexLockedError as e:  # an `index` run is writing: show the last clustering, say so
        with FaceIndex.open(opts.index, readonly=True) as store:
            return {**catalogue.listing(store), "clustered": False,
                    "warnings": [f"{e.message}: these are the people as last clustered; run `facesearch people` "
                                 "again when it is done"]}
    with store:
        info = cluster_index(store)
        warnings = [f"{c['path']}: {len(c['face_ids'])} faces are labelled {c['name']!r}; one person cannot be two "
                    "faces of one photo, so " + ("only face %d keeps it" % c["kept"] if c["kept"] else "none is pinned")
                    for c in info["label_conflicts"]]
        return {**catalogue.listing(store), "clustered": True, "warnings": warnings, **info}


def _stale(store: FaceIndex) -> bool:
    if not catalogue.has_people(store):
        return True
    return store.state(catalogue.PEOPLE_GENERATION) != str(store.generation())


def cluster_index(store: FaceIndex) -> dict:
    """Cluster every face of an open (writable) index into people, keeping the user's decisions."""
    tau, source = TauPolicy.from_config(store.manifest["model_config"]).people()
    repair_if_needed(store)  # an index from before names were placed: its names re-placed first
    conflicts = catalogue.pin_labelled(store)
    state = catalogue.read_state(store)
    ids, x = store.all_embeddings()
    if not np.array_equal(ids, state.face_ids):
        raise DataError("the index changed while people were being clustered", hint="run `facesearch people` again")
    pinned = np.where(state.pinned, state.person, -1)
    # A clip's track is one node (its faces one person); tracks on screen together are kept apart.
    nodes = fold(ids, state.file_ids, pinned, state.not_people, store.moments())
    i, j, _ = cluster.knn_graph(x, GRAPH_K, tau)
    i, j = nodes.edges(i, j)
    labels = nodes.face_labels(cluster.chinese_whispers(nodes.n, i, j, min_size=MIN_FACES, groups=nodes.groups,
                                                        pinned=nodes.pinned, forbid=nodes.forbid, apart=nodes.apart))
    catalogue.write_assignment(store, ids, _people_of(labels, pinned, state.person), store.generation())
    return {"tau": round(tau, 4), "tau_source": source, "label_conflicts": conflicts}


def _people_of(labels: np.ndarray, pinned: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Each face's person: its cluster's pinned person, else the unnamed person most of the cluster
    had before (each old id used once, biggest clusters first), else a new one (``-2 - k``)."""
    out = np.full(len(labels), -1, np.int64)
    used: set[int] = set(int(p) for p in pinned[pinned >= 0])
    fresh = 0
    for k in range(labels.max(initial=-1) + 1):  # drop_small numbers clusters largest first
        members = np.flatnonzero(labels == k)
        mine = pinned[members][pinned[members] >= 0]
        if len(mine):
            out[members] = mine[0]
            continue
        for pid, _ in Counter(old[members][old[members] >= 0].tolist()).most_common():
            if pid not in used:
                used.add(pid)
                out[members] = pid
                break
        else:
            out[members] = -2 - fresh
            fresh += 1
    return out


# --- corrections (each one transaction, under the index's writer lock) ------------------------


def name_person(index: os.PathLike, person: int, name: str) -> dict:
    """Name a person: its faces are pinned to it and labelled ``name`` (so ``query`` names them)."""
    name = check_name(name)
    with FaceIndex.open(index) as store, store.write_transaction() as db:
        catalogue.check_person(db, person)
        other = db.execute("SELECT id FROM people WHERE name = ? AND id != ?", (name, int(person))).fetchone()
        if other:
            raise DataError(f"person {other[0]} is already called {name!r}",
                            hint=f"merge them instead: facesearch people merge {other[0]} {person}")
        faces = catalogue.faces_of(db, person)
        db.execute("UPDATE people SET name = ? WHERE id = ?", (name, int(person)))
        catalogue.pin(db, faces, person)
        catalogue.relabel(db, faces, name)
    return {"person": int(person), "name": name, "faces": len(faces)}


def merge_people(index: os.PathLike, keep: int, other: int) -> dict:
    """Move every face of ``other`` into ``keep`` (pinned) and drop ``other``."""
    if int(keep) == int(other):
        raise DataError(f"cannot merge person {keep} with itself", hint="give two different people")
    with FaceIndex.open(index) as store, store.write_transaction() as db:
        a, b = catalogue.check_person(db, keep), catalogue.check_person(db, other)
        if a and b and a != b:
            raise DataError(f"person {keep} is {a!r} and person {other} is {b!r}",
                            hint="rename one of them first if they are the same person")
        faces = catalogue.faces_of(db, keep) + catalogue.faces_of(db, other)
        catalogue.check_one_per_photo(db, faces)  # cannot-link: never two faces of one photo
        db.execute("DELETE FROM people WHERE id = ?", (int(other),))
        db.execute("UPDATE people SET name = ? WHERE id = ?", (a or b, int(keep)))
        catalogue.pin(db, faces, keep)
        if a or b:
            catalogue.relabel(db, faces, a or b)
    return {"person": int(keep), "name": a or b, "faces": len(faces)}


def split_person(index: os.PathLike, person: int, face_ids: list[int]) -> dict:
    """Move ``face_ids`` out of ``person`` into a new unnamed person; both stay apart from now on."""
    with FaceIndex.open(index) as store, store.write_transaction() as db:
        name = catalogue.check_person(db, person)
        faces = catalogue.faces_of(db, person)
        moved = sorted({int(f) for f in face_ids})
        stray = sorted(set(moved) - set(faces))
        if stray or not moved or len(moved) == len(faces):
            raise DataError(f"faces {stray or moved} are not a part of person {person} that can be split off",
                            hint="give some, not all, of its faces (facesearch people --json lists them)")
        new = int(db.execute("INSERT INTO people(name) VALUES (NULL)").lastrowid)
        catalogue.pin(db, sorted(set(faces) - set(moved)), person)
        catalogue.pin(db, moved, new)
        if name:
            catalogue.unlabel(db, moved, name)
    return {"person": int(person), "new_person": new, "moved": len(moved)}


def remove_face(index: os.PathLike, face_id: int) -> dict:
    """"Not this person": the face leaves its person and never rejoins it."""
    with FaceIndex.open(index) as store, store.write_transaction() as db:
        person, nots = catalogue.not_people(db, face_id)
        if person is None:
            raise DataError(f"face {face_id} is in no person", hint="`facesearch people --json` lists face ids")
        name = catalogue.check_person(db, person)
        catalogue.set_not_people(db, face_id, nots | {person})
        if name:
            catalogue.unlabel(db, [int(face_id)], name)
    return {"face_id": int(face_id), "removed_from": person}


def assign_faces(index: os.PathLike, person: int, face_ids: list[int]) -> dict:
    """Sort faces into ``person`` by hand (unassigned ones, or faces of someone else): pinned there, named
    with its name, and no longer marked "not this person" for it (the user has now said they are)."""
    moved = sorted({int(f) for f in face_ids})
    if not moved:
        raise DataError("no faces to assign", hint="give one or more face ids (facesearch people --json lists them)")
    with FaceIndex.open(index) as store:
        try:
            store.faces(moved)
        except KeyError:
            raise DataError(f"faces {moved} are not all in this index", hint="`facesearch people --json` lists them") \
                from None
        with store.write_transaction() as db:
            name = catalogue.check_person(db, person)
            catalogue.check_one_per_photo(db, catalogue.faces_of(db, person) + moved)
            for face in moved:
                _leave_for(db, face, int(person))
            catalogue.pin(db, moved, person)
            if name:
                catalogue.relabel(db, moved, name)
    return {"person": int(person), "name": name, "assigned": len(moved)}


def _leave_for(db, face: int, person: int) -> None:
    """A face leaves its person (and its name) for ``person``, which it is no longer "not"."""
    try:
        old, nots = catalogue.not_people(db, face)
    except DataError:  # never clustered: no row to change yet
        return
    if old is not None and old != person:
        old_name = catalogue.check_person(db, old)
        if old_name:
            catalogue.unlabel(db, [face], old_name)
    catalogue.set_not_people(db, face, nots - {person})
