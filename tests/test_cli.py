"""The CLI through Typer's CliRunner: exit codes, --json shapes and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facesearch.cli.main import app


@pytest.fixture()
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def indexed(runner, collection, tmp_path):
    idx = tmp_path / "idx"
    r = invoke(runner, "index", collection, "--index", idx, "--detector", "none", "--label-from-folder",
               "--workers", "0", "--json")
    assert r.exit_code == 0, r.output
    return idx, json.loads(r.stdout)


def test_index_json_summary(indexed):
    _, s = indexed
    for key in ("scanned", "new", "updated", "unchanged", "bad", "noface", "faces", "bad_files", "files_per_s"):
        assert key in s
    assert s["faces"] == 16


def test_query_json_shape_and_identification(runner, indexed, collection, tmp_path):
    idx, _ = indexed
    probe = tmp_path / "copy.png"  # another file with an indexed photo's bytes (the photo itself is no match)
    probe.write_bytes(sorted((collection / "person_02").iterdir())[0].read_bytes())
    r = invoke(runner, "query", probe, "--index", idx, "--detector", "none", "--top", "3", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["query"] == str(probe)
    face = out["faces"][0]
    assert len(face["box"]) == 4 and len(face["matches"]) == 3
    assert set(face["matches"][0]) >= {"path", "box", "distance", "label", "similarity"}
    assert face["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-3)  # its twin is indexed
    assert face["identity"] == "person_02"
    assert face["matches"][0]["similarity"] == pytest.approx(1 - face["matches"][0]["distance"] ** 2 / 2, abs=1e-4)


def test_dedupe_finds_planted_copy(runner, collection, tmp_path):
    src = sorted((collection / "person_01").iterdir())[0]
    (collection / "copy.png").write_bytes(src.read_bytes())
    idx = tmp_path / "idx"
    invoke(runner, "index", collection, "--index", idx, "--detector", "none", "--workers", "0", "--quiet")
    r = invoke(runner, "dedupe", "--index", idx, "--tau", "0.05", "--json", "--out", tmp_path / "g.csv")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    groups = [sorted(m["path"] for m in g["members"]) for g in rep["groups"]]
    assert sorted([str(src), str(collection / "copy.png")]) in groups
    assert sorted([str(src), str(collection / "copy.png")]) in [sorted(e) for e in rep["exact_duplicates"]]
    assert (tmp_path / "g.csv").read_text().startswith("group,path")


def test_dedupe_actions_need_yes(runner, indexed, tmp_path):
    idx, _ = indexed
    r = runner.invoke(app, ["dedupe", "--index", str(idx), "--tau", "2.0", "--move-to", str(tmp_path / "d")])
    assert r.exit_code == 1 and "--yes" in r.stderr
    assert not (tmp_path / "d").exists()


def test_missing_index_is_a_one_line_error(runner, tmp_path):
    r = runner.invoke(app, ["info", "--index", str(tmp_path / "nope")])
    assert r.exit_code == 1
    assert r.stderr.startswith("error:") and "hint:" in r.stderr
    assert "Traceback" not in r.stderr


def test_no_face_in_query(runner, indexed, tmp_path):
    idx, _ = indexed
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    r = runner.invoke(app, ["query", str(blank), "--index", str(idx), "--detector", "auto"])
    assert r.exit_code == 1 and "no face" in r.stderr


def test_mismatched_weights_are_refused(runner, indexed, tmp_path):
    from facesearch.models import create_embedder, save_weights

    idx, _ = indexed
    other = save_weights(create_embedder("resnet10t", embedding_dim=128, input_size=32), tmp_path / "other")
    probe = tmp_path / "p.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(probe)
    r = runner.invoke(app, ["query", str(probe), "--index", str(idx), "--weights", str(other), "--detector", "none"])
    assert r.exit_code == 1 and "rebuild" in r.stderr


def test_usage_error_exit_code(runner):
    r = runner.invoke(app, ["query"])
    assert r.exit_code == 2


def _usage_error(r) -> str:
    """Assert ``r`` is a usage error (exit 2, nothing on stdout, no traceback); its stderr as one line of text."""
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", r.stderr)  # colour codes, should the runner force a terminal
    return " ".join(text.translate(str.maketrans("", "", "│╭╮╰╯─")).split())  # Typer's error panel, unwrapped


# (command line before the bad option, bad option and value, what the message must say)
BAD_VALUES = [
    *[(cmd, ["--detector", "mtcnn"], "Invalid value for '--detector': 'mtcnn' is not one of "
       "auto, yunet, yunet-cnn, dlib-auto, dlib-hog, dlib-cnn, opencv-haar, none")
      for cmd in (["index", "P"], ["query", "P"], ["enroll", "NAME", "P"], ["rebuild"], ["train", "P"],
                  ["evaluate", "P"])],
    *[(cmd, ["--index-type", "ivf-pq"], "Invalid value for '--index-type': 'ivf-pq' is not one of "
       "auto, flat, hnsw, ivf, ivfpq") for cmd in (["index", "P"], ["rebuild"])],
    *[(cmd, ["--device", dev], f"Invalid value for '--device': '{dev}' is not one of auto, cpu, cuda, cuda:N, mps")
      for cmd in (["index", "P"], ["query", "P"], ["train", "P"], ["evaluate", "P"]) for dev in ("gpu", "cuda:x")],
    *[(cmd, ["--tau", tau], f"Invalid value for '--tau': {float(tau)} is not in 0 < tau <= 2")
      for cmd in (["query", "P"], ["dedupe"], ["evaluate", "P"]) for tau in ("5", "0", "-1", "2.001", "nan")],
    (["index", "P"], ["--policy", "biggest"], "Invalid value for '--policy': 'biggest' is not one of all, largest"),
    (["dedupe"], ["--scope", "files"], "Invalid value for '--scope': 'files' is not one of faces, photos"),
    (["dedupe"], ["--keep", "newest"], "Invalid value for '--keep': 'newest' is not one of largest, sharpest, oldest"),
    (["train", "P"], ["--loss", "arcface"], "Invalid value for '--loss': 'arcface' is not one of contrastive, triplet"),
    (["query", "P"], ["--top", "0"], "Invalid value for '--top' / '-k'"),
    (["query", "P"], ["-k", "-3"], "Invalid value for '--top' / '-k'"),
]


@pytest.mark.parametrize("cmd, bad, message", BAD_VALUES, ids=[" ".join(c[:1] + b) for c, b, _ in BAD_VALUES])
def test_bad_option_values_are_usage_errors(runner, tmp_path, cmd, bad, message):
    cmd = [str(tmp_path / "nope") if a == "P" else a for a in cmd]
    if cmd[0] not in ("train", "evaluate"):
        cmd += ["--index", str(tmp_path / "idx")]
    r = runner.invoke(app, [*cmd, *bad])
    assert message in _usage_error(r)
    assert not (tmp_path / "idx").exists()  # refused before any work


def test_usage_errors_show_user_text_verbatim(runner, tmp_path):
    r = runner.invoke(app, ["query", str(tmp_path / "p.png"), "--detector", "[red]x[/red]"])
    assert "'[red]x[/red]' is not one of" in _usage_error(r)  # not eaten as Rich markup


def test_bad_values_in_settings_file_are_usage_errors(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "facesearch.toml").write_text('detector = "mtcnn"\n')
    assert "'--detector': 'mtcnn' is not one of" in _usage_error(runner.invoke(app, ["query", "p.png"]))
    (tmp_path / "facesearch.toml").write_text('[dedupe]\ntau = 3.0\n')
    assert "'--tau': 3.0 is not in 0 < tau <= 2" in _usage_error(runner.invoke(app, ["dedupe"]))


def test_valid_option_values_pass_the_checks():
    from facesearch.cli.app import check_detector, check_device, check_index_type, check_tau

    for name in ("auto", "dlib-hog", "dlib-cnn", "opencv-haar", "none", None):
        assert check_detector(name) == name
    for name in ("auto", "flat", "hnsw", "ivf", "ivfpq", None):
        assert check_index_type(name) == name
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps", None):
        assert check_device(name) == name
    for tau in (1e-6, 0.05, 0.6, 2.0, None):
        assert check_tau(tau) == tau


def test_cli_value_lists_match_the_library():
    """The CLI keeps its own copies of these lists (for a light start-up); they must not drift."""
    import torch

    from facesearch.faces import detect
    from facesearch.cli import app as main
    from facesearch.store.vectors import ops

    from facesearch.search import dedupe
    from facesearch.learn import losses
    from facesearch.indexing import run as pipeline

    assert main.DETECTORS == detect.DETECTORS and main.POLICIES == detect.POLICIES
    assert main.KEEP_RULES == dedupe.KEEP_RULES and main.LOSSES == losses.LOSSES
    assert main.INDEX_TYPES == ("auto", *ops.INDEX_TYPES)
    assert main.ENGINES == pipeline.ENGINES
    for dev in ("cpu", "cuda", "cuda:1", "mps"):  # what select_device hands to torch.device
        torch.device(dev)



def test_engine_ray_without_ray_is_a_one_line_usage_error(runner, collection, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.data", None)  # what `import ray.data` meets without the extra
    r = invoke(runner, "index", collection, "--index", tmp_path / "idx", "--engine", "ray")
    assert r.exit_code == 2
    assert "error: the ray engine needs Ray Data" in r.stderr and "hint: pip install 'facesearch[ray]'" in r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "idx").exists()

USAGE_ERRORS_SCRIPT = """
import json, sys
from facesearch.cli.main import app
for args in (["index", "photos", "--detector", "mtcnn", "--workers", "2"], ["index", "photos", "--index-type", "x"],
             ["query", "p.png", "--device", "tpu"], ["query", "p.png", "--tau", "5"], ["dedupe", "--tau", "0"],
             ["evaluate", "photos", "--detector", "x"], ["train", "photos", "--device", "x"]):
    try:
        app(args, prog_name="facesearch")
    except SystemExit as e:
        assert e.code == 2, (args, e.code)
