"""``run_doctor``: every check reported, failures carry hints, nothing raises."""

from __future__ import annotations

import hashlib
import json

import pytest

from facesearch.install.doctor import _check, run_doctor
from facesearch.core.errors import FacesearchError
from facesearch.store.face_index import FaceIndex
from facesearch.models.config import EmbedderConfig
from facesearch.models.weights_meta import model_id

EXPECTED = {"python", "torch", "cuda", "precision", "faiss", "faiss-gpu", "detector yunet", "detector dlib-hog", "landmarks dlib 5-point",
            "detector dlib-cnn", "detector opencv-haar", "weights", "index"}


def by_name(result: dict) -> dict:
    return {c["name"]: c for c in result["checks"]}


def fake_id(tensors: bytes = b"tensors") -> str:
    """The id such weights get: derived from the config and the tensors' checksum."""
    return model_id(EmbedderConfig(), hashlib.sha256(tensors).hexdigest())


def fake_weights(folder, tensors: bytes = b"tensors", sha: str | None = None):
    """A weights pair the doctor can check (it never loads the tensors)."""
    (folder / "w.safetensors").write_bytes(tensors)
    sha = sha or hashlib.sha256(tensors).hexdigest()
    meta = {"config": EmbedderConfig().to_dict(), "model_id": model_id(EmbedderConfig(), sha), "sha256": sha}
    (folder / "w.json").write_text(json.dumps(meta))
    return str(folder / "w.json")


def test_shape_and_hints(tmp_path):
    result = run_doctor(index_folder=tmp_path / "no-index", weights=str(tmp_path / "no-such-weights"))
    checks = by_name(result)
    assert set(checks) == EXPECTED
    for c in result["checks"]:
        assert set(c) == {"name", "ok", "detail", "hint", "required"}
        assert isinstance(c["ok"], bool) and isinstance(c["detail"], str)
        if not c["ok"]:
            assert c["hint"], c
    assert result["failed"] == [c["name"] for c in result["checks"] if not c["ok"]]
    assert result["ok"] is all(c["ok"] for c in result["checks"] if c["required"])
    assert checks["python"]["ok"] and checks["faiss"]["ok"] and checks["torch"]["ok"]


def test_missing_index_is_ok_with_hint(tmp_path):
    idx = by_name(run_doctor(index_folder=tmp_path / "none"))["index"]
    assert idx["ok"] and "facesearch index PATH" in idx["hint"]
    (tmp_path / "empty").mkdir()
    assert by_name(run_doctor(index_folder=tmp_path / "empty"))["index"]["ok"]


def test_unknown_weights_fail_with_hint(tmp_path):
    result = run_doctor(index_folder=tmp_path / "none", weights="no-such-model-anywhere")
    w = by_name(result)["weights"]
    assert not w["ok"] and w["hint"] and "no-such-model-anywhere" in w["detail"]
    assert not result["ok"] and "weights" in result["failed"]


def test_weights_checksum(tmp_path):
    good = by_name(run_doctor(index_folder=tmp_path / "none", weights=fake_weights(tmp_path)))["weights"]
    assert good["ok"] and "checksum ok" in good["detail"]
    bad = fake_weights(tmp_path, sha="0" * 64)
    w = by_name(run_doctor(index_folder=tmp_path / "none", weights=bad))["weights"]
    assert not w["ok"] and "sha256" in w["detail"] and w["hint"]
    (tmp_path / "w.safetensors").unlink()
    w = by_name(run_doctor(index_folder=tmp_path / "none", weights=bad))["weights"]
    assert not w["ok"] and "safetensors" in w["hint"]


@pytest.fixture()
def index_folder(tmp_path):
    folder = tmp_path / "idx"
    with FaceIndex.create(folder, model_id=fake_id(), model_config=EmbedderConfig().to_dict(), dim=8):
        pass
    return folder


def test_healthy_index(index_folder, tmp_path):
    checks = by_name(run_doctor(index_folder=index_folder, weights=fake_weights(tmp_path)))
    assert checks["index"]["ok"] and "0 faces" in checks["index"]["detail"]


def test_index_built_with_other_weights(index_folder, tmp_path):
    w = fake_weights(tmp_path, tensors=b"other tensors")
    idx = by_name(run_doctor(index_folder=index_folder, weights=w))["index"]
    assert not idx["ok"] and fake_id(b"other tensors") in idx["detail"] and "rebuild" in idx["hint"]


def test_index_with_vanished_file(index_folder, tmp_path):
    from facesearch.store.face_index import FaceIndex

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    with FaceIndex.open(index_folder) as store:
        store.mark_bad(photo, 1, photo.stat().st_mtime_ns, "not an image")
    photo.unlink()
    idx = by_name(run_doctor(index_folder=index_folder))["index"]
    assert not idx["ok"] and "1 files missing" in idx["detail"] and "--prune" in idx["hint"]


def test_broken_index_is_a_failed_check(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")
    idx = by_name(run_doctor(index_folder=folder))["index"]
    assert not idx["ok"] and idx["hint"]


def test_check_never_raises():
    def boom():
        raise RuntimeError("kaput")

    def typed():
        raise FacesearchError("no luck", hint="try again")

    c = _check("x", boom)
    assert not c["ok"] and "kaput" in c["detail"] and c["hint"]
    assert _check("y", typed, required=False) == {"name": "y", "ok": False, "detail": "no luck",
                                                 "hint": "try again", "required": False}


def test_precision_says_what_runs_and_refuses_a_typo(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESEARCH_PRECISION", "fp32")
    result = run_doctor(index_folder=tmp_path / "none")
    check = by_name(result)["precision"]
    assert check["ok"] and result["env"]["FACESEARCH_PRECISION"] == "fp32"
    assert "embedders on" in check["detail"] and "bf16" not in check["detail"].split("(")[0], check["detail"]
    monkeypatch.setenv("FACESEARCH_RUNTIME", "onnxruntime")  # says what really runs: ORT has no bf16 here
    monkeypatch.setenv("FACESEARCH_PRECISION", "bf16")
    check = by_name(run_doctor(index_folder=tmp_path / "none"))["precision"]
    assert "embedders on onnxruntime in fp32" in check["detail"], check["detail"]
    monkeypatch.delenv("FACESEARCH_RUNTIME")
    monkeypatch.setenv("FACESEARCH_PRECISION", "fp8")
    result = run_doctor(index_folder=tmp_path / "none")
    check = by_name(result)["precision"]
    assert not check["ok"] and "fp8" in check["detail"] and "auto, fp32, bf16" in check["hint"]
    assert not result["ok"] and "precision" in result["failed"]
