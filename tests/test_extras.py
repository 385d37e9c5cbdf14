"""The optional parts of an install (core.extras): a module an extra brings is, when missing, one
error line naming that extra; anything else stays what it is."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.core.errors import FacesearchError
from facesearch.core.extras import EXTRAS, missing_extra, require

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_torch_names_the_train_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(FacesearchError) as e:
        require("torch", "facesearch train")
    assert e.value.message == "facesearch train needs torch, which the default install leaves out"
    assert e.value.hint == "pip install 'facesearch[train]'"


def test_other_import_errors_are_not_blamed_on_an_extra():
    assert missing_extra(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    assert missing_extra(ImportError("cannot import name x from numpy", name="numpy")) is None
    assert missing_extra(ValueError("torch")) is None


def test_evaluate_plot_without_matplotlib_is_one_line_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nowhere"), "--plot", str(tmp_path / "roc.png")])
    assert r.exit_code == 1
    assert "evaluate --plot and --html needs matplotlib" in r.output
    assert "pip install 'facesearch[plot]'" in r.output


# Imported only behind their own error naming what to install (facesearch[ray], [milvus], pyarrow).
OPTIONAL = {"ray", "pymilvus", "milvus_lite", "pyarrow"}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _default_closure() -> set[str]:
    """The distributions a plain ``pip install facesearch`` brings: its dependencies and theirs."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    todo, seen = [re.match(r"[\w.-]+", d).group(0) for d in pyproject["project"]["dependencies"]], set()
    while todo:
        name = _canon(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [re.match(r"[\w.-]+", r).group(0) for r in requires if "extra ==" not in r]
    return seen


def _imports() -> set[str]:
    """Every top-level module that facesearch imports, at module level or inside a function."""
    found = set()
    for path in (ROOT / "facesearch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_import_is_a_default_dependency_or_behind_an_extra():
    """A plain install runs every default command: `people` once needed scipy, which only a test
    extra brought in, so `pip install .` could not cluster people."""
    closure, owners = _default_closure(), _owners()
    third_party = _imports() - set(sys.stdlib_module_names) - {"facesearch"} - set(EXTRAS) - OPTIONAL
    undeclared = {m: owners.get(m) for m in third_party if not owners.get(m, set()) & closure}
    assert undeclared == {}


def _owners() -> dict[str, set[str]]:
    """Top-level module -> the distributions installing it, by their files (dlib-bin's top_level.txt
    omits dlib, so importlib's packages_distributions() misses it)."""
    owners: dict[str, set[str]] = {}
    for d in metadata.distributions():
        for top in {f.parts[0].removesuffix(".py") for f in d.files or []}:
            owners.setdefault(top, set()).add(_canon(d.metadata["Name"]))
    return owners
