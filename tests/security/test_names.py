"""Issue 26, item 7: one rule for names, and no terminal escapes from user text.

``label`` accepted '', 10k characters, newlines and escape sequences that ``people name`` refused,
and tables printed a stored name's ESC/OSC-8 bytes raw (a live link the user never wrote).
"""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app as cli

OSC8 = "\x1b]8;;http:evil.example\x1b\\Ann\x1b]8;;\x1b\\"  # a hyperlink: no '/', so it can be a folder name
BAD = ["", "   ", "x" * 10_000, "Ann\nBo", "tab\there", OSC8, "\x1b[2J", "right\u202eto-left", "nul\x00"]


@pytest.fixture()
def small_index(tmp_path):
    from facesearch.photos.synthetic import make_identity_folder

    photos = make_identity_folder(tmp_path / "photos", n_people=2, per_person=2, seed=7)
    r = CliRunner().invoke(cli, ["index", str(photos), "--index", str(tmp_path / "idx"), "--detector", "none",
                                 "--workers", "0", "--label-from-folder", "--quiet"])
    assert r.exit_code == 0, r.output
    return tmp_path / "idx", photos


@pytest.mark.parametrize("name", BAD, ids=lambda n: repr(n)[:24])
def test_label_refuses_unusable_names(small_index, name):
    index, photos = small_index
    r = CliRunner().invoke(cli, ["label", str(photos / "person_00"), name, "--index", str(index)])
    assert r.exit_code == 1 and "error:" in r.stderr, (r.exit_code, r.output)
    assert "\x1b" not in r.stderr and "\x1b" not in r.stdout


@pytest.mark.parametrize("name", BAD, ids=lambda n: repr(n)[:24])
def test_people_name_follows_the_same_rule(small_index, name):
    index, _ = small_index
    r = CliRunner().invoke(cli, ["people", "name", "1", name, "--index", str(index)])
    assert r.exit_code == 1 and "error:" in r.stderr, (r.exit_code, r.output)
    assert "\x1b" not in r.stderr


def test_a_good_name_is_stripped_and_kept(small_index):
    index, photos = small_index
    r = CliRunner().invoke(cli, ["label", str(photos / "person_00"), "  Ann Lee  ", "--index", str(index), "--json"])
    assert r.exit_code == 0 and '"label": "Ann Lee"' in r.stdout, r.output


def test_tables_print_no_escape_bytes_from_stored_names_or_paths(tmp_path):
    """A name an older version stored (from a folder name) and a file name, both with escape sequences."""
    from facesearch.photos.synthetic import make_identity_folder

    photos = make_identity_folder(tmp_path / "photos", n_people=2, per_person=2, seed=8)
    os.rename(photos / "person_00", photos / OSC8)
    first = sorted((photos / OSC8).iterdir())[0]
    os.rename(first, first.with_name("x\x1b[31mred.png"))
    r = CliRunner().invoke(cli, ["index", str(photos), "--index", str(tmp_path / "idx"), "--detector", "none",
                                 "--workers", "0", "--label-from-folder"])
    assert r.exit_code == 0, r.output
    table = CliRunner().invoke(cli, ["people", "--index", str(tmp_path / "idx")])
    assert table.exit_code == 0, table.output
    assert "Ann" in table.stdout and "red.png" in table.stdout
    assert "\x1b" not in table.stdout and "\x9b" not in table.stdout and "\x9d" not in table.stdout


def test_messages_strip_escapes_but_keep_the_words():
    from facesearch.cli.output import safe

    assert safe(f"labelled {OSC8}\x07 \x1b[31mred\x1b[0m\nnext") == "labelled Ann red\nnext"
    assert safe("bad_\udcff.jpg") == "bad_\\xff.jpg"
