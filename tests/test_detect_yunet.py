"""The YuNet detector as the product uses it: scaling, tiling, dlib landmarks, the default."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facesearch.faces import backends, detect, reconcile, tiling
from facesearch.faces.align import to_rgb_uint8
from facesearch.faces.detect import create_detector
from facesearch.faces.face import iou
from facesearch.faces.reconcile import dlib_box
from facesearch.faces.tiling import YUNET_MIN_VISIBLE, YuNetFaceDetector, _merge, _tiles
from facesearch.photos.load import load_array

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "dev" / "pins_celebs").is_dir(), reason="../shared/data not present")
# Light 50 degrees off axis: YuNet finds the face, dlib's HOG does not see it in its window.
YALE_DARK = DATA / "dev" / "extended_yale_b" / "yaleB31" / "yaleB31_P00A+050E+00.jpg"


@pytest.mark.parametrize("hw,tile,overlap", [((4500, 6000), 1536, 282), ((3000, 4000), 1536, 100),
                                             ((800, 700), 1536, 50), ((2000, 2100), 640, 200)])
def test_tiles_hold_every_small_box_whole(hw, tile, overlap):
    """Oracle: every box no larger than the overlap, anywhere, lies inside at least one tile."""
    tiles = np.array(_tiles(hw, tile, overlap))
    h, w = hw
    assert tiles[:, [0, 1]].min() == 0 and tiles[:, 2].max() == w and tiles[:, 3].max() == h
    assert (tiles[:, 2] - tiles[:, 0]).max() <= max(tile, overlap + 1) + 1 or len(tiles) == 1
    rng = np.random.default_rng(0)
    for _ in range(2000):
        s = rng.integers(1, overlap + 1)
        x, y = rng.integers(0, w - s + 1), rng.integers(0, h - s + 1)
        inside = (tiles[:, 0] <= x) & (tiles[:, 1] <= y) & (tiles[:, 2] >= x + s) & (tiles[:, 3] >= y + s)
        assert inside.any(), (x, y, s)


def test_merge_keeps_one_row_per_face():
    row = np.zeros(15, np.float32)
    a = row.copy(); a[:4] = (100, 100, 40, 40); a[14] = 0.9
    b = row.copy(); b[:4] = (102, 101, 39, 41); b[14] = 0.8  # the same face from a tile
    c = row.copy(); c[:4] = (300, 100, 40, 40); c[14] = 0.7
    kept = _merge(np.stack([b, a, c]))
    assert sorted(kept[:, 0].tolist()) == [100, 300]  # the better-scored copy of the first face


def test_dlib_box_is_the_fitted_map():
    x0, y0, x1, y1 = dlib_box((10.0, 20.0, 110.0, 220.0))
    assert x0 < 10 and y0 > 20 and x1 > 110 and y1 < 220  # wider, starts at the brows, ends at the chin


def test_auto_is_yunet_with_its_own_floor():
    det = create_detector("auto")
    assert isinstance(det, YuNetFaceDetector) and det.min_face == 20
    assert create_detector("dlib-auto").min_face == 40
    assert create_detector("yunet", min_face=33, max_side=999).max_side == 999


def _composite(size, n_faces, seed):
    sys.path.insert(0, str(REPO / "bench"))
    import groups

    paths = sorted((DATA / "dev" / "pins_celebs").rglob("*.jpg"))[:200]
    faces = groups.source_faces(paths, limit=30, seed=seed)
    return groups.compose(faces, groups.backgrounds(), 1, size, per_photo=(n_faces, n_faces), seed=seed)[0], groups


@needs_data
def test_finds_the_faces_of_a_group_photo_with_dlib_landmarks():
    photo, groups = _composite((1024, 768), 12, seed=3)
    faces = create_detector("auto").detect(photo.image)
    found, fp = groups.match(photo.boxes, np.array([f.box for f in faces]).reshape(-1, 4))
    big = (photo.boxes[:, 2] - photo.boxes[:, 0]) >= YUNET_MIN_VISIBLE
    assert found[big].all() and fp == 0
    for f in faces:
        assert f.points5.shape == (5, 2)
        if f.landmarks is None:  # HOG missed it: its chip comes from YuNet's points (issue 38)
            assert reconcile.near_frontal(f)
            continue
        assert f.landmarks.shape == (5, 2)
        x0, y0, x1, y1 = f.box
        assert ((f.landmarks >= (x0 - 0.5 * f.width, y0)) & (f.landmarks <= (x1 + 0.5 * f.width, y1))).all()


@pytest.mark.slow
@needs_data
def test_tiled_large_photo_finds_what_one_full_pass_finds():
    """Oracle: the same photo in one pass at the min_face scale (no tiles, no shrink)."""
    photo, groups = _composite((4000, 3000), 16, seed=4)
    tiled = create_detector("auto").detect(photo.image)
    one_pass = YuNetFaceDetector(max_side=10**6).detect(photo.image)
    assert max(photo.image.shape) * YUNET_MIN_VISIBLE / 20 > YuNetFaceDetector().max_side  # really tiled
    a = groups.match(photo.boxes, np.array([f.box for f in tiled]).reshape(-1, 4))[0]
    b = groups.match(photo.boxes, np.array([f.box for f in one_pass]).reshape(-1, 4))[0]
    assert a.sum() >= b.sum() and len(tiled) <= len(one_pass) + 1


class _ShyModel:
    """A stand-in network that only sees a face when asked with a low score threshold."""

    def __init__(self):
        self.calls = []
        self.device = torch.device("cpu")

    def detect_batch(self, images, score, nms):
        self.calls.append((images[0].shape[:2], score))
        row = np.zeros((1, 15), np.float32)
        row[0, :4] = (10, 10, 60, 60)
        row[0, 14] = 0.55
        return [row if score <= 0.55 else np.zeros((0, 15), np.float32) for _ in images]


@pytest.mark.parametrize("side,retried", [(300, True), (900, False)])
def test_small_photos_without_a_face_get_a_second_look(monkeypatch, side, retried):
    model = _ShyModel()
    monkeypatch.setattr(tiling, "yunet_model", lambda: model)
    monkeypatch.setattr(tiling, "landmarks", lambda rgb, box: np.zeros((5, 2)))
    monkeypatch.setattr(tiling, "hog_box", lambda rgb, box, cnn=True: None)
    det = YuNetFaceDetector(crop_fallback=False)
    faces = det.detect(np.zeros((side, side), np.uint8))
    scores = [s for _, s in model.calls]
    # The second look comes last, once, and only for a small photo (a 900 px one's min-face pass is
    # a cascade: a coarse look at refine.LOW, then a window at the usual score around its candidate).
    assert scores.count(tiling.YUNET_RETRY_SCORE) == int(retried)
    assert scores[-1] == (tiling.YUNET_RETRY_SCORE if retried else tiling.YUNET_SCORE)
    assert len(faces) == int(retried)


@pytest.mark.shared
@pytest.mark.skipif(not YALE_DARK.is_file(), reason="../shared/data not present")
def test_a_dark_face_hog_misses_gets_landmarks_from_dlibs_cnn_box(monkeypatch):
    used = []
    real = backends.landmarks
    monkeypatch.setattr(tiling, "landmarks", lambda rgb, box: used.append(box) or real(rgb, box))
    img = load_array(YALE_DARK)
    (face,) = dataclasses.replace(create_detector("auto"), cnn_box=True).detect(img)
    rgb, mapped = to_rgb_uint8(img), dlib_box(face.box)
    assert reconcile._window_box(rgb, mapped, reconcile._hog_rects, reconcile.HOG_FACE, reconcile.HOG_CONTEXT) is None
    (box,) = used
    assert not np.allclose(box, mapped, atol=1.0)  # not YuNet's box mapped to dlib's convention
    # Oracle: dlib's CNN run by hand on the photo at the window's scale finds the same face.
    f = reconcile.CNN_FACE / max(mapped[2] - mapped[0], mapped[3] - mapped[1])
    rects = [d.rect for d in backends.cnn_model()(tiling._resize(rgb, f), 0)]
    by_hand = [(r.left() / f, r.top() / f, (r.right() + 1) / f, (r.bottom() + 1) / f) for r in rects]
    assert max(iou(box, b) for b in by_hand) > 0.8
    np.testing.assert_allclose(face.landmarks, real(rgb, box))


def test_the_cnn_runs_only_for_the_largest_faces_of_a_photo(monkeypatch):
    """A crowd where HOG sees no face: the CNN's cost is bounded per photo."""
    model, sides = _ShyModel(), []
    rows = np.zeros((12, 15), np.float32)
    for k in range(12):
        rows[k, :4] = (90 * k, 10, 45 + 3 * k, 45 + 3 * k)  # 30-52 px in the photo
        rows[k, 14] = 0.9
    model.detect_batch = lambda images, score, nms: [rows.copy() for _ in images]
    monkeypatch.setattr(tiling, "yunet_model", lambda: model)
    monkeypatch.setattr(tiling, "landmarks", lambda rgb, box: np.zeros((5, 2)))
    monkeypatch.setattr(reconcile, "_hog_rects", lambda small: [])
    monkeypatch.setattr(reconcile, "_cnn_rects", lambda small: [])
    real = reconcile._window_box
    monkeypatch.setattr(reconcile, "_window_box", lambda rgb, t, find, face, ctx: (
        sides.append(t[2] - t[0]) if find is reconcile._cnn_rects else None) or real(rgb, t, find, face, ctx))
    det = YuNetFaceDetector(min_face=20, view_side=2000, cnn_box=True)  # one pass; the CNN as before issue 38
    faces = det.detect(np.zeros((300, 900), np.uint8))
    assert len(faces) == 12 and len(sides) == reconcile.CNN_MAX_FACES < 12
    widest = sorted((f.width for f in faces), reverse=True)[:reconcile.CNN_MAX_FACES]
    expected = [w * reconcile.YUNET_TO_DLIB_BOX[2] for w in widest]  # the mapped boxes of the largest faces
    np.testing.assert_allclose(sorted(sides, reverse=True), expected, rtol=1e-5)


