"""One file is one photo (issue 36, item 5): a folder reached again through a symlinked alias, a hard
link or a symlink loop adds no row, the alias is reported as "same file as", and ``dedupe`` never
moves the keeper's own file. Faces and names survive moves (item 4): a photo pruned or removed and
indexed again at another path gets its labels and person back; a later ``index`` takes a moved photo
over. (``watch``'s side of both is in tests/test_watch.py.)"""

from __future__ import annotations

import json
import os
import sqlite3

from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.photos.scan import scan_images
from facesearch.store.face_index import FaceIndex

runner = CliRunner()


def index(paths, idx, *extra) -> dict:
    r = runner.invoke(app, ["index", *map(str, paths), "--index", str(idx), "--detector", "none", "--workers", "0",
                            "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def paths_of(idx) -> list[str]:
    with FaceIndex.open(idx, readonly=True) as store:
        return store.file_paths()


def test_symlinked_alias_folder_indexed_twice_is_one_row_per_photo(collection, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(collection, target_is_directory=True)
    idx = tmp_path / "idx"
    first = index([collection], idx)
    second = index([alias], idx)
    assert first["new"] == 16
    assert second["new"] == 0 and second["unchanged"] == 16
    assert len(paths_of(idx)) == 16 and all(str(alias) not in p for p in paths_of(idx))


def test_hard_link_is_one_photo_and_is_reported(collection, tmp_path):
    src = sorted((collection / "person_00").iterdir())[0]
    elsewhere = tmp_path / "more"
    elsewhere.mkdir()
    os.link(src, elsewhere / "linked.png")
    idx = tmp_path / "idx"
    index([collection], idx)
    s = index([elsewhere], idx)
    assert s["new"] == 0 and s["same_file"] == [{"path": str(elsewhere / "linked.png"), "same_as": str(src)}]
    assert len(paths_of(idx)) == 16
    r = runner.invoke(app, ["index", str(elsewhere), "--index", str(idx), "--detector", "none", "--workers", "0"])
    assert r.exit_code == 0 and "1 same file as another path" in r.stdout
    # Both names in one run: the first one counts, the other is said.
    s = index([collection, elsewhere], tmp_path / "idx2")
    assert s["new"] == 16 and len(s["same_file"]) == 1


def test_symlink_loop_terminates_and_adds_nothing_twice(collection, tmp_path):
    (collection / "person_01" / "loop").symlink_to(collection, target_is_directory=True)
    (collection / "person_02" / "up").symlink_to(collection / "person_02", target_is_directory=True)
    idx = tmp_path / "idx"
    s = index([collection], idx)
    assert s["new"] == 16 and len(paths_of(idx)) == 16
    assert len(scan_images([collection / "person_01" / "loop"])) == 16
    assert index([collection / "person_01" / "loop"], idx)["new"] == 0


def test_dedupe_never_moves_the_keepers_own_file(collection, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(collection, target_is_directory=True)
    idx = tmp_path / "idx"
    index([collection], idx)
    _add_alias_rows(idx, collection, alias)
    assert len(paths_of(idx)) == 32
    before = sorted(p.name for p in collection.rglob("*.png"))
    # A τ that only a face and its own alias (distance 0) are within: every group is one file twice.
    r = runner.invoke(app, ["dedupe", "--index", str(idx), "--tau", "0.0001", "--move-to", str(tmp_path / "dups"),
                            "--yes", "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in collection.rglob("*.png")) == before  # the real folder holds every photo
    assert not list(tmp_path.glob("dups/**/*.png"))
    actions = json.loads(r.stdout)["applied"]["actions"]
    assert len(actions) == 16 and all(a["skipped"] == "same file as its keeper" for a in actions)


def _add_alias_rows(idx, collection, alias) -> None:
    """Copy every file row (and its faces) under the alias path, as an index made before paths were
    resolved holds them."""
    db = sqlite3.connect(idx / "meta.sqlite")
    with db:
        files = db.execute("SELECT id, path FROM files").fetchall()
        for fid, path in files:
            cols = "size, mtime_ns, hash, status, error, n_faces, label, indexed_at, run_id"
            new = db.execute(f"INSERT INTO files(path, {cols}) SELECT ?, {cols} FROM files WHERE id = ?",
                             (path.replace(str(collection), str(alias)), fid)).lastrowid
            db.execute("INSERT INTO faces(file_id, x1, y1, x2, y2, score, landmarks, label, emb) SELECT ?, x1, y1, "
                       "x2, y2, score, landmarks, label, emb FROM faces WHERE file_id = ?", (new, fid))
            db.execute("INSERT INTO photo_hashes(file_id, dhash) SELECT ?, dhash FROM photo_hashes WHERE file_id = ?",
                       (new, fid))
        db.execute("UPDATE state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    db.close()


# --- faces and names survive moves (issue 36, item 4) -----------------------------------------


def people_json(idx) -> dict:
    r = runner.invoke(app, ["people", "--index", str(idx), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_prune_then_the_same_photos_at_another_path_get_their_person_and_name_back(collection, tmp_path):
    album = tmp_path / "album"  # one person's photos alone, so they cluster as one person of their own
    album.mkdir()
    (collection / "person_02").rename(album / "trip")
    idx = tmp_path / "idx"
    index([album], idx)
    [person] = people_json(idx)["people"]
    assert runner.invoke(app, ["people", "--index", str(idx), "name", str(person["id"]), "Ann"]).exit_code == 0
    (album / "trip").rename(tmp_path / "away")
    assert index([album], idx, "--prune")["pruned"] == 4
    (tmp_path / "away").rename(album / "returned")
    assert index([album], idx)["new"] == 4
    [ann] = people_json(idx)["people"]  # the same person, no empty "ghost" holding the name
    assert (ann["id"], ann["name"]) == (person["id"], "Ann")
    assert sum("returned" in f["path"] for f in ann["faces"]) == 4
    r = runner.invoke(app, ["people", "--index", str(idx), "name", str(person["id"]), "Ann", "--json"])
    assert r.exit_code == 0, r.output
    with FaceIndex.open(idx, readonly=True) as store:
        labels = store.labels_by_path()  # the faces' labels (naming a person labels its faces)
        assert {labels.get(str(p)) for p in (album / "returned").iterdir()} == {"Ann"}


def test_a_file_label_comes_back_with_its_photo(collection, tmp_path):
    idx = tmp_path / "idx"
    photo = sorted((collection / "person_01").iterdir())[0]
    index([collection], idx)
    assert runner.invoke(app, ["label", str(photo), "Bo", "--index", str(idx)]).exit_code == 0
    photo.rename(tmp_path / "x.png")
    r = runner.invoke(app, ["remove", str(photo), "--index", str(idx)])
    assert r.exit_code == 0, r.output
    (tmp_path / "x.png").rename(collection / "person_03" / "back.png")
    index([collection], idx)
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.file_info(str(collection / "person_03" / "back.png"))["label"] == "Bo"


def test_a_later_index_takes_a_moved_photo_over_with_its_faces_and_name(collection, tmp_path):
    idx = tmp_path / "idx"
    photo = sorted((collection / "person_01").iterdir())[0]
    index([collection], idx)
    assert runner.invoke(app, ["label", str(photo), "Cy", "--index", str(idx)]).exit_code == 0
    with FaceIndex.open(idx, readonly=True) as store:
        faces = store.count()
    moved = collection / "person_03" / "moved.png"
    photo.rename(moved)
    s = index([collection], idx)
    assert (s["new"], s["moved"]) == (0, [{"from": str(photo), "to": str(moved)}])
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.file_info(str(moved))["label"] == "Cy" and store.file_info(str(photo)) == {}
        assert store.count() == faces


def test_an_index_from_before_the_kept_names_table_is_read_as_is_and_gains_it_on_write(collection, tmp_path):
    idx = tmp_path / "idx"
    index([collection], idx)
    db = sqlite3.connect(idx / "meta.sqlite")
    with db:
        db.execute("DROP TABLE removed_files")  # as an index from before this change has it
    db.close()
    with FaceIndex.open(idx, readonly=True) as store:  # a reader needs nothing new
        assert len(store.file_paths()) == 16
    photo = sorted((collection / "person_00").iterdir())[0]
    assert runner.invoke(app, ["label", str(photo), "Di", "--index", str(idx)]).exit_code == 0
    photo.rename(tmp_path / "out.png")
    assert index([collection], idx, "--prune")["pruned"] == 1  # a writer creates the table on open
    (tmp_path / "out.png").rename(collection / "in.png")
    index([collection], idx)
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.file_info(str(collection / "in.png"))["label"] == "Di"


def test_the_indexed_name_of_a_hard_linked_photo_stays_the_one_refreshed(tmp_path):
    """A new name sorting before the indexed one must not push the indexed one aside."""
    from facesearch.photos.synthetic import make_identity_folder

    photos = make_identity_folder(tmp_path / "photos", n_people=1, per_person=2, seed=3)
    indexed = photos / "person_00" / "000.png"
    idx = tmp_path / "idx"
    index([photos], idx)
    os.link(indexed, photos / "person_00" / "00-link.png")  # sorts first
    indexed.write_bytes((photos / "person_00" / "001.png").read_bytes())  # both names see the change
    s = index([photos], idx)
    assert s["updated"] == 1 and s["same_file"] == [{"path": str(photos / "person_00" / "00-link.png"),
                                                      "same_as": str(indexed)}]


def test_real_photos_pruned_and_back_keep_their_named_person(shared_data, tmp_path):
    """Real faces through the default detector: the returning photos are re-detected and re-embedded,
    and their faces find their old boxes, so the person and its name come back."""
    import shutil

    src = sorted((shared_data / "dev" / "pins_celebs" / "Bill_Gates").iterdir())[:5]
    album = tmp_path / "album"
    (album / "trip").mkdir(parents=True)
    for p in src:
        shutil.copy(p, album / "trip" / p.name)
    idx = tmp_path / "idx"
    r = runner.invoke(app, ["index", str(album), "--index", str(idx), "--workers", "0", "--json"])
    assert r.exit_code == 0, r.output
    people = people_json(idx)["people"]
    assert people, "five photos of one man form a person"
    person = max(people, key=lambda p: len(p["faces"]))
    assert runner.invoke(app, ["people", "--index", str(idx), "name", str(person["id"]), "Bill"]).exit_code == 0
    (album / "trip").rename(tmp_path / "away")
    r = runner.invoke(app, ["index", str(album), "--index", str(idx), "--workers", "0", "--prune", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["pruned"] == 5
    (tmp_path / "away").rename(album / "back")
    r = runner.invoke(app, ["index", str(album), "--index", str(idx), "--workers", "0", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["new"] == 5
    [bill] = [p for p in people_json(idx)["people"] if p["name"] == "Bill"]
    assert bill["id"] == person["id"] and len(bill["faces"]) == len(person["faces"])
    assert all("/back/" in f["path"] for f in bill["faces"])
