"""80 columns (issue 39): every command's help shows its option names whole, and the tables of
query, dedupe and doctor fit, shortening paths in the middle instead of breaking a file name."""

from __future__ import annotations

import click
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.cli.output import Fitted, middle_ellipsis
from facesearch.photos.synthetic import make_identity_folder

WIDTH = 80
NAME = "photo_with_a_rather_long_name_taken_on_holiday"  # + _NNN.png: wider than a table's path column


def _commands(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _run(*args) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert r.exit_code == 0, r.output
    return r.stdout  # the data; a message on stderr is one line by design (the terminal wraps it)


def _fits(text: str) -> None:
    assert [line for line in text.splitlines() if len(line) > WIDTH] == []


@pytest.mark.parametrize("path, command", list(_commands(typer.main.get_command(app))),
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_help_fits_and_names_every_option_whole(path, command):
    text = _run(*path, "--help")
    _fits(text)
    names = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
    assert [n for n in names if n not in text] == [] and "…" not in text


def test_middle_ellipsis_keeps_both_ends():
    assert middle_ellipsis("short.jpg", 20) == "short.jpg"
    cut = middle_ellipsis("/photos/2024/summer/IMG_0042.jpg", 16)
    assert cut == "/photos…0042.jpg" and len(cut) == 16
    assert middle_ellipsis("abc", 1) == "…" and middle_ellipsis("abc", 0) == ""


def test_a_fitted_text_sets_a_long_path_on_its_own_line_never_broken():
    console = Console(width=30, file=None, record=True)
    with console.capture() as cap:
        console.print(Fitted("dlib 20.0, /usr/lib/python3/site-packages/models/dlib_hog.svm (checksum ok)"))
    lines = cap.get().splitlines()
    assert lines[0].strip() == "dlib 20.0," and lines[1].endswith("dlib_hog.svm") and "…" in lines[1]
    assert all(len(line) <= 30 for line in lines)


@pytest.fixture()
def deep_index(tmp_path):
    """Long file names, deep under a folder other than the current one; indexed on whole images."""
    root = make_identity_folder(tmp_path / "a" / "deeply" / "nested" / "photo" / "library", 2, 3, seed=7)
    for f in sorted(root.rglob("*.png")):
        f.rename(f.with_name(f"{NAME}_{f.stem}.png"))
    idx = tmp_path / "idx"
    _run("index", root, "--index", idx, "--detector", "none", "--workers", "0", "--quiet")
    return root, idx


def _names_whole(text: str) -> None:
    """A file name is never broken across lines: where its start is, its extension is too."""
    for line in text.splitlines():
        if "photo_wi" in line:
            assert ".png" in line, line


def test_query_and_dedupe_fit_80_columns(deep_index):
    root, idx = deep_index
    probe = sorted(root.rglob("*.png"))[0]
    for text in (_run("query", probe, "--index", idx, "--detector", "none"),
                 _run("dedupe", "--index", idx, "--tau", "0.5")):
        _fits(text)
        _names_whole(text)
        assert "…" in text  # the long names were shortened, in the middle
    above = _run("dedupe", "--index", idx, "--tau", "0.5").splitlines()[1]  # their folder, once
    assert above.startswith("paths (under /") and above.endswith("nested/photo/library)")


def test_doctor_fits_80_columns(deep_index):
    _, idx = deep_index
    r = CliRunner().invoke(app, ["doctor", "--index", str(idx)], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    _fits(r.stdout)
    assert "default.json" in r.stdout  # the weights' path ends on its own line, whole or cut in the middle
