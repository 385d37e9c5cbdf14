"""People: clustering an index into persons, and corrections that survive re-clustering and re-indexing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.core.errors import DataError, NotFoundError
from facesearch.eval.tau import TauPolicy
from facesearch.store.face_index import FaceIndex, FileUpdate
from facesearch.models.weights_meta import read_meta, resolve_weights
from facesearch.people.persons import (PeopleOptions, cluster_index, merge_people, name_person, people, remove_face,
                               split_person)

CONFIG = read_meta(resolve_weights(None))["config"]  # the shipped calibration: the τ people are clustered with
DIM = CONFIG["embedding_dim"]


def person_vectors(n_people: int, per: int, seed: int, spread: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Well-apart people (mean distance ~1.4) with tight faces (~0.3 apart): one right answer."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, DIM))
    labels = np.repeat(np.arange(n_people), per)
    x = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True) + spread * rng.normal(
        size=(len(labels), DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def box(k: int = 0) -> tuple[float, float, float, float]:
    return (10.0 + 100 * k, 10.0, 90.0 + 100 * k, 90.0)


def make_index(tmp_path, x, names=None) -> tuple:
    """One photo per face (``photos/p<k>.jpg``); ``names`` labels some faces."""
    store = FaceIndex.create(tmp_path / "idx", "m", CONFIG, DIM)
    updates = [FileUpdate(str(tmp_path / "photos" / f"p{k:03d}.jpg"), 1, 1, faces=[{"box": box(), "label": None}],
                          embeddings=x[k:k + 1], label=(names or {}).get(k)) for k in range(len(x))]
    with store:
        store.write_batch(updates)
    return tmp_path / "idx", updates


def partition(result: dict) -> dict[str, int]:
    """Photo path -> person id (unassigned faces left out)."""
    return {f["path"]: p["id"] for p in result["people"] for f in p["faces"]}


def test_people_are_found_and_every_face_is_listed_once(tmp_path):
    x, truth = person_vectors(5, 4, seed=0)
    idx, updates = make_index(tmp_path, x)
    result = people(PeopleOptions(idx))
    assert result["clustered"] and len(result["people"]) == 5 and not result["unassigned"]
    got = partition(result)
    for k, u in enumerate(updates):  # same person <=> same cluster
        assert all((got[u.path] == got[v.path]) == (truth[k] == truth[m]) for m, v in enumerate(updates))
    assert set(result["people"][0]) >= {"id", "name", "faces"} and set(result["people"][0]["faces"][0]) >= {"path",
                                                                                                             "box"}
    again = people(PeopleOptions(idx))
    assert not again["clustered"] and partition(again) == got  # nothing changed: no re-clustering


def test_a_loner_stays_unassigned(tmp_path):
    x, _ = person_vectors(3, 3, seed=1)
    loner, _ = person_vectors(1, 1, seed=99)
    idx, updates = make_index(tmp_path, np.concatenate([x, loner]))
    result = people(PeopleOptions(idx))
    assert [f["path"] for f in result["unassigned"]] == [updates[-1].path] and len(result["people"]) == 3


def test_two_faces_of_one_photo_are_never_one_person(tmp_path):
    x, _ = person_vectors(1, 4, seed=2)
    store = FaceIndex.create(tmp_path / "idx", "m", CONFIG, DIM)
    with store:  # a photo showing one person twice (a mirror, a poster): the same face vector twice
        store.write_batch([FileUpdate(str(tmp_path / "twice.jpg"), 1, 1, faces=[{"box": box(0)}, {"box": box(1)}],
                                      embeddings=np.stack([x[0], x[0]]))]
                          + [FileUpdate(str(tmp_path / f"o{k}.jpg"), 1, 1, faces=[{"box": box()}],
                                        embeddings=x[k:k + 1]) for k in range(1, 4)])
    result = people(PeopleOptions(tmp_path / "idx"))
    for p in result["people"]:
        paths = [f["path"] for f in p["faces"]]
        assert len(paths) == len(set(paths))


def test_named_merged_and_split_people_survive_reclustering_and_reindexing(tmp_path):
    x, truth = person_vectors(4, 4, seed=3)
    idx, updates = make_index(tmp_path, x)
    first = people(PeopleOptions(idx))
    pid = partition(first)
    ann, bob = pid[updates[0].path], pid[updates[4].path]
    name_person(idx, ann, "Ann")
    merge_people(idx, ann, bob)  # the user says persons 0 and 1 are one: Ann
    carl = pid[updates[8].path]
    split = split_person(idx, carl, [_face_id(first, updates[8].path)])  # and one face of person 2 is someone else
    with FaceIndex.open(idx) as store:  # re-index every file: new face ids, same boxes
        store.write_batch(updates)
    after = people(PeopleOptions(idx, recluster=True))
    got = partition(after)
    assert {got[u.path] for u in updates[:8]} == {ann}
    assert got[updates[8].path] == split["new_person"] and {got[u.path] for u in updates[9:12]} == {carl}
    assert next(p for p in after["people"] if p["id"] == ann)["name"] == "Ann"
    with FaceIndex.open(idx, readonly=True) as store:  # naming labels the faces: query answers with the name
        assert {store.search(x[k:k + 1], 1)[0][0].label for k in range(8)} == {"Ann"}


def test_not_this_person_is_remembered(tmp_path):
    x, _ = person_vectors(2, 4, seed=4)
    idx, updates = make_index(tmp_path, x)
    first = people(PeopleOptions(idx))
    face = _face_id(first, updates[0].path)
    person = partition(first)[updates[0].path]
    name_person(idx, person, "Dee")
    remove_face(idx, face)
    for _ in range(2):
        result = people(PeopleOptions(idx, recluster=True))
        assert partition(result).get(updates[0].path) != person
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.faces([face])[0].label is None


def test_incremental_add_matches_a_full_run(tmp_path):
    x, _ = person_vectors(6, 4, seed=5)
    order = np.random.default_rng(0).permutation(len(x))
    idx, updates = make_index(tmp_path / "a", x[order[:12]])
    people(PeopleOptions(idx))
    with FaceIndex.open(idx) as store:
        store.write_batch([FileUpdate(str(tmp_path / "a" / "photos" / f"n{k:03d}.jpg"), 1, 1, faces=[{"box": box()}],
                                      embeddings=x[order[k]:order[k] + 1]) for k in range(12, 24)])
    grown = people(PeopleOptions(idx))
    full_idx, _ = make_index(tmp_path / "b", x[order])
    full = people(PeopleOptions(full_idx))
    as_sets = lambda r: sorted(sorted(x_key(f["path"]) for f in p["faces"]) for p in r["people"])  # noqa: E731
    assert as_sets(grown) == as_sets(full)


def x_key(path: str) -> str:
    """Rows of x by position: a[k] for the first 12 (p<k>), n<k> for the rest, the same in the full index."""
    name = path.rsplit("/", 1)[1]
    return f"{int(name[1:4]):03d}"


def test_corrections_refuse_what_makes_no_sense(tmp_path):
    x, _ = person_vectors(2, 3, seed=6)
    idx, updates = make_index(tmp_path, x)
    pid = partition(people(PeopleOptions(idx)))
    a, b = pid[updates[0].path], pid[updates[3].path]
    name_person(idx, a, "Eve")
    name_person(idx, b, "Fay")
    with pytest.raises(DataError, match="is 'Eve' and person"):
        merge_people(idx, a, b)
    with pytest.raises(DataError, match="already called 'Eve'"):
        name_person(idx, b, "Eve")
    with pytest.raises(NotFoundError, match="no person 999"):  # the service's 404
        name_person(idx, 999, "Gus")
    with pytest.raises(DataError):
        name_person(idx, a, "  ")


def _face_id(result: dict, path: str) -> int:
    return next(f["face_id"] for p in result["people"] for f in p["faces"] if f["path"] == path)


def test_people_cli_json_and_exit_codes(tmp_path):
    x, _ = person_vectors(3, 3, seed=7)
    idx, updates = make_index(tmp_path, x)
    runner = CliRunner()
    r = runner.invoke(app, ["people", "--index", str(idx), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["people"]) == 3 and out["unassigned"] == []
    person = out["people"][0]["id"]
    r = runner.invoke(app, ["people", "--index", str(idx), "name", str(person), "Ann [bold]", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["name"] == "Ann [bold]"
    listed = runner.invoke(app, ["people", "--index", str(idx)])
    assert listed.exit_code == 0 and "Ann [bold]" in listed.stdout  # user text is never markup
    assert runner.invoke(app, ["people", "--index", str(idx), "merge", "5000", str(person)]).exit_code == 1
    assert runner.invoke(app, ["people", "--index", str(idx), "merge", "x", "y"]).exit_code == 2
    html = tmp_path / "people.html"
    assert runner.invoke(app, ["people", "--index", str(idx), "--html", str(html), "-q"]).exit_code == 0
    assert "Ann [bold]" in html.read_text() and "Unassigned" not in html.read_text()


def test_clustering_settings_come_from_the_tau_policy():
    tau, source = TauPolicy.from_config(CONFIG).people()
    assert tau == CONFIG["tau_people"] and CONFIG["tau_far1e4"] <= tau <= CONFIG["tau_far1e3"] < CONFIG["tau"]
    assert "clustering τ" in source
    # A model calibrated before the clustering τ existed clusters within its FAR 1e-3 τ, as it did.
    older = {k: v for k, v in CONFIG.items() if k != "tau_people"}
    tau, source = TauPolicy.from_config(older).people()
    assert tau == CONFIG["tau_far1e3"] and "FAR 1e-3" in source


def test_people_tau_finds_the_range_where_people_separate():
    from facesearch.people.cluster import people_tau

    # 12 people, 6 photos each: photos of one person within ~0.3 of each other, people ~1.4 apart.
    x, labels = person_vectors(12, 6, seed=4)
    same = np.linalg.norm(x[:, None] - x[None], axis=2)[labels[:, None] == labels[None]].max()
    apart = np.linalg.norm(x[:, None] - x[None], axis=2)[labels[:, None] != labels[None]].min()
    assert same < apart  # the data has a clean cut
    tau, f = people_tau(x, labels, 0.01, 2.0, k=10, steps=41)
    assert f == 1.0 and tau < apart  # perfect, and no two people linked at all
    # Too tight a range leaves everyone alone at every τ: a tie, which goes to the strictest τ.
    tau, f = people_tau(x, labels, 0.001, 0.002, k=10, steps=3)
    assert tau == 0.001 and f < 0.5


def test_cluster_index_refuses_a_read_only_index(tmp_path):
    x, _ = person_vectors(2, 2, seed=8)
    idx, _ = make_index(tmp_path, x)
    with FaceIndex.open(idx, readonly=True) as store, pytest.raises(Exception):
        cluster_index(store)


def test_people_while_another_process_writes_the_index_shows_the_last_clustering(tmp_path):
    x, _ = person_vectors(2, 3, seed=9)
    idx, updates = make_index(tmp_path, x)
    before = people(PeopleOptions(idx))
    with FaceIndex.open(idx) as writer:  # an `index` run holds the lock and has changed the index
        writer.write_batch([FileUpdate(str(tmp_path / "new.jpg"), 1, 1, faces=[{"box": box()}], embeddings=x[:1])])
        during = people(PeopleOptions(idx))
        assert not during["clustered"] and "locked by another facesearch process" in during["warnings"][0]
        assert partition(during) == partition(before)
    assert people(PeopleOptions(idx))["clustered"]
