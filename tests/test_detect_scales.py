"""Faces at every scale (issue 27): the scale plan, close-ups at every photo size, a crowd of
20 px faces, and a face crop read whole when no face is detected."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facesearch.faces import tiling
from facesearch.faces.crop import whole_image_face
from facesearch.faces.detect import create_detector
from facesearch.faces.tiling import (PASS_RATIO, VIEW_SIDE, YUNET_MAX_SIDE, YUNET_MIN_VISIBLE, YuNetFaceDetector,
                                     scale_plan)
from facesearch.photos.load import load_array

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "dev" / "pins_celebs").is_dir(), reason="../shared/data not present")
# YuNet's reliable range in the pixels it sees (tiling's module doc).
RELIABLE = (YUNET_MIN_VISIBLE, VIEW_SIDE)


@pytest.mark.parametrize("hw", [(92, 112), (300, 400), (400, 400), (700, 500), (1500, 1000), (3000, 3000),
                                (3000, 4000), (6000, 8000), (200, 3000)])
@pytest.mark.parametrize("min_face", [20, 40, 100])
def test_the_plan_covers_every_face_width_from_min_face_to_the_frame(hw, min_face):
    plan = scale_plan(hw, min_face)
    long_side = max(hw)
    assert plan[0].scale <= YUNET_MIN_VISIBLE / min_face + 1e-9
    assert max(long_side * p.scale for p in plan[1:]) <= YUNET_MAX_SIDE + 1e-6 if len(plan) > 1 else True
    assert long_side * plan[-1].scale <= max(VIEW_SIDE, long_side * plan[0].scale) + 1e-6
    for a, b in zip(plan, plan[1:]):
        assert 1 < a.scale / b.scale <= PASS_RATIO + 1e-9
    budget_floor = YUNET_MIN_VISIBLE / plan[0].scale  # the tile budget may raise the smallest face found
    for w in np.geomspace(max(min_face, budget_floor), long_side, 60):
        assert any(RELIABLE[0] - 1e-6 <= w * p.scale <= RELIABLE[1] for p in plan), (w, plan)


def test_a_small_photo_is_one_pass_and_a_portrait_skips_what_it_cannot_hold():
    assert len(scale_plan((112, 92), 20)) == 1  # 168 px at the min_face scale: no face can be too large
    portrait = scale_plan((1500, 1000), 20)
    assert portrait[0].tiled and len(portrait) == 2  # tiles for 20 px faces, one 480 px view for the rest
    assert math.isclose(1500 * portrait[-1].scale, VIEW_SIDE)
    before = scale_plan((1500, 1000), 20, view_side=YUNET_MAX_SIDE, pass_ratio=1e9)
    assert math.isclose(1500 * before[-1].scale, YUNET_MAX_SIDE)  # the plan it replaced: a 1536 px view


def _dev_face(name="pins_celebs"):
    sys.path.insert(0, str(REPO / "bench"))
    import groups

    paths = sorted((DATA / "dev" / name).rglob("*.jpg"))[:40]
    return groups.source_faces(paths, limit=1, seed=2)[0], groups


@needs_data
@pytest.mark.parametrize("side", [400, 700, 1000, 1600, 2200, 3000])
def test_a_dev_face_upscaled_to_any_size_is_found(side):
    src, groups = _dev_face()
    x0, y0, x1, y1 = src.box
    crop = src.image[int(max(0, y0 - 0.1 * (x1 - x0))):int(y1) + 2, int(x0):int(x1) + 1]  # the face fills it
    f = side / max(crop.shape[:2])
    img = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
    faces = create_detector("auto").detect(img)
    assert len(faces) >= 1
    assert max(f.width for f in faces) > 0.5 * img.shape[1]


@needs_data
def test_a_synthetic_crowd_of_20_px_faces():
    src, groups = _dev_face()
    sources = groups.source_faces(sorted((DATA / "dev" / "pins_celebs").rglob("*.jpg"))[:300], limit=30, seed=4)
    saved = groups.MIN_FACE, groups.MAX_FACE
    groups.MIN_FACE, groups.MAX_FACE = 21, 23  # ~20 px once the detector's box convention is applied
    try:
        photo = groups.compose(sources, groups.backgrounds(), 1, (800, 600), per_photo=(20, 20), seed=5)[0]
    finally:
        groups.MIN_FACE, groups.MAX_FACE = saved
    faces = create_detector("auto").detect(photo.image)
    found, fp = groups.match(photo.boxes, np.array([f.box for f in faces]).reshape(-1, 4))
    assert len(photo.boxes) >= 15 and found.mean() >= 0.8 and fp <= 1


@needs_data
def test_a_face_crop_with_no_detected_face_is_read_whole(monkeypatch):
    """The crop fallback: where the passes find nothing, a face crop is one face, a wall is none."""
    import skimage.data

    monkeypatch.setattr(YuNetFaceDetector, "_search", lambda self, rgb, plan, score: np.zeros((0, 15), np.float32))
    det = create_detector("auto")
    face = load_array(sorted((DATA / "dev" / "orl_att_faces").rglob("*.pgm"))[0])
    found = det.detect(face)
    assert len(found) == 1 and found[0].whole_image and found[0].landmarks.shape == (5, 2)
    bricks = np.ascontiguousarray(skimage.data.brick()[:300, :300])
    assert det.detect(bricks) == []
    assert YuNetFaceDetector(crop_fallback=False).detect(face) == []


def test_the_crop_check_refuses_what_yunet_and_the_landmarks_both_doubt(monkeypatch):
    monkeypatch.setattr("facesearch.faces.crop.landmarks", lambda rgb, box: np.random.default_rng(
        int(box[0] * 7 + box[1])).uniform(0, 100, (5, 2)))  # points that move with every box
    none_found = lambda im, s: np.zeros((0, 15), np.float32)  # noqa: E731
    assert whole_image_face(np.zeros((100, 100, 3), np.uint8), none_found) is None
    assert tiling.whole_image_face is whole_image_face
