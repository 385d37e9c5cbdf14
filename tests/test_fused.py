"""The fused default model: dlib_ft ⊕ SFace, its chips, its checks, and indexes of the old default."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from facesearch.faces.align import TEMPLATES, align_face
from facesearch.faces.face import Face
from facesearch.models.embed import EmbeddingEngine
from facesearch.core.errors import FacesearchError, ModelMismatchError
from facesearch.faces.chips import YUNET_POINTS_IN_DLIB_CHIP, make_chips, yunet_points_from_dlib
from facesearch.models.weights import load_weights
from facesearch.core.modelfiles import shipped_weights_dir
from facesearch.models.weights_meta import resolve_weights


@pytest.fixture(scope="module")
def fused():
    return load_weights(None)


def _faces(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (200, 200, 3), np.uint8)
    faces = [Face((40.0 + k, 40.0, 160.0 + k, 160.0), 1.0, landmarks=TEMPLATES["dlib5_150_p25"].points(120) + 40 + k,
                  points5=YUNET_POINTS_IN_DLIB_CHIP * 0.8 + 40 + k) for k in range(n)]
    return make_chips(img, faces, "dlib5_150_p25+arcface_112")


def test_default_is_the_fused_model(fused):
    assert fused.config.backbone == "fused" and fused.config.embedding_dim == 256
    assert [c["weights"] for c in fused.config.components] == ["dlib_ft", "sface"]
    assert fused.config.align == "dlib5_150_p25+arcface_112"


def test_fused_distance_is_the_weighted_cosine_of_its_parts(fused):
    """Oracle: each part run on its own chip, cosines weighted by hand."""
    chips = _faces(4)
    with torch.inference_mode():
        v = fused(*fused.prepare(chips)).numpy()
        a = fused.base(fused.prepare(chips)[0]).numpy()
        b = torch.nn.functional.normalize(fused.sface(fused.prepare(chips)[1]), dim=1).numpy()
    w = [c["weight"] for c in fused.config.components]
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v @ v.T, w[0] * (a @ a.T) + w[1] * (b @ b.T), atol=1e-5)


def test_quality_is_the_length_of_sfaces_raw_feature(fused):
    """Oracle: SFace run alone on the ArcFace chips; the engine passes the same rating on, batch by batch."""
    chips = _faces(5, seed=2)
    a, b = fused.prepare(chips)
    with torch.inference_mode():
        emb, quality = fused.forward_with_quality(a, b)
        raw = fused.sface(b)
        np.testing.assert_allclose(fused(a, b).numpy(), emb.numpy())
    np.testing.assert_allclose(quality.numpy(), raw.norm(dim=1).numpy(), rtol=1e-5)
    engine = EmbeddingEngine(fused, device="cpu", batch_size=2, precision="fp32")  # 3 batches
    e2, q2 = engine.embed_with_quality(chips)
    np.testing.assert_allclose(e2, engine.embed(chips), atol=1e-6)
    np.testing.assert_allclose(q2, quality.numpy(), rtol=1e-4)
    assert engine.embed_with_quality([])[1].shape == (0,)


def test_forward_passes_on_a_cpu_split_a_batch_without_changing_it(fused):
    """Oracle: one forward pass over the whole batch. The CPU splits it into cache-sized passes
    (CPU_FORWARD_FACES); embeddings and ratings come back the same and in order."""
    chips = _faces(7, seed=3)
    with torch.inference_mode():
        whole, quality = fused.forward_with_quality(*fused.prepare(chips))
    engine = EmbeddingEngine(fused, device="cpu", batch_size=64, precision="fp32")
    engine.forward_faces = 3  # passes of 3, 3 and 1 faces
    emb, q = engine.embed_with_quality(chips)
    np.testing.assert_allclose(emb, whole.numpy(), atol=1e-5)
    np.testing.assert_allclose(q, quality.numpy(), rtol=1e-4)


def test_dark_chips_are_brightened_before_both_parts(fused):
    """Oracle: the same parts without the exposure correction, fed chips brightened by hand."""
    from dataclasses import replace

    from facesearch.models.fused import FusedEmbedder
    from facesearch.models.preprocess import brighten_dark

    light = fused.config.light
    assert light and light["dark_below"] > 0  # the shipped default corrects dark chips
    plain = FusedEmbedder(replace(fused.config, light={}), fused.base, fused.sface)
    lit = _faces(1, seed=5)[0]
    dark = {k: (v // 8).astype(np.uint8) for k, v in lit.items()}  # mean ~16
    by_hand = {k: brighten_dark(v, light["dark_below"], light["mean"]) for k, v in dark.items()}
    for got, want in zip(fused.prepare([dark, lit]), plain.prepare([by_hand, lit])):
        torch.testing.assert_close(got, want)
    assert not torch.equal(fused.prepare([dark])[1], plain.prepare([dark])[1])


def test_bf16_autocast_stays_close_to_fp32(fused):
    """The CPU fast path (bf16 where the CPU has it) may round, not change who is who."""
    chips = _faces(6, seed=4)
    exact, q32 = EmbeddingEngine(fused, device="cpu", precision="fp32").embed_with_quality(chips)
    fast, q16 = EmbeddingEngine(fused, device="cpu", precision="bf16").embed_with_quality(chips)
    assert np.min((exact * fast).sum(1)) > 0.999
    np.testing.assert_allclose(q16, q32, rtol=0.05)
    with pytest.raises(FacesearchError, match="unknown precision"):
        EmbeddingEngine(fused, device="cpu", precision="fp8")


def test_a_model_that_rates_nothing_gives_no_quality():
    engine = EmbeddingEngine(load_weights("dlib_ft"), device="cpu")
    chips = [c["dlib5_150_p25"] for c in _faces(2)]
    assert not engine.rates_quality and engine.embed_with_quality(chips)[1] is None


def test_chips_for_a_fused_model_are_one_dict_per_face():
    chips = _faces(2)
    assert [sorted(c) for c in chips] == [["arcface_112", "dlib5_150_p25"]] * 2
    assert chips[0]["dlib5_150_p25"].shape == (150, 150, 3) and chips[0]["arcface_112"].shape == (112, 112, 3)


def test_points_for_dlib_only_faces_land_where_yunet_puts_them():
    """Oracle: a face whose dlib landmarks are the template's own points is the identity chip."""
    lm = TEMPLATES["dlib5_150_p25"].points(150) * 2 + 7  # the chip scaled 2x and shifted
    pts = yunet_points_from_dlib(lm)
    np.testing.assert_allclose(pts, YUNET_POINTS_IN_DLIB_CHIP * 2 + 7, atol=1e-6)
    assert yunet_points_from_dlib(None) is None
    assert align_face(np.zeros((400, 400, 3), np.uint8), lm).shape == (150, 150, 3)