heavy = {"torch", "timm", "cv2", "faiss", "dlib", "facesearch.indexing.run", "facesearch.faces.detect", "facesearch.models.embed"}
print(json.dumps(sorted(heavy & set(sys.modules))))
"""


def test_usage_errors_do_no_heavy_work(tmp_path):
    out = subprocess.run([sys.executable, "-c", USAGE_ERRORS_SCRIPT], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "FACESEARCH_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert out.stderr.count("Invalid value for") == 7 and "Traceback" not in out.stderr
    assert not (tmp_path / "indexes").exists()


def test_rebuild_index_type(runner, indexed):
    idx, _ = indexed
    r = invoke(runner, "rebuild", "--index", idx, "--index-type", "hnsw", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["index_type"] == "hnsw"


def test_info_verify_export_json(runner, indexed, tmp_path):
    idx, _ = indexed
    info = json.loads(invoke(runner, "info", "--index", idx, "--json").stdout)
    assert info["faces"] == 16 and info["manifest"]["metric"] == "l2"
    ver = json.loads(invoke(runner, "verify", "--index", idx, "--json").stdout)
    assert ver["ok"] is True
    exp = json.loads(invoke(runner, "export", tmp_path / "x.npz", "--index", idx, "--json").stdout)
    assert exp["rows"] == 16


def test_evaluate_json_and_plot(runner, collection, tmp_path):
    r = invoke(runner, "evaluate", collection, "--detector", "none", "--plot", tmp_path / "roc.png", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    for key in ("roc_auc", "eer", "tar@far1e-2", "tar@far1e-3", "tau", "accuracy", "precision", "recall", "f1",
                "n_genuine", "n_impostor"):
        assert key in rep
    assert rep["n_genuine"] == 4 * 6
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_pairs_file(runner, collection, tmp_path):
    a = sorted((collection / "person_00").iterdir())
    b = sorted((collection / "person_01").iterdir())
    lines = [f"{a[0]} {a[1]} 1", f"{a[2]} {a[3]} 1", f"{a[0]} {b[0]} 0", f"{a[1]} {b[1]} 0"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines))
    r = invoke(runner, "evaluate", collection, "--pairs", tmp_path / "pairs.txt", "--detector", "none", "--json")
    rep = json.loads(r.stdout)
    assert (rep["n_genuine"], rep["n_impostor"]) == (2, 2)


def test_train_errors_are_clear(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["train", str(tmp_path / "empty")])
    assert r.exit_code == 1 and "error:" in r.stderr and "hint:" in r.stderr
    r = runner.invoke(app, ["train", str(tmp_path / "empty"), "--loss", "nope"])
    assert r.exit_code == 2 and "'nope' is not one of contrastive, triplet, bce" in r.output


def test_end_to_end_train_index_query_dedupe(runner, tmp_path):
    """The whole product on synthetic faces: train a tiny model, index with it, query, dedupe."""
    from facesearch.photos.synthetic import make_identity_folder

    data = make_identity_folder(tmp_path / "people", n_people=6, per_person=5, size=64, seed=2)
    w = tmp_path / "w" / "tiny"
    r = invoke(runner, "train", data, "--backbone", "resnet10t", "--input-size", "32", "--dim", "16",
               "--epochs", "1", "--batch-size", "8", "--out", w, "--json", "--loss", "triplet")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["history"][0]["epoch"] == 1 and (tmp_path / "w" / "tiny.json").exists()
    idx = tmp_path / "idx"
    r = invoke(runner, "index", data, "--index", idx, "--weights", f"{w}.json", "--detector", "none",
               "--label-from-folder", "--workers", "0", "--json")
    assert json.loads(r.stdout)["faces"] == 30
    probe = sorted((data / "person_03").iterdir())[0]
    twin = tmp_path / "twin.png"  # the same bytes in another file: the indexed photo is its nearest match
    twin.write_bytes(probe.read_bytes())
    r = invoke(runner, "query", twin, "--index", idx, "--weights", f"{w}.json", "--detector", "none", "--json")
    assert json.loads(r.stdout)["faces"][0]["matches"][0]["path"] == str(probe)
    r = invoke(runner, "dedupe", "--index", idx, "--tau", "0.001", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["n_groups"] == 0


def test_reports_and_doctor(runner, indexed, collection, tmp_path):
    idx, _ = indexed
    probe = sorted((collection / "person_01").iterdir())[0]
    r = invoke(runner, "query", probe, "--index", idx, "--detector", "none", "--html", tmp_path / "q.html",
               "--sheet", tmp_path / "q.png", "--json")
    assert r.exit_code == 0 and (tmp_path / "q.html").read_text().count("<img") >= 2
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    r = invoke(runner, "dedupe", "--index", idx, "--tau", "2.0", "--html", tmp_path / "d.html", "--json")
    assert r.exit_code == 0 and "<html" in (tmp_path / "d.html").read_text().lower()
    r = runner.invoke(app, ["doctor", "--index", str(idx), "--json"])
    doc = json.loads(r.stdout)
    assert {c["name"] for c in doc["checks"]} >= {"python", "torch", "faiss", "weights", "index"}
    assert r.exit_code == (0 if doc["ok"] else 1)


def test_settings_file_sets_defaults_and_flags_win(runner, indexed, collection, tmp_path, monkeypatch):
    idx, _ = indexed
    (tmp_path / "facesearch.toml").write_text(f'index = "{idx}"\ndetector = "none"\n[query]\ntop = 2\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACESEARCH_INDEX", raising=False)
    probe = sorted((collection / "person_01").iterdir())[0]
    out = json.loads(invoke(runner, "query", probe, "--json").stdout)
    assert len(out["faces"][0]["matches"]) == 2
    out = json.loads(invoke(runner, "query", probe, "--top", "3", "--json").stdout)
    assert len(out["faces"][0]["matches"]) == 3


def test_user_text_is_never_markup(runner, indexed, collection, tmp_path):
    """Labels and paths with brackets print as they are, and cannot break or style the output."""
    idx, _ = indexed
    probe = sorted((collection / "person_01").iterdir())[0]
    odd = tmp_path / "[edited] me [link=https:x.invalid]x.png"
    odd.write_bytes(probe.read_bytes())
    r = runner.invoke(app, ["label", str(probe), "a[/x]b", "--index", str(idx)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["query", str(odd), "--index", str(idx), "--detector", "none", "--top", "1"])
    assert r.exit_code == 0 and "Traceback" not in r.output
    assert "[edited] me [link=https:x.invalid]x.png" in r.stdout.replace("\n", "")
    assert "a[/x]b" in r.stdout
    r = runner.invoke(app, ["query", str(tmp_path / "[bold]gone[red].png"), "--index", str(idx)])
    assert r.exit_code == 1 and "[bold]gone[red].png" in r.stderr


def test_remove_of_an_unindexed_path_is_an_error_and_verify_hints_prune(runner, indexed, collection, tmp_path):
    idx, _ = indexed
    r = runner.invoke(app, ["remove", str(tmp_path / "never-indexed.jpg"), "--index", str(idx)])
    assert r.exit_code == 1 and "is in the index" in r.stderr and "nothing was changed" in r.stderr
    gone = sorted((collection / "person_00").iterdir())[0]
    gone.unlink()
    r = runner.invoke(app, ["verify", "--index", str(idx)])
    assert r.exit_code == 1 and "--prune" in r.stderr


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   __import__("sqlite3").OperationalError("database or disk is full")])
def test_disk_full_is_one_line_with_a_hint(runner, indexed, monkeypatch, error):
    import facesearch.indexing.maintenance as maintenance

    def full(*a, **kw):
        raise error

    monkeypatch.setattr(maintenance, "info", full)
    r = runner.invoke(app, ["info", "--index", str(indexed[0])])
    assert r.exit_code == 1 and r.stderr.startswith("error: the disk is full") and "Traceback" not in r.stderr
    assert "free some space" in r.stderr and len(r.stderr.strip().splitlines()) <= 3


def test_damaged_index_database_is_a_clear_error(runner, indexed):
    from facesearch.store.face_index import DB

    idx, _ = indexed
    for suffix in ("", "-wal", "-shm"):
        (idx / (DB + suffix)).unlink(missing_ok=True)
    (idx / DB).write_bytes(b"this is not a database" * 100)
    r = runner.invoke(app, ["info", "--index", str(idx)])
    assert r.exit_code == 1 and "is damaged or not an index" in r.stderr and "unexpected" not in r.stderr


def test_index_in_a_folder_nobody_may_write_still_answers(runner, indexed, monkeypatch):
    """A read-only copy (a mount, a DVD) has no -wal/-shm files and SQLite could not create them."""
    from facesearch.store.face_index import DB

    idx, _ = indexed
    for suffix in ("-wal", "-shm"):
        (idx / (DB + suffix)).unlink(missing_ok=True)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if (Path(p) == idx and mode & os.W_OK)
                        else real(p, mode, **kw))  # root may write anywhere: say the folder is read-only
    for cmd in (["info"], ["verify"]):
        r = runner.invoke(app, [*cmd, "--index", str(idx), "--json"])
        assert r.exit_code == 0, (cmd, r.output)
    assert not (idx / (DB + "-shm")).exists()  # opened immutable: nothing written beside it


def test_query_of_a_face_crop_with_no_face_detected_says_it_read_it_whole(runner, indexed, collection, monkeypatch):
    """The crop fallback (issue 27) where the user sees it: the detector finds nothing in a photo that
    is itself a face crop, the query reads the whole image as the face, answers, and says so in
    --json's warnings and on stderr; a photo with nothing face-like is still "no face"."""
    from facesearch.faces.tiling import YuNetFaceDetector

    monkeypatch.setattr(YuNetFaceDetector, "_search", lambda self, rgb, plan, score: np.zeros((0, 15), np.float32))
    idx, _ = indexed
    probe = sorted((collection / "person_02").iterdir())[0]
    r = invoke(runner, "query", probe, "--index", idx, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["faces"]) == 1 and out["faces"][0]["matches"]  # answered, from the whole image
    assert any("read the whole image as a face crop" in w for w in out["warnings"]), out["warnings"]
    r = runner.invoke(app, ["query", str(probe), "--index", str(idx)])
    assert r.exit_code == 0 and "face crop" in r.stderr
    blank = probe.parent / "blank.png"
    Image.fromarray(np.full((150, 150, 3), 128, np.uint8)).save(blank)
    r = runner.invoke(app, ["query", str(blank), "--index", str(idx), "--json"])
    assert r.exit_code == 1 and "no face" in r.stderr
