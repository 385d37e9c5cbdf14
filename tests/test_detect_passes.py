"""The min-face pass skips the inside of a large face the later views found (issue 38)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facesearch.faces import tiling
from facesearch.faces.tiling import HOLE_SCORE, YuNetFaceDetector, _strips


@pytest.mark.parametrize("hw,hole,margin", [((1000, 800), (200, 300, 600, 800), 90),
                                            ((500, 500), (0, 0, 400, 350), 40),
                                            ((3000, 2200), (300, 900, 2200, 2700), 200)])
def test_strips_hold_every_small_face_not_inside_the_hole(hw, hole, margin):
    """Oracle: every box up to ``margin`` px, anywhere, lies inside the hole or inside a strip."""
    strips = np.array(_strips(hw, hole, margin))
    h, w = hw
    rng = np.random.default_rng(1)
    for _ in range(3000):
        s = rng.integers(1, margin + 1)
        x, y = rng.integers(0, w - s + 1), rng.integers(0, h - s + 1)
        inside_hole = hole[0] <= x and hole[1] <= y and x + s <= hole[2] and y + s <= hole[3]
        in_strip = (strips[:, 0] <= x) & (strips[:, 1] <= y) & (strips[:, 2] >= x + s) & (strips[:, 3] >= y + s)
        assert inside_hole or in_strip.any(), (x, y, s)


class _BigFaceModel:
    """A stand-in network that sees one face filling most of any image it is shown."""

    def __init__(self, score):
        self.score, self.pixels = score, []
        self.device = torch.device("cpu")

    def detect_batch(self, images, score, nms):
        self.pixels += [im.shape[0] * im.shape[1] for im in images]
        out = []
        for im in images:
            h, w = im.shape[:2]
            row = np.zeros((1, 15), np.float32)
            row[0, :4] = (0.04 * w, 0.04 * h, 0.92 * w, 0.92 * h)
            row[0, 14] = self.score
            out.append(row if min(h, w) > 300 else np.zeros((0, 15), np.float32))
        return out


@pytest.mark.parametrize("score,skip,skipped", [(HOLE_SCORE + 0.05, True, True), (HOLE_SCORE - 0.05, True, False),
                                                (HOLE_SCORE + 0.05, False, False)])
def test_the_min_face_pass_skips_a_sure_large_face(monkeypatch, score, skip, skipped):
    model = _BigFaceModel(score)
    monkeypatch.setattr(tiling, "yunet_model", lambda: model)
    monkeypatch.setattr(tiling, "landmarks", lambda rgb, box: np.zeros((5, 2)))
    monkeypatch.setattr(tiling, "hog_box", lambda rgb, box, cnn=True: None)
    det = YuNetFaceDetector(skip_found=skip, crop_fallback=False, cascade=False)  # the whole min-face pass
    img = np.zeros((3000, 2400, 3), np.uint8)  # a close-up: the face's margin is small beside it
    faces = det.detect(img)
    assert len(faces) >= 1 and max(f.width for f in faces) > 2000  # the large face is found either way
    plan = det.plan(img.shape[:2])
    full = 3000 * 2400 * plan[0].scale ** 2
    min_face_pass = sum(model.pixels[len(plan) - 1:])  # the later views run first
    assert (min_face_pass < 0.9 * full) == skipped and min_face_pass > 0.1 * full
