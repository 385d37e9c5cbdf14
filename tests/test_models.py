"""The embedder factory, preprocessing and weights I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facesearch.models.embed import EmbeddingEngine, select_device
from facesearch.core.errors import FacesearchError, ModelMismatchError
from facesearch.models import EmbedderConfig, create_embedder, load_weights, save_weights
from facesearch.models.preprocess import brighten_dark, preprocess

TINY = "resnet10t"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_embedder(TINY, embedding_dim=16, input_size=32).eval()


def test_outputs_are_unit_vectors(model):
    y = model(torch.randn(3, 3, 32, 32))
    assert y.shape == (3, 16)
    assert torch.allclose(y.norm(dim=1), torch.ones(3), atol=1e-5)


def test_twins_share_weights(model):
    """A Siamese pair is one network applied twice: identical inputs give identical outputs."""
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), model(x.clone()))


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_100", "lcnet_050", "resnet10t"])
def test_common_backbones_build_and_embed(backbone):
    m = create_embedder(backbone, embedding_dim=64, input_size=64).eval()
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 64)


def test_preprocess_greyscale_and_any_size():
    cfg = EmbedderConfig(input_size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    grey = Image.fromarray(np.full((50, 70), 255, np.uint8), "L")
    arr = np.zeros((10, 10, 3), np.uint8)
    x = preprocess([grey, arr], cfg)
    assert x.shape == (2, 3, 24, 24)
    assert torch.allclose(x[0], torch.ones_like(x[0]))  # white → (1-0.5)/0.5, all 3 channels
    assert torch.allclose(x[1], -torch.ones_like(x[1]))


def test_brighten_dark_raises_only_dark_chips_to_the_asked_mean():
    """Oracle: the gamma curve written out pixel by pixel; lit and black chips pass unchanged."""
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 90, (20, 20, 3), np.uint8)  # mean ~45
    out = brighten_dark(dark, below=60, mean=110)
    g = np.log(110 / 255) / np.log(dark.mean() / 255)
    for v in (0, 10, 45, 89):
        assert out[dark == v].tolist() == [round(255 * (v / 255) ** g)] * int((dark == v).sum())
    assert abs(out.mean() - 110) < 15  # a gamma curve lands near, not on, the asked mean
    assert np.all(out >= dark)  # only brighter; black stays black (v = 0 above)
    lit = rng.integers(40, 200, (20, 20, 3), np.uint8)
    assert brighten_dark(lit, 60, 110) is lit
    black = np.zeros((20, 20, 3), np.uint8)
    assert brighten_dark(black, 60, 110) is black


def test_config_identity_names_light_only_when_set():
    """Configs from before ``light`` existed keep the identity their indexes recorded."""
    plain = EmbedderConfig()
    assert "light" not in plain.identity()
    lit = EmbedderConfig(light={"dark_below": 60, "mean": 110})
    assert lit.identity()["light"] == {"dark_below": 60, "mean": 110} and lit.identity_hash() != plain.identity_hash()


def test_factory_uses_backbone_normalisation():
    m = create_embedder(TINY, embedding_dim=8, input_size=32)
    assert m.config.mean == pytest.approx((0.485, 0.456, 0.406))


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(FacesearchError, match="unknown backbone"):
        create_embedder("no_such_net_123")


def test_weights_round_trip(tmp_path, model):
    js = save_weights(model, tmp_path / "m")
    meta = json.loads(js.read_text())
    assert meta["config"]["backbone"] == TINY and len(meta["sha256"]) == 64
    loaded = load_weights(js)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.model_id == meta["model_id"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_mismatched_weights_are_refused(tmp_path, model):
    js = save_weights(model, tmp_path / "m")
    other = create_embedder(TINY, embedding_dim=32, input_size=32)
    with pytest.raises(ModelMismatchError):
        load_weights(js, expect=other.config)
    # tensors from another model under this JSON: checksum refuses them
    save_weights(other, tmp_path / "o")
    (tmp_path / "o.safetensors").replace(tmp_path / "m.safetensors")
    with pytest.raises(ModelMismatchError, match="checksum"):
        load_weights(js)


def test_missing_weights_hint(tmp_path):
    with pytest.raises(FacesearchError) as e:
        load_weights(tmp_path / "nothing.json")
    assert e.value.hint


def test_engine_batches_match_single(model):
    engine = EmbeddingEngine(model, device="cpu", batch_size=2, precision="fp32")
    imgs = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(5)]
    batched = engine.embed(imgs)
    single = np.concatenate([engine.embed([im]) for im in imgs])
    assert batched.shape == (5, 16)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_device_auto_is_usable():
    assert select_device("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_cpu(model):
    imgs = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(8)]
    cpu = EmbeddingEngine(model, device="cpu").embed(imgs)
    gpu = EmbeddingEngine(create_embedder(config=model.config).eval(), device="cuda")
    gpu.model.load_state_dict(model.state_dict())
    out = gpu.embed(imgs)
    assert np.min((cpu * out).sum(1)) > 0.99  # fp16 autocast stays close to fp32


def test_cuda_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FacesearchError, match="CUDA"):
        select_device("cuda")


# --- weights are checked, not trusted (issue 13) ------------------------------------------------


def _tiny(tmp_path, name="w"):
    return save_weights(create_embedder("resnet10t", embedding_dim=8, input_size=32).eval(), tmp_path / name)


def test_model_id_is_derived_from_the_tensors_not_trusted(tmp_path):
    from facesearch.models.weights_meta import read_meta

    js = _tiny(tmp_path)
    meta = json.loads(js.read_text())
    meta["model_id"] = "dlib_resnet29-128-c215a655b443"  # claims to be the shipped model
    js.write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="names model"):
        read_meta(js)
    with pytest.raises(ModelMismatchError):
        load_weights(js)


def test_non_finite_tensors_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from facesearch.models.weights_meta import model_id, sha256_file

    js = _tiny(tmp_path)
    st = js.with_suffix(".safetensors")
    state = load_file(str(st))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key][0] = float("nan")
    save_file(state, str(st))
    meta = json.loads(js.read_text())  # a consistent pair: checksum and id match the NaN tensors
    meta["sha256"] = sha256_file(st)
    meta["model_id"] = model_id(EmbedderConfig.from_dict(meta["config"]), meta["sha256"])
    js.write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="NaN or infinite"):
        load_weights(js)


@pytest.mark.parametrize("name", ["hf-hub:timm/resnet18.a1_in1k", "timm/resnet18.a1_in1k", "no_such_net"])
def test_only_local_architectures(name, monkeypatch):
    def no_network(*a, **kw):
        raise AssertionError("tried the network")

    monkeypatch.setattr("socket.socket.connect", no_network)
    with pytest.raises(FacesearchError, match="unknown backbone"):
        create_embedder(name, embedding_dim=8, input_size=32)
