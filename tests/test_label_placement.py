"""A name given to a photo names one face (the person's); cannot-link holds; old indexes are repaired.

Always on: the placement rule against a brute-force oracle, and the store-level flows (placement,
repair of an old-style index, cannot-link) on synthetic vectors. With ``../shared/data``: real dev
faces composed into group photos, through the CLI.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.models.weights_meta import read_meta, resolve_weights
from facesearch.people import labels
from facesearch.people.persons import PeopleOptions, people
from facesearch.people.placement import MAJORITY, MARGIN, choose_face, face_at, left_to_right
from facesearch.store.face_index import FaceIndex, FileUpdate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import labelled_gallery as gallery  # noqa: E402  (the group-photo gallery the benchmark builds)

CONFIG = read_meta(resolve_weights(None))["config"]
DIM = CONFIG["embedding_dim"]


# -- the rule, against a brute-force oracle ------------------------------------------------------


def oracle(cands, photos, faces, tau, strict=None):
    """choose_face written out pair by pair: votes, then majority, then margin, then one strict agreement."""
    if len(cands) <= 1:
        return 0 if len(cands) == 1 else None
    votes = []
    for c in cands:
        v = sum(any(np.linalg.norm(c - o) <= tau for o in other) for other in photos)
        v += sum(np.linalg.norm(c - f) <= tau for f in faces)
        votes.append(v)
    best = max(votes)
    k = votes.index(best)
    rest = votes[:k] + votes[k + 1:]
    if best == 0 or best <= MAJORITY * (len(photos) + len(faces)) or best - max(rest) < MARGIN:
        return None
    close = [np.linalg.norm(cands[k] - o) for other in photos for o in other] + \
        [np.linalg.norm(cands[k] - f) for f in faces]
    return k if strict is None or min(close) <= strict else None


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", range(40))
def test_choose_face_agrees_with_brute_force_oracle(seed):
    rng = np.random.default_rng(seed)
    d = 8
    person, others = unit(rng.normal(size=d)), unit(rng.normal(size=(4, d)))
    photos = [unit(np.vstack([person + 0.3 * rng.normal(size=d), others[rng.integers(4, size=rng.integers(0, 3))]]))
              for _ in range(rng.integers(0, 5))]
    faces = unit(person + 0.4 * rng.normal(size=(rng.integers(0, 4), d))).reshape(-1, d)
    cands = unit(np.vstack([person + 0.3 * rng.normal(size=d), others[: rng.integers(0, 3)]]))
    tau = float(rng.uniform(0.3, 1.2))
    strict = None if seed % 2 else tau * float(rng.uniform(0.3, 1.0))
    assert choose_face(cands, photos, faces, tau, strict).face == oracle(cands, photos, faces, tau, strict)


def test_choose_face_without_evidence_places_nothing_but_an_only_face():
    two = unit(np.eye(2, 4))
    assert choose_face(two[:1], [], np.zeros((0, 4)), 0.5).face == 0
    none = choose_face(two, [], np.zeros((0, 4)), 0.5)
    assert none.face is None and "look" in none.reason
    assert choose_face(two, [two[:1]], np.zeros((0, 4)), None).face is None  # no τ: never a guess


def test_a_bystander_in_some_photos_never_outvotes_the_person_in_all():
    rng = np.random.default_rng(0)
    ann, bob = unit(rng.normal(size=16)), unit(rng.normal(size=16))
    # Ann was not detected in this photo; Bob, beside her in 2 of 6 photos, is: no majority, no name.
    photos = [unit(np.vstack([ann, bob]))] * 2 + [unit(ann[None])] * 4
    assert choose_face(unit(np.vstack([bob, rng.normal(size=16)])), photos, np.zeros((0, 16)), 0.3).face is None
    assert choose_face(unit(np.vstack([bob, ann])), photos, np.zeros((0, 16)), 0.3).face == 1


def test_a_look_alike_agreeing_only_loosely_is_not_named():
    rng = np.random.default_rng(2)
    ann = unit(rng.normal(size=16))
    alike = unit(ann + 0.35 * unit(rng.normal(size=16)))  # ~0.35 from each of Ann's faces
    photos = [unit(ann[None])] * 3  # Ann herself was not detected in this photo; her look-alike was
    cands = unit(np.vstack([alike, rng.normal(size=16)]))
    assert choose_face(cands, photos, np.zeros((0, 16)), 0.4).face == 0
    assert choose_face(cands, photos, np.zeros((0, 16)), 0.4, strict_tau=0.2).face is None


def test_positions_count_faces_from_the_left_from_one():
    boxes = [(300, 0, 350, 50), (10, 40, 60, 90), (150, 5, 200, 55)]
    assert left_to_right(boxes) == [1, 2, 0]
    assert [face_at(boxes, n) for n in (1, 2, 3, 4, 0)] == [1, 2, 0, None, None]


# -- store-level flows on synthetic vectors (no model) -------------------------------------------


def box(k):
    return (10.0 + 100 * k, 10.0, 90.0 + 100 * k, 90.0)


def group_index(tmp_path, old_style=False, in_run=False):
    """Ann's folder: 4 photos of Ann (position varies) beside a different stranger each; returns
    (index, Ann's face id in each photo)."""
    rng = np.random.default_rng(1)
    ann = unit(rng.normal(size=DIM))
    store = FaceIndex.create(tmp_path / "idx", "m", CONFIG, DIM)
    updates, where = [], []
    for k in range(4):
        x = unit(np.vstack([ann + 0.01 * rng.normal(size=DIM), rng.normal(size=DIM)]))
        order = [0, 1] if k % 2 == 0 else [1, 0]
        updates.append(FileUpdate(str(tmp_path / "Ann" / f"g{k}.jpg"), 1, 1, faces=[{"box": box(j)} for j in range(2)],
                                  embeddings=x[order], label="Ann"))
        where.append(order.index(0))
    with store:
        if in_run:  # as an `index` run (or a `watch` batch) writes them
            store.catalogue.begin_run({})
        ids = store.write_batch(updates)
        if old_style:  # what the code before issue 36 left: names on files, trusted for every face
            with store.write_transaction() as db:
                db.execute("DELETE FROM state WHERE key = 'labels_placed'")
    return tmp_path / "idx", [ids[k][where[k]] for k in range(4)]


def face_labels(idx) -> dict[int, str | None]:
    with sqlite3.connect(Path(idx) / "meta.sqlite") as db:
        return dict(db.execute("SELECT id, label FROM faces"))


def test_folder_names_land_on_the_person_only(tmp_path):
    idx, ann = group_index(tmp_path)
    with FaceIndex.open(idx) as store:
        out = labels.place_photos(store, labels.sql.unplaced_files(store.catalogue.db))
    assert not out["unplaced"] and sorted(p["face_id"] for p in out["placed"]) == sorted(ann)
    assert {f for f, lab in face_labels(idx).items() if lab} == set(ann)


def test_watch_places_the_names_of_each_batch_it_indexed(tmp_path):
    from facesearch.cli.commands_watch import _placing

    idx, ann = group_index(tmp_path, in_run=True)
    seen = []
    _placing(seen.append, idx)({"event": "indexed", "files": 4})
    assert seen == [{"event": "indexed", "files": 4, "unplaced": []}]
    assert {f for f, lab in face_labels(idx).items() if lab} == set(ann)


def test_an_old_index_is_repaired_on_first_write_and_lists_the_faces_that_lose_the_name(tmp_path):
    idx, ann = group_index(tmp_path, old_style=True)
    with sqlite3.connect(Path(idx) / "meta.sqlite") as db:  # the old `label PATH`: every face labelled
        db.execute("UPDATE faces SET label = 'Ann'")
        assert labels.sql.needs_repair(db)  # what `query` (read-only) warns about
    r = CliRunner().invoke(app, ["verify", "--fix", "--index", str(idx), "--json"])
    assert r.exit_code == 0, r.output
    names = json.loads(r.stdout)["names"]["repaired"]
    assert names["repaired_files"] == 4 and len(names["unnamed"]) == 4
    assert {u["face_id"] for u in names["unnamed"]}.isdisjoint(ann) and names["unnamed"][0]["name"] == "Ann"
    assert {f for f, lab in face_labels(idx).items() if lab} == set(ann)
    with sqlite3.connect(Path(idx) / "meta.sqlite") as db:
        assert not labels.sql.needs_repair(db)
    again = CliRunner().invoke(app, ["verify", "--fix", "--index", str(idx), "--json"])
    assert json.loads(again.stdout)["names"]["repaired"] is None  # once: the index says it is repaired


def test_people_repairs_an_old_index_before_clustering(tmp_path):
    idx, ann = group_index(tmp_path, old_style=True)
    result = people(PeopleOptions(idx))
    (person,) = [p for p in result["people"] if p["name"] == "Ann"]
    assert sorted(f["face_id"] for f in person["faces"]) == sorted(ann)


def test_cannot_link_two_faces_of_one_photo_labelled_alike_are_reported_not_obeyed(tmp_path):
    idx, ann = group_index(tmp_path)
    with FaceIndex.open(idx) as store:
        labels.place_photos(store, labels.sql.unplaced_files(store.catalogue.db))
        both = [f for f, in store.catalogue.db.execute("SELECT id FROM faces WHERE file_id = 1")]
        store.set_label(both, "Ann")  # two faces of one photo named alike (two XMP regions, by hand)
    result = people(PeopleOptions(idx))
    for p in result["people"]:
        photos = [f["path"] for f in p["faces"]]
        assert len(photos) == len(set(photos)), p
    assert any("one person cannot be two faces of one photo" in w for w in result["warnings"])
    assert result["label_conflicts"][0]["face_ids"] == sorted(both)


# -- real dev faces in composed group photos, through the CLI -----------------------------------


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def groups(tmp_path_factory, shared_data):
    """3 people x 4 group photos with bystanders from a disjoint pool, indexed with --label-from-folder."""
    data = shared_data / "dev" / "pins_celebs"
    root = tmp_path_factory.mktemp("groups")
    named, bystanders = gallery.split_people(data, 3, seed=0)
    g = gallery.build_gallery(data, root / "gallery", named, bystanders[:4], per_person=4, seed=0)
    r = invoke("index", root / "gallery", "--index", root / "idx", "--label-from-folder", "--workers", 0, "--json")
    assert r.exit_code == 0, r.output
    return {"root": root, "idx": root / "idx", "named": named, "bystanders": bystanders[:4], "summary":
            json.loads(r.stdout), "data": data, **g}


def copy_index(groups, tmp_path) -> Path:
    shutil.copytree(groups["idx"], tmp_path / "idx")
    return tmp_path / "idx"


def test_folder_labels_name_only_the_person_and_a_bystander_stays_a_stranger(groups):
    faces = gallery.face_truth(groups["idx"], groups["photos"])
    named = [(who, lab) for _, who, lab in faces if lab is not None]
    assert named and all(who == lab for who, lab in named)  # never a bystander
    assert len(named) + len(groups["summary"]["unplaced"]) == len(groups["photos"])
    for u in groups["summary"]["unplaced"]:
        assert u["reason"] and u["faces"] >= 1
    by = groups["bystanders"][0]
    r = invoke("query", groups["probes"][by][0], "--index", groups["idx"], "--json")
    assert r.exit_code == 0, r.output
    assert all(f.get("identity") is None for f in json.loads(r.stdout)["faces"])


def test_label_face_n_names_the_face_at_that_position(groups, tmp_path):
    idx = copy_index(groups, tmp_path)
    with sqlite3.connect(idx / "meta.sqlite") as db:
        found = dict(db.execute("SELECT path, n_faces FROM files"))
    photo, cast = next((p, c) for p, c in groups["photos"].items() if len(c) == 3 == found[p])
    r = invoke("label", photo, "Zed", "--face", 2, "--index", idx)
    assert r.exit_code == 0, r.output
    assert "face 2 from the left is Zed" in r.output
    faces = [(who, lab) for _, who, lab in gallery.face_truth(idx, groups["photos"]) if lab == "Zed"]
    assert faces == [(cast[1][0], "Zed")]  # cast is in left-to-right order
    r = invoke("label", photo, "Zed", "--face", 7, "--index", idx, "--json")
    assert r.exit_code == 1 and "no face 7" in json.loads(r.stdout)["unplaced"][0]["reason"]


def test_enroll_a_two_person_photo_names_one_face_or_says_it_could_not(groups, tmp_path):
    idx = copy_index(groups, tmp_path)
    person = groups["named"][0]
    rng = np.random.default_rng(3)
    crops = [groups["probes"][person][0], groups["probes"][groups["bystanders"][1]][0]]
    from PIL import Image

    from facesearch.photos.synthetic import group_photo

    img, boxes = group_photo([Image.open(c) for c in crops], rng)
    img.save(tmp_path / "two.jpg")
    r = invoke("enroll", "Newcomer", tmp_path / "two.jpg", "--index", idx, "--json")
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["faces"] == 0 and out["unplaced"][0]["path"].endswith("two.jpg")
    r = invoke("enroll", person, tmp_path / "two.jpg", "--index", idx, "--json")  # a name the index knows
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["faces"] == 1
    with sqlite3.connect(idx / "meta.sqlite") as db:
        x1, y1, x2, y2 = db.execute("SELECT fa.x1, fa.y1, fa.x2, fa.y2 FROM faces fa JOIN files fi ON fi.id = fa.file_id WHERE fi.path LIKE "
                         "'%two.jpg' AND fa.label = ?", (person,)).fetchone()
        others = db.execute("SELECT COUNT(*) FROM faces fa JOIN files fi ON fi.id = fa.file_id WHERE fi.path LIKE "
                            "'%two.jpg' AND fa.label IS NOT NULL").fetchone()[0]
    b = boxes[0]  # where the person was pasted
    assert others == 1 and b[0] <= (x1 + x2) / 2 <= b[2] and b[1] <= (y1 + y2) / 2 <= b[3]


def test_people_never_gives_one_person_two_faces_of_a_photo(groups, tmp_path):
    idx = copy_index(groups, tmp_path)
    r = invoke("people", "--index", idx, "--json")
    assert r.exit_code == 0, r.output
    for p in json.loads(r.stdout)["people"]:
        photos = [f["path"] for f in p["faces"]]
        assert len(photos) == len(set(photos))


def test_words_carried_to_a_rebuilt_index_keep_an_old_index_due_for_repair(tmp_path):
    from facesearch.store.transfer import read_words, write_words

    old, _ = group_index(tmp_path / "old", old_style=True)
    new, _ = group_index(tmp_path / "new")
    with FaceIndex.open(old, readonly=True) as store:
        words = read_words(store)
    with FaceIndex.open(new) as store:
        write_words(store, words)
    with sqlite3.connect(Path(new) / "meta.sqlite") as db:
        assert labels.sql.needs_repair(db)  # not trusted because it was rebuilt: its first write repairs it
