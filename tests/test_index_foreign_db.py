"""A folder is an index's only when our manifest says so, or it is empty, or it holds what an interrupted
create of ours leaves with a database of our schema: another program's ``meta.sqlite`` or ``manifest.json``
is never overwritten, and the error never suggests writing into that folder (issue 37, item 5)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.store import sqlite as our_sqlite
from facesearch.store.face_index import FaceIndex


def index_into(collection: Path, folder: Path):
    return CliRunner().invoke(app, ["index", str(collection), "--index", str(folder), "--detector", "none",
                                    "--workers", "0", "--json"])


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def foreign_db(path: Path) -> None:
    """Another program's database: it happens to have a table called files too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE files(name TEXT); INSERT INTO files VALUES ('my thesis.tex');"
                     "CREATE TABLE settings(key TEXT, value TEXT);")
    db.commit()
    db.close()


def test_a_folder_holding_another_programs_database_is_refused(tmp_path, collection):
    folder = tmp_path / "app"
    foreign_db(folder / "meta.sqlite")
    before = contents(folder)
    r = index_into(collection, folder)
    assert r.exit_code == 1 and "holds no facesearch index" in r.stderr and "meta.sqlite" in r.stderr
    assert "Traceback" not in r.stderr and "choose a new or empty folder" in r.stderr
    assert contents(folder) == before  # byte for byte: not even opened for writing


def test_a_foreign_manifest_is_refused_without_suggesting_that_folder(tmp_path, collection):
    folder = tmp_path / "app"
    foreign_db(folder / "meta.sqlite")
    (folder / "manifest.json").write_text('{"name": "my web app", "start_url": "/"}')
    before = contents(folder)
    for args in (["index", str(collection)], ["info"]):
        r = CliRunner().invoke(app, [*args, "--index", str(folder)])
        assert r.exit_code == 1 and "is not a facesearch index" in r.stderr, r.output
        assert "choose another folder" in r.stderr and f"--index {folder}" not in r.stderr
        assert "rebuild" not in r.stderr
    assert contents(folder) == before


def test_an_interrupted_create_of_ours_is_resumed(tmp_path, collection):
    folder = tmp_path / "half"  # killed after the database got its schema, before the manifest
    folder.mkdir()
    (folder / "lock").write_text("123\n")
    db = our_sqlite.connect(folder / "meta.sqlite", readonly=False)
    our_sqlite.create_schema(db, 1)
    db.close()
    r = index_into(collection, folder)
    assert r.exit_code == 0, r.output
    with FaceIndex.open(folder, readonly=True) as store:
        assert store.count() == 16


def test_a_database_of_our_schema_missing_its_state_is_not_ours(tmp_path):
    path = tmp_path / "meta.sqlite"
    db = sqlite3.connect(path)
    db.executescript(our_sqlite.SCHEMA)
    db.close()
    assert not our_sqlite.has_our_schema(path)
    (tmp_path / "text.sqlite").write_text("not a database")
    assert not our_sqlite.has_our_schema(tmp_path / "text.sqlite")
