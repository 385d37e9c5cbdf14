"""The optional parts of an install (core.extras): a module an extra brings is, when missing, one
error line naming that extra; anything else stays what it is."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.core.errors import FacesearchError
from facesearch.core.extras import missing_extra, require


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