def test_a_swapped_part_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "home" / "weights"
    home.mkdir(parents=True)
    meta = json.loads((shipped_weights_dir() / "default.json").read_text())
    meta["config"]["components"][0]["sha256"] = "0" * 64
    meta.pop("model_id")
    from facesearch.models.fused import fused_digest

    meta["sha256"] = fused_digest(meta["config"]["components"])
    (home / "swapped.json").write_text(json.dumps(meta))
    monkeypatch.setenv("FACESEARCH_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelMismatchError, match="was made with dlib_ft"):
        load_weights("swapped")


@pytest.mark.parametrize("edit", ["weights", "light"])
def test_an_edited_fused_json_is_refused(tmp_path, edit):
    meta = json.loads((shipped_weights_dir() / "default.json").read_text())
    if edit == "weights":
        meta["config"]["components"][0]["weight"] = 0.5
        meta["config"]["components"][1]["weight"] = 0.5
    else:
        meta["config"]["light"] = {}
    meta.pop("model_id")
    (tmp_path / "edited.json").write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="checksum"):
        load_weights(tmp_path / "edited.json")


def test_an_index_of_another_shipped_model_finds_its_weights(tmp_path):
    dlib_ft = load_weights("dlib_ft")
    assert resolve_weights(None, model=dlib_ft.model_id).name == "dlib_ft.json"
    assert resolve_weights(None, model="nobody-128-000000000000").name == "default.json"
    first_fusion = load_weights("fused_v1")  # the default before the exposure correction and weight 0.7
    assert resolve_weights(None, model=first_fusion.model_id).name == "fused_v1.json"
    assert first_fusion.model_id != load_weights(None).model_id and not first_fusion.config.light
    copy = tmp_path / "w"
    shutil.copytree(shipped_weights_dir(), copy)
    assert resolve_weights(copy / "default.json", model=dlib_ft.model_id) == copy / "default.json"  # asked for
