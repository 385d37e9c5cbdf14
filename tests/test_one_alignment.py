"""One alignment (issue 38): dlib's chip warped from YuNet's own points, and a YuNet detector that
then skips dlib's box and shape predictor."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from facesearch.faces import reconcile, tiling
from facesearch.faces.align import TEMPLATES, align_face
from facesearch.faces.chips import (CHIP_SIZE, YUNET_CHIP, YUNET_POINTS_IN_DLIB_CHIP, make_chips,
                                    needs_dlib_landmarks, yunet_points_from_dlib)
from facesearch.faces.detect import create_detector
from facesearch.faces.face import Face
from facesearch.photos.load import load_array

REPO = Path(__file__).resolve().parents[1]


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (400, 400, 3), np.uint8)


def test_points_on_the_template_give_the_photo_region_itself():
    """Oracle: YuNet's points exactly where the template puts them, shifted by (dx, dy), make the
    chip the photo's own pixels at that offset: an unscaled warp. dlib's chip spans its side minus
    one pixel, centred, so each chip pixel falls half a pixel past a photo pixel: the truncated mean
    of four photo pixels."""
    img = _image()
    dx, dy = 37, 52
    face = Face((dx, dy, dx + 150.0, dy + 150.0), 1.0, points5=YUNET_POINTS_IN_DLIB_CHIP + (dx, dy))
    chip = make_chips(img, [face], YUNET_CHIP)[0]
    win = img[dy:dy + 151, dx:dx + 151].astype(int)
    expected = (win[:-1, :-1] + win[:-1, 1:] + win[1:, :-1] + win[1:, 1:]) // 4
    assert np.abs(chip.astype(int) - expected).max() <= 1  # the fit's float error may cross a truncation


def test_the_yunet_chip_is_dlibs_chip_of_the_same_face_when_the_points_agree():
    """Oracle: dlib's landmarks and YuNet's points placed by the same similarity transform (scale
    1.7, turned 10 degrees) give the same 150 px chip through either template."""
    img = _image(1)
    angle, scale, shift = np.deg2rad(10), 1.7, np.array([60.0, 45.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dlib_pts = TEMPLATES["dlib5_150_p25"].points(CHIP_SIZE) @ rot.T + shift
    yunet_pts = YUNET_POINTS_IN_DLIB_CHIP @ rot.T + shift
    via_dlib = align_face(img, dlib_pts, "dlib5_150_p25", CHIP_SIZE).astype(int)
    via_yunet = make_chips(img, [Face((0, 0, 1, 1), 1.0, points5=yunet_pts)], YUNET_CHIP)[0].astype(int)
    assert np.abs(via_dlib - via_yunet).max() <= 1  # the two least-squares fits agree to rounding


def test_a_face_with_only_dlibs_landmarks_gets_yunet_points_mapped_from_them():
    img = _image(2)
    lm = TEMPLATES["dlib5_150_p25"].points(CHIP_SIZE) + 30
    chip = make_chips(img, [Face((30, 30, 180, 180), 1.0, landmarks=lm)], YUNET_CHIP)[0]
    expected = align_face(img, yunet_points_from_dlib(lm), YUNET_CHIP, CHIP_SIZE)
    np.testing.assert_array_equal(chip, expected)


def test_which_alignments_need_dlibs_landmarks():
    assert needs_dlib_landmarks("dlib5_150_p25") and needs_dlib_landmarks("dlib5_150_p25+arcface_112")
    assert not needs_dlib_landmarks("yunet5_150+arcface_112") and not needs_dlib_landmarks("arcface_112")


@pytest.fixture(scope="module")
def group_photo(shared_data):
    """A real group photo: dev pins faces pasted on a face-free background (bench/groups.py)."""
    sys.path.insert(0, str(REPO / "bench"))
    import groups

    paths = sorted((shared_data / "dev" / "pins_celebs").rglob("*.jpg"))[:100]
    faces = groups.source_faces(paths, limit=12, seed=5)
    return groups.compose(faces, groups.backgrounds(), 1, (800, 600), per_photo=(4, 4), seed=5)[0].image


def test_a_yunet_aligned_model_never_runs_dlibs_box_or_landmarks(monkeypatch, group_photo):
    """The detector for a model aligned from YuNet's points finds the same faces with YuNet's points,
    and neither HOG, dlib's CNN nor the shape predictor runs."""
    img = group_photo
    both = create_detector("auto").detect(img)
    called = []
    monkeypatch.setattr(tiling, "hog_box", lambda *a, **k: called.append("box"))
    monkeypatch.setattr(tiling, "landmarks", lambda *a, **k: called.append("landmarks"))
    one = create_detector("auto", align="yunet5_150+arcface_112").detect(img)
    assert called == [] and len(one) == len(both) >= 1
    assert all(f.landmarks is None and f.points5 is not None for f in one)
    np.testing.assert_allclose([f.box for f in one], [f.box for f in both])
    chips = make_chips(img, one, "yunet5_150+arcface_112")
    assert chips[0][YUNET_CHIP].shape == (150, 150, 3) and chips[0]["arcface_112"].shape == (112, 112, 3)


@pytest.mark.parametrize("align", [None, "dlib5_150_p25+arcface_112"])
def test_a_dlib_aligned_model_still_gets_dlibs_landmarks(align, group_photo):
    faces = create_detector("auto", align=align).detect(group_photo)
    assert faces and all(f.landmarks is not None or reconcile.near_frontal(f) for f in faces)
    assert sum(f.landmarks is not None for f in faces) >= len(faces) - 1  # HOG sees pins faces (99 % on dev)


def test_a_frontal_face_hog_misses_is_aligned_from_yunets_points_without_dlibs_cnn(monkeypatch, shared_data):
    """A dark Extended Yale B face HOG does not see: no CNN runs, and its dlib-template chip is the
    YuNet-point chip (oracle: the yunet5_150 chip cut directly from its points)."""
    photo = shared_data / "dev" / "extended_yale_b" / "yaleB31" / "yaleB31_P00A+050E+00.jpg"  # HOG misses it
    if not photo.is_file():
        pytest.skip(f"{photo.name} is absent")
    cnn = []
    monkeypatch.setattr(reconcile, "_cnn_rects", lambda small: cnn.append(1) or [])
    img = load_array(photo)
    (face,) = create_detector("auto").detect(img)
    assert cnn == [] and face.landmarks is None and face.points5 is not None
    chip = make_chips(img, [face], "dlib5_150_p25")[0]
    np.testing.assert_array_equal(chip, make_chips(img, [face], YUNET_CHIP)[0])
