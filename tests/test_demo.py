"""``make demo`` without ../shared: on synthetic faces its dedupe reports exactly the planted copies
(issue 39: it used to report every synthetic person as a group of "copies")."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.install.demo import SYNTHETIC_TAU, build_sample, dedupe_args


def _invoke(args: list[str]):
    r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def test_the_demo_on_synthetic_faces_finds_exactly_the_planted_copies(tmp_path):
    sample = build_sample(tmp_path / "demo_out", shared=tmp_path / "no_shared_data")
    assert sample.synthetic and len(sample.copies) == 2
    index = str(tmp_path / "index")
    _invoke(["index", sample.photos / "people", "--index", index, "--label-from-folder", "--workers", "0", "--quiet"])
    _invoke(["index", sample.photos / "inbox", "--index", index, "--workers", "0", "--quiet"])
    args = dedupe_args(index, sample)
    assert args[-2:] == ["--tau", str(SYNTHETIC_TAU)]
    report = json.loads(_invoke([*args, "--json", "--quiet"]).stdout)
    found = sorted(sorted(m["path"] for m in g["members"]) for g in report["groups"])
    assert found == sorted(sorted(str(p) for p in group) for group in sample.copies)
