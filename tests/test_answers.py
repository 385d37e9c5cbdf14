"""Answers in words (search/verdict.py) and the CLI's human output of index and query at 80 columns (issue 30)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from facesearch.cli.answers import index_line
from facesearch.cli.main import app
from facesearch.eval.tau import TauPolicy
from facesearch.search.verdict import error_rate, face_verdict, match_verdict

POLICY = TauPolicy(verification=0.9, far1e4=0.5, curve=((1e-1, 0.9), (1e-3, 0.7), (1e-5, 0.45)))


def face(**kw) -> dict:
    base = {"identity": None, "candidate": None, "distance": None, "far": None, "far_is_bound": False,
            "quality_ok": True}
    return {**base, **kw}


@pytest.mark.parametrize("f, level, words", [
    (face(identity="Ann", candidate="Ann", distance=0.4, far=1e-5), "very likely", "Ann — very likely the same person"),
    (face(identity="Ann", candidate="Ann", distance=0.6, far=3e-4), "likely", "Ann — likely the same person"),
    (face(candidate="Ann", distance=0.8, far=0.02), "unknown", "looks most like Ann, but not enough to say"),
    (face(), "unknown", "nobody named looks alike"),
    (face(candidate="Ann", distance=0.3, quality_ok=False), "unknown", "too hard to read"),
])
def test_a_verdict_per_face_from_the_policy(f, level, words):
    v = face_verdict(f, POLICY)
    assert v["verdict"] == level and words in v["verdict_text"] and v["error_rate"]


def test_without_the_strict_point_the_far_decides():
    loose = TauPolicy(verification=0.9)
    assert face_verdict(face(identity="A", distance=0.1, far=5e-5), loose)["verdict"] == "very likely"
    assert face_verdict(face(identity="A", distance=0.1, far=5e-3), loose)["verdict"] == "likely"


@pytest.mark.parametrize("far, bound, text", [
    (1e-5, False, "about 1 in 100,000 pairs of different people look this alike"),
    (1e-5, True, "fewer than 1 in 100,000 pairs"),
    (3.2e-5, False, "about 1 in 30,000 pairs"),
    (0.01, False, "about 1 in 100 pairs"),
    (0.7, False, "most pairs of different people"),
    (None, False, "no calibration"),
])
def test_error_rates_in_plain_language(far, bound, text):
    assert text in error_rate(far, bound)


def test_match_words():
    assert match_verdict(0.3, POLICY, 0.7) == "very likely"
    assert match_verdict(0.6, POLICY, 0.7) == "likely"
    assert match_verdict(0.8, POLICY, 0.7) == ""


def test_the_index_summary_is_one_line():
    s = {"scanned": 36, "faces": 36, "seconds": 5.45, "files_per_s": 6.6, "bad": 0, "noface": 0, "unchanged": 0,
         "pruned": 0, "failed": 0}
    assert index_line(s) == "36 photos, 36 faces in 5.5 s (6.6 photos/s); 0 bad, 0 without a face"
    assert index_line({**s, "unchanged": 30, "failed": 1}).endswith("; 30 unchanged, 1 failed")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    from facesearch.photos.synthetic import make_identity_folder

    root = tmp_path_factory.mktemp("answers")
    photos = make_identity_folder(root / "photos", n_people=3, per_person=3, seed=4)
    r = CliRunner().invoke(app, ["index", str(photos), "--index", str(root / "idx"), "--detector", "none",
                                 "--workers", "0", "--label-from-folder"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    return root, photos, r


def test_index_prints_one_line_and_the_table_only_when_verbose(indexed):
    root, photos, r = indexed
    assert len(r.stdout.strip().splitlines()) == 1 and r.stdout.startswith("9 photos, 9 faces in ")
    v = CliRunner().invoke(app, ["index", str(photos), "--index", str(root / "idx"), "--detector", "none",
                                 "--workers", "0", "--verbose"], env={"COLUMNS": "80"})
    assert v.exit_code == 0 and "unchanged" in v.stdout and "│ unchanged" in v.stdout and "│ new " not in v.stdout


def test_query_fits_80_columns_in_words_without_itself(indexed, monkeypatch):
    root, photos, _ = indexed
    monkeypatch.chdir(root)
    probe = sorted((photos / "person_01").iterdir())[0]
    outputs = []
    for extra in ([], ["--verbose"]):
        r = CliRunner().invoke(app, ["query", str(probe), "--index", str(root / "idx"), "--detector", "none",
                                     "--top", "3", *extra], env={"COLUMNS": "80"})
        assert r.exit_code == 0, r.output
        assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
        assert "person_01 — very likely the same person" in r.stdout or "person_01 — likely" in r.stdout
        assert str(root) not in r.stdout and os.path.join("photos", "person_01") in r.stdout  # relative paths
        rows = [line for line in r.stdout.splitlines() if line.strip()[:2] in ("1 ", "2 ", "3 ", "4 ")]
        assert len(rows) == 3 and not any(f"person_01/{probe.name}" in line for line in rows)
        outputs.append(r.stdout)
    assert "FAR" not in outputs[0] and "FAR" in outputs[1] and "distance" in outputs[1]  # numbers: --verbose


def test_query_json_keeps_its_keys_and_adds_the_words(indexed):
    root, photos, _ = indexed
    probe = sorted((photos / "person_00").iterdir())[0]
    r = CliRunner().invoke(app, ["query", str(probe), "--index", str(root / "idx"), "--detector", "none", "--json",
                                 "--top", "2"])
    out = json.loads(r.stdout)
    f = out["faces"][0]
    assert {"box", "score", "identity", "candidate", "distance", "margin", "quality", "quality_ok", "far",
            "far_is_bound", "same_person", "matches", "verdict", "verdict_text", "error_rate"} <= set(f)
    assert {"query", "tau", "tau_same", "tau_source", "gallery", "warnings"} <= set(out)
    assert len(f["matches"]) == 2 and str(probe) not in [m["path"] for m in f["matches"]]  # never itself
    assert {"path", "box", "distance", "similarity", "label", "face_id", "verdict"} <= set(f["matches"][0])
