"""Names given to photos, placed on the face they mean: ``index --label-from-folder``, ``label``,
``enroll`` and an upload's label all come here, and all use :func:`facesearch.people.placement.choose_face`.

Each returns what it did: the photos whose name was placed (on which face) and the photos where
the name could not be placed, with the reason, so the user can choose with ``--face N``.
An index written before names were placed (every face of a named photo took the name) is repaired
by the first writing command that comes here (:func:`repair_if_needed`) or by ``verify --fix``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facesearch.core.errors import FacesearchError
from facesearch.core.names import check_name
from facesearch.core.paths import canonical
from facesearch.eval.tau import TauPolicy
from facesearch.indexing.run import IndexOptions, IndexSummary, index_collection
from facesearch.people.placement import Choice, choose_face, face_at, left_to_right
from facesearch.store import labels as sql
from facesearch.store.face_index import FaceIndex
from facesearch.store.sqlite import LABELS_PLACED


def place_photos(store: FaceIndex, file_ids: list[int], position: int | None = None) -> dict:
    """Place each photo's name on one of its faces (face ``position`` left to right, when given).

    Photos of one name are one batch: each is evidence for the others. Returns
    ``{"placed": [{"path", "name", "face_id", "face", "reason"}], "unplaced": [{"path", "name", "faces", "reason"}]}``.
    """
    taus = placement_tau(TauPolicy.from_config(store.manifest["model_config"]))
    out: dict = {"placed": [], "unplaced": []}
    with store.write_transaction() as db:
        photos = [sql.photo_faces(db, f, store.dim) for f in file_ids]
        for name in sorted({p.name for p in photos if p.name is not None}):
            batch = [p for p in photos if p.name == name]
            known_files, known = sql.named_embeddings(db, name, store.dim)
            for p in batch:
                choice = _choose(p, batch, known[known_files != p.file_id], taus, position)
                _record(db, out, p, choice)
    return out


def placement_tau(policy: TauPolicy) -> tuple[float | None, float | None]:
    """``(τ, strict τ)``: a face agrees with a name's other faces within the model's verification τ
    (EER; else its FAR 1e-3 τ), and the winner must agree with one of them within the FAR 1e-3 τ.

    Measured on composed dev group photos (bench/labelled_gallery.py; 5 seeds x 8 people x 6 photos,
    placement alone): votes within the EER τ placed 233 of 240 names, none on a bystander; within the
    FAR 1e-3 τ, 194 with 5 on bystanders (the person's own crops agree less, so a bystander seen in
    several photos wins). But where the person was not detected, a look-alike bystander agreed with all
    3 other photos at 0.74-0.78 (EER τ 0.78): the strict check leaves such a photo unplaced, at a cost
    of 224 placed instead of 233, still none wrong (3 photos per person: 79 of 120, none wrong)."""
    loose = policy.verification if policy.verification is not None else policy.far1e3
    return loose, policy.far1e3


def _choose(p: sql.PhotoFaces, batch: list[sql.PhotoFaces], known: np.ndarray, taus: tuple,
            position: int | None) -> Choice:
    """The face of ``p`` its name means: by position when the user gave one, else by the rule."""
    if position is not None:
        k = face_at(p.boxes, position)
        if k is None:
            return Choice(None, f"it has {len(p.ids)} faces, no face {position}")
        return Choice(k, f"face {position} from the left, as asked")
    if p.name in p.labels:  # already on a face (an XMP region, an earlier placement): it stays there
        return Choice(p.labels.index(p.name), "the face already named so")
    free = [k for k, lab in enumerate(p.labels) if lab is None]  # a face named otherwise is someone else
    others = [o.emb for o in batch if o is not p]
    choice = choose_face(p.emb[free], others, known, *taus)
    return Choice(None if choice.face is None else free[choice.face], choice.reason)


def _record(db, out: dict, p: sql.PhotoFaces, choice: Choice) -> None:
    if choice.face is None:
        out["unplaced"].append({"path": p.path, "name": p.name, "faces": len(p.ids), "reason": choice.reason})
        return
    sql.unname_faces(db, [f for f in p.ids if f != p.ids[choice.face]], p.name)
    sql.place(db, p.ids[choice.face], p.name)
    position = left_to_right(p.boxes).index(choice.face) + 1
    out["placed"].append({"path": p.path, "name": p.name, "face_id": p.ids[choice.face], "face": position,
                          "reason": choice.reason})


def index_and_place(opts: IndexOptions, on_progress=None) -> IndexSummary:
    """``index_collection``, then the run's photo names placed (all its photos are one batch, so this
    works the same whichever engine embedded them): its summary, with ``unplaced`` and ``repaired``."""
    summary = index_collection(opts, on_progress)
    placed = place_last_run(opts.index)
    summary.names_placed, summary.unplaced, summary.repaired = placed["names_placed"], placed["unplaced"], \
        placed["repaired"]
    return summary


def place_last_run(index: os.PathLike) -> dict:
    """Place the names of the last indexing run's photos (``index``, and each batch ``watch`` indexed):
    ``{"names_placed", "unplaced", "repaired"}``; an index from before names were placed is repaired first."""
    with FaceIndex.open(index) as store:
        repaired = repair_if_needed(store)
        run = store.catalogue.last_run()
        with store.read_transaction() as db:
            todo = sql.unplaced_files(db, run["id"]) if run else []
        placed = place_photos(store, todo)
    return {"names_placed": len(placed["placed"]), "unplaced": placed["unplaced"], "repaired": repaired}


def label(index: os.PathLike, path: str, name: str, position: int | None = None) -> dict:
    """Name the photo ``path`` (or every photo under the folder ``path``) ``name``: one face each."""
    name = check_name(name, "label")
    with FaceIndex.open(index) as store:
        repair_if_needed(store)
        file_ids = store.catalogue.file_ids_under(canonical(path))
        with store.write_transaction() as db:
            file_ids = [f for f in file_ids if sql.photo_faces(db, f, store.dim).ids]
            for f in file_ids:
                sql.set_photo_name(db, f, name)
        if not file_ids:
            raise FacesearchError(f"no indexed faces under {path}", hint="index it first: facesearch index PATH")
        placed = place_photos(store, file_ids, position)
    return {"label": name, "labelled_faces": len(placed["placed"]), **placed}


def enroll(index: os.PathLike, name: str, photos: list[str], position: int | None = None, **kw) -> dict:
    """Index ``photos`` and name them ``name``: one face each, a gallery entry for identification."""
    name = check_name(name, "label")
    summary = index_collection(IndexOptions(paths=photos, index=Path(index), **kw))
    with FaceIndex.open(index) as store:
        repair_if_needed(store)
        file_ids = [f for p in photos for f in store.catalogue.file_ids_under(canonical(p))]
        with store.write_transaction() as db:
            for f in file_ids:
                sql.set_photo_name(db, f, name)
        placed = place_photos(store, file_ids, position)
    return {"label": name, "faces": len(placed["placed"]), **placed, "index_summary": summary.to_dict()}


def fix_names(index: os.PathLike) -> dict:
    """``verify --fix``'s part for names: an old index repaired, and unplaced names tried again
    (the index may hold more faces of those names now)."""
    with FaceIndex.open(index) as store:
        repaired = repair_if_needed(store)
        with store.read_transaction() as db:
            todo = sql.unplaced_files(db)
        placed = place_photos(store, todo)
    return {"repaired": repaired, "names_placed": len(placed["placed"]), "unplaced": placed["unplaced"]}


def repair_if_needed(store: FaceIndex) -> dict | None:
    """Repair an index written before names were placed (:func:`repair`); None when it needs none."""
    return None if store.state(LABELS_PLACED) == "1" else repair(store)


def repair(store: FaceIndex) -> dict:
    """Re-place every photo's name by the one-face rule; the faces that lose the name are listed.

    The old rule gave a photo's name to all its faces (and pinned them to the person): those faces
    are unnamed first, then the names placed again, all photos of a name as one batch.
    ``{"repaired_files", "unnamed": [{"face_id", "path", "name"}], "unplaced": [...]}``.
    """
    had: dict[int, tuple[str, str]] = {}
    with store.write_transaction() as db:
        file_ids = sql.files_named(db)
        for f in file_ids:
            p = sql.photo_faces(db, f, store.dim)
            mine = [i for i, lab in zip(p.ids, p.labels) if lab in (None, p.name)]
            had.update({i: (p.path, p.name) for i in mine})
            sql.unname_faces(db, mine, p.name)
    placed = place_photos(store, file_ids)
    with store.write_transaction() as db:
        sql.set_placed(db)
    kept = {p["face_id"] for p in placed["placed"]}
    unnamed = [{"face_id": i, "path": path, "name": name} for i, (path, name) in sorted(had.items()) if i not in kept]
    return {"repaired_files": len(file_ids), "unnamed": unnamed, "unplaced": placed["unplaced"]}