def test_cached_chips_are_keyed_on_the_landmarks_version_and_precision(monkeypatch):
    from facesearch.eval.chips import chips_key

    monkeypatch.setenv("FACESEARCH_PRECISION", "fp32")
    assert chips_key("auto") == f"yunet.lm{detect.LANDMARKS_VERSION['yunet']}"
    assert chips_key("dlib-auto") == "dlib-auto"  # unchanged: its caches stay valid
    monkeypatch.setenv("FACESEARCH_PRECISION", "bf16")  # YuNet's boxes move a little in bf16
    monkeypatch.setenv("FACESEARCH_RUNTIME", "torch")  # torch runs YuNet in the asked precision
    assert chips_key("auto") == f"yunet.lm{detect.LANDMARKS_VERSION['yunet']}.bf16"
    assert chips_key("dlib-auto") == "dlib-auto"
    monkeypatch.setenv("FACESEARCH_RUNTIME", "onnxruntime")  # ...ONNX Runtime in fp32 whatever is asked
    assert chips_key("auto") == f"yunet.lm{detect.LANDMARKS_VERSION['yunet']}"


def test_the_cnn_is_asked_only_for_near_frontal_faces():
    frontal = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)
    profile = np.array([[30, 40], [45, 40], [20, 60], [25, 80], [40, 80]], float)  # nose past the eyes
    tilted = frontal @ np.array([[0.8, -0.6], [0.6, 0.8]])  # the frontal face rolled 37 degrees
    assert reconcile._turn(frontal) == 0 and reconcile._turn(profile) > 1 and reconcile._turn(tilted) < 1e-9
    faces = [detect.Face((0, 0, 100, 100), 0.9, points5=p) for p in (frontal, profile, tilted)]
    assert reconcile.cnn_faces(faces) == {0, 2}
