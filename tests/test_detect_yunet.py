"""The YuNet detector as the product uses it: scaling, tiling, dlib landmarks, the default."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facesearch.detect import (YUNET_MIN_VISIBLE, YuNetFaceDetector, _dlib_box, _merge, _tiles,
                               create_detector)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "dev" / "pins_celebs").is_dir(), reason="../shared/data not present")


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
    x0, y0, x1, y1 = _dlib_box((10.0, 20.0, 110.0, 220.0))
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
        assert f.landmarks.shape == (5, 2) and f.points5.shape == (5, 2)
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
    import facesearch.detect as detect

    model = _ShyModel()
    monkeypatch.setattr(detect, "_yunet_model", lambda: model)
    monkeypatch.setattr(detect, "_landmarks", lambda rgb, box: np.zeros((5, 2)))
    monkeypatch.setattr(detect, "_hog_box", lambda rgb, box: None)
    faces = YuNetFaceDetector().detect(np.zeros((side, side), np.uint8))
    assert [s for _, s in model.calls] == ([detect.YUNET_SCORE, detect.YUNET_RETRY_SCORE] if retried
                                           else [detect.YUNET_SCORE])
    assert len(faces) == int(retried)
