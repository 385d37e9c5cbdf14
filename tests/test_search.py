"""Open-set answers: who a face is, how sure, and which τ said so."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.eval.tau import TauPolicy
from facesearch.store.face_index import Match
from facesearch.models.weights_meta import read_meta, resolve_weights
from facesearch.search.query import identify, query_thresholds

POLICY = TauPolicy(verification=0.42, far1e3=0.31, far1e4=0.25, dedupe=0.16,
                   curve=((1e-1, 0.47), (1e-2, 0.39), (1e-3, 0.31), (1e-4, 0.25), (1e-5, 0.18)))


def m(d: float, label: str | None, n: int = 0) -> Match:
    return Match(n, d, f"/p/{n}.jpg", (0, 0, 1, 1), label)


def test_identify_names_the_nearest_labelled_face_within_tau():
    hits = [m(0.10, None, 1), m(0.20, "ann", 2), m(0.25, "bob", 3), m(0.30, "ann", 4)]
    assert identify(hits, 0.22) == {"identity": "ann", "candidate": "ann", "distance": 0.2, "margin": 0.05}
    assert identify(hits, 0.15)["identity"] is None and identify(hits, 0.15)["candidate"] == "ann"
    assert identify([m(0.1, None), m(0.2, None)], 2.0) == {"identity": None, "candidate": None, "distance": None,
                                                           "margin": None}
    assert identify([m(0.2, "ann")], 0.3)["margin"] is None  # no other identity to compare with


def test_default_thresholds_tighten_with_the_gallery():
    small, big = query_thresholds(POLICY, None, 10, 10), query_thresholds(POLICY, None, 10, 10_000)
    assert small.name == big.name and big.same < small.same  # "same person" is judged over every face
    assert query_thresholds(POLICY, None, 1000, 1000).name < small.name
    assert "FPIR 1%" in small.source and small.warning is None
    given = query_thresholds(POLICY, 0.6, 10, 10)
    assert (given.name, given.same, given.source) == (0.6, 0.6, "--tau")
    assert "looser than the model's verification τ 0.42" in given.warning
    assert query_thresholds(POLICY, 0.3, 10, 10).warning is None
    with pytest.raises(ValueError):
        query_thresholds(POLICY, 5.0, 10, 10)


@pytest.fixture()
def runner():
    return CliRunner()


def index(runner, photos, idx, *extra):
    r = runner.invoke(app, ["index", str(photos), "--index", str(idx), "--detector", "none", "--workers", "0",
                            "--quiet", *extra], catch_exceptions=False)
    assert r.exit_code == 0, r.output


def test_query_json_states_its_tau_and_the_open_set_answer(runner, collection, tmp_path):
    index(runner, collection, tmp_path / "idx", "--label-from-folder")
    indexed = sorted((collection / "person_01").iterdir())[0]
    probe = tmp_path / "copy.png"  # another file with the same bytes: the indexed photo is a match
    probe.write_bytes(indexed.read_bytes())
    r = runner.invoke(app, ["query", str(probe), "--index", str(tmp_path / "idx"), "--detector", "none", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["gallery"] == {"labelled_faces": 16, "faces": 16} and "FPIR 1%" in out["tau_source"]
    verification = read_meta(resolve_weights(None))["config"]["tau"]
    assert 0 < out["tau"] < verification  # a gallery needs a stricter τ than one pair
    (face,) = out["faces"]
    assert face["identity"] == face["candidate"] == "person_01" and face["distance"] == pytest.approx(0, abs=1e-3)
    assert 0 < face["far"] <= 1e-4 and face["far_is_bound"] and str(indexed) in face["same_person"]


def test_unlabelled_collection_answers_same_person_as(runner, collection, tmp_path):
    index(runner, collection, tmp_path / "idx")
    probe = sorted((collection / "person_02").iterdir())[0]
    r = runner.invoke(app, ["query", str(probe), "--index", str(tmp_path / "idx"), "--detector", "none"])
    assert r.exit_code == 0, r.output
    # In words, with the other photos of the person by their path in the collection; not the photo itself.
    assert "unknown — nobody named looks alike" in r.stdout and "same person as: person_02/" in r.stdout
    assert f"person_02/{probe.name}" not in r.stdout
    loose = runner.invoke(app, ["query", str(probe), "--index", str(tmp_path / "idx"), "--detector", "none",
                                "--tau", "1.2", "--json"])
    assert loose.exit_code == 0 and "warning: τ 1.2 is looser than the model's verification τ" in loose.stderr
    assert json.loads(loose.stdout)["tau_source"] == "--tau"


def test_faces_below_the_quality_gate_are_not_named(runner, collection, tmp_path):
    """An index whose model's gate is above every face: nobody is named, the evidence is still shown."""
    index(runner, collection, tmp_path / "idx", "--label-from-folder")
    manifest = tmp_path / "idx" / "manifest.json"
    meta = json.loads(manifest.read_text())
    meta["model_config"]["calibration"]["quality_min"] = 1e6
    manifest.write_text(json.dumps(meta))
    indexed = sorted((collection / "person_01").iterdir())[0]
    probe = tmp_path / "copy.png"  # another file with the same bytes: the indexed photo is the nearest match
    probe.write_bytes(indexed.read_bytes())
    args = ["query", str(probe), "--index", str(tmp_path / "idx"), "--detector", "none"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    (face,) = out["faces"]
    assert out["quality_min"] == 1e6 and face["quality_ok"] is False and 0 < face["quality"] < 1e6
    assert face["identity"] is None and face["candidate"] == "person_01" and face["same_person"] == []
    assert face["matches"][0]["path"] == str(indexed)
    assert "too hard to read to name" in runner.invoke(app, args).stdout
    ungated = json.loads(runner.invoke(app, [*args, "--json", "--no-quality-gate"]).stdout)["faces"][0]
    assert ungated["identity"] == "person_01" and ungated["quality_ok"] is True
