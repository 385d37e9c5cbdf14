"""Tests for facesearch.faces.align and facesearch.faces.detect.

Always-on tests use synthetic images and a stub backend; tests on real faces read
../shared/data and dlib, and skip cleanly when either is missing.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from facesearch.faces import backends
from facesearch.faces.align import TEMPLATES, align_face, crop_box, estimate_similarity
from facesearch.faces.detect import FaceDetector, create_detector, faces_to_chips
from facesearch.core.errors import BadImageError, FacesearchError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
YALE = DATA / "train" / "yalefaces"
HAS_DLIB = importlib.util.find_spec("dlib") is not None

needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="dlib not installed")
needs_yale = pytest.mark.skipif(not YALE.is_dir(), reason="shared face data absent")


def similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def yale_images(n: int | None = None) -> list[np.ndarray]:
    from PIL import Image

    files = sorted(YALE.rglob("*.png"))[:n]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


# ---------------------------------------------------------------------------- align


def test_estimate_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = similarity(rng.uniform(0.1, 10), rng.uniform(-math.pi, math.pi), *rng.uniform(-500, 500, 2))
        src = rng.uniform(-100, 100, (5, 2))
        est = estimate_similarity(src, apply(m, src))
        np.testing.assert_allclose(est, m, atol=1e-8)
        probe = rng.uniform(-100, 100, (10, 2))  # oracle: the transform applied to new points
        np.testing.assert_allclose(apply(est, probe), apply(m, probe), atol=1e-6)


def test_estimate_similarity_is_least_squares_and_never_reflects():
    rng = np.random.default_rng(1)
    src = rng.uniform(-50, 50, (5, 2))
    dst = src * [-1, 1]  # a mirror image: the best similarity must still be a rotation
    est = estimate_similarity(src, dst)
    assert np.linalg.det(est[:, :2]) >= 0
    # Brute force: no nearby similarity has a smaller squared error.
    base = np.sum((apply(est, src) - dst) ** 2)
    for _ in range(200):
        a, b, tx, ty = np.array([est[0, 0], est[1, 0], est[0, 2], est[1, 2]]) + rng.normal(0, 0.05, 4)
        other = np.array([[a, -b, tx], [b, a, ty]])
        assert np.sum((apply(other, src) - dst) ** 2) >= base - 1e-9


def render_dots(shape, points, sigma):
    """A black image with one Gaussian dot (peak 250) at each sub-pixel point."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    img = np.zeros(shape[:2])
    for x, y in points:
        img += 250 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def centroid_near(chip, point, radius=6):
    x0, y0 = (int(round(v)) for v in point)
    win = chip[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(win * xs).sum(), (win * ys).sum()]) / win.sum()


@pytest.mark.parametrize(
    "scale,angle,tol",
    [(1.0, 0.0, 1.0), (1.7, 0.5, 1.0), (0.9, -0.8, 1.0), (1.3, math.pi, 1.0),
     # Faces over 2x the chip go through dlib's image pyramid, whose declared
     # coordinate map (p/2 - (1.25, 0.75)) is a quarter pixel off its filter
     # centre (p/2 - 1): dlib's own chips then land up to ~1.1 px off. We copy
     # dlib bit for bit, quirk included, because its descriptor expects it.
     (2.5, 2.0, 1.25), (5.0, -0.3, 1.25)],
)
def test_align_face_puts_landmarks_on_template_points(scale, angle, tol):
    size = 150
    target = TEMPLATES["dlib5_150_p25"].points(size)
    # Place the face in a 500x500 image by a known similarity, draw dots at its landmarks.
    m = similarity(scale, angle, 450, 450)
    landmarks = apply(m, target - size / 2)
    img = render_dots((900, 900), landmarks, sigma=1.5 * scale)
    chip = align_face(img, landmarks)
    assert chip.shape == (size, size, 3) and chip.dtype == np.uint8
    for p in target:
        # dlib's chips sit ~0.5 px off the template (centered_drect shrinks the
        # rectangle by 1 px); within 1 px is the contract.
        assert np.linalg.norm(centroid_near(chip, p) - p) < tol


def test_align_face_accepts_grey_and_other_sizes():
    img = np.full((120, 100), 77, np.uint8)
    lm = TEMPLATES["dlib5_150_p25"].points(150) * 0.5 + 10
    chip = align_face(img, lm, size=64)
    assert chip.shape == (64, 64, 3)
    assert (chip[20:40, 20:40] == 77).all()
    with pytest.raises(ValueError):
        align_face(img, lm[:4])
    with pytest.raises(BadImageError):
        align_face(img.astype(np.float32), lm)


def test_crop_box_maps_box_to_whole_chip():
    img = np.zeros((300, 400, 3), np.uint8)
    img[50:150, 100:200] = 200  # a 100x100 box
    chip = crop_box(img, (100, 50, 200, 150), 64)
    assert chip.shape == (64, 64, 3)
    assert (chip[1:-1, 1:-1] == 200).all()
    # With a 25% margin the box fills the middle 2/3 and the rest is background.
    chip = crop_box(img, (100, 50, 200, 150), 60, margin=0.25)
    assert (chip[12:48, 12:48] == 200).all() and (chip[:8] == 0).all() and (chip[:, -8:] == 0).all()


def test_crop_box_non_square_box_and_outside_image_and_big_shrink():
    img = np.full((100, 100, 3), 90, np.uint8)
    chip = crop_box(img, (0, 0, 100, 50), 40)  # square side 100, centred on y=25
    assert (chip[:8] == 0).all() and (chip[24:] == 90).all()
    big = np.full((3000, 3000), 140, np.uint8)
    assert (crop_box(big, (0, 0, 3000, 3000), 32)[2:-2, 2:-2] == 140).all()


# ---------------------------------------------------------------------------- detect


def test_none_detector_returns_the_whole_image():
    det = create_detector("none")
    faces = det.detect(np.zeros((30, 50, 3), np.uint8))
    assert len(faces) == 1
    assert faces[0].box == (0.0, 0.0, 50.0, 30.0) and faces[0].landmarks is None
    chips = faces_to_chips(np.zeros((30, 50), np.uint8), faces, size=32)
    assert chips[0].shape == (32, 32, 3)


def test_unknown_names_raise_facesearch_error_with_hint():
    with pytest.raises(FacesearchError) as err:
        create_detector("retinaface")
    assert err.value.hint and "dlib-hog" in err.value.hint
    with pytest.raises(FacesearchError):
        create_detector("none", policy="biggest")


def test_opencv_haar_runs_or_says_why():
    try:
        det = create_detector("opencv-haar")
    except FacesearchError as exc:
        assert exc.hint  # e.g. OpenCV 5 has no CascadeClassifier
    else:
        assert det.detect(np.zeros((64, 64, 3), np.uint8)) == []


class StubBackend:
    """Returns fixed boxes (in the coordinates of the image it is given) and records calls."""

    def __init__(self, boxes, scores):
        self.boxes, self.scores, self.calls = boxes, scores, []

    def __call__(self, rgb, upsample, min_face):
        self.calls.append((rgb.shape, upsample, min_face))
        return list(self.boxes), list(self.scores)


@pytest.fixture
def stub(monkeypatch):
    backend = StubBackend([(0, 0, 30, 30), (10, 10, 110, 110), (200, 50, 260, 110)], [2.0, 0.5, 1.0])
    monkeypatch.setitem(backends._BACKENDS, "stub", backend)
    return backend


def stub_detector(**kw):
    return FaceDetector("stub", "stub", with_landmarks=False, **kw)


def test_min_face_and_policy_filtering(stub):
    img = np.zeros((300, 400, 3), np.uint8)
    faces = stub_detector(min_face=40).detect(img)
    assert [f.box for f in faces] == [(200, 50, 260, 110), (10, 10, 110, 110)]  # best score first
    assert [f.box for f in stub_detector(min_face=10).detect(img)][0] == (0, 0, 30, 30)
    assert [f.box for f in stub_detector(min_face=70).detect(img)] == [(10, 10, 110, 110)]
    largest = stub_detector(min_face=10, policy="largest").detect(img)
    assert [f.box for f in largest] == [(10, 10, 110, 110)]
    assert stub_detector(min_face=500).detect(img) == []


def test_large_images_are_shrunk_and_boxes_mapped_back(stub):
    img = np.zeros((1500, 4000, 3), np.uint8)
    faces = stub_detector(min_face=0, max_side=1000).detect(img)
    (shape, _, _), = stub.calls
    assert shape[:2] == (375, 1000)  # the backend saw the shrunk copy
    fx, fy = 1000 / 4000, 375 / 1500
    expected = sorted((x1 / fx, y1 / fy, x2 / fx, y2 / fy, s) for (x1, y1, x2, y2), s in zip(stub.boxes, stub.scores))
    got = sorted((*f.box, f.score) for f in faces)
    np.testing.assert_allclose(got, expected)


def test_auto_upsample_only_for_small_images(stub):
    stub_detector(min_face=40).detect(np.zeros((243, 320), np.uint8))
    stub_detector(min_face=40).detect(np.zeros((960, 1280), np.uint8))
    stub_detector(min_face=100).detect(np.zeros((243, 320), np.uint8))
    stub_detector(min_face=40, upsample=2).detect(np.zeros((960, 1280), np.uint8))
    assert [c[1] for c in stub.calls] == [1, 0, 0, 2]


def test_fallback_runs_only_when_nothing_found(monkeypatch):
    empty, found = StubBackend([], []), StubBackend([(0, 0, 100, 100)], [1.0])
    monkeypatch.setitem(backends._BACKENDS, "empty", empty)
    monkeypatch.setitem(backends._BACKENDS, "found", found)
    img = np.zeros((800, 1000, 3), np.uint8)
    faces = FaceDetector("x", "empty", fallback="found", fallback_side=400, with_landmarks=False).detect(img)
    assert len(faces) == 1 and faces[0].box == pytest.approx((0, 0, 250, 250))
    assert found.calls[0][0][:2] == (320, 400) and found.calls[0][1] == 0
    FaceDetector("x", "found", fallback="empty", with_landmarks=False).detect(img)
    assert len(empty.calls) == 1


def test_bad_images_raise_bad_image_error():
    det = create_detector("none")
    for bad in (np.zeros((10, 10), np.float32), np.zeros((0, 10, 3), np.uint8), np.zeros((4, 4, 2), np.uint8)):
        with pytest.raises(BadImageError):
            det.detect(bad)


@needs_dlib
@pytest.mark.parametrize("name,resolved", [("auto", "yunet"), ("dlib-auto", "dlib-auto")])
def test_detectors_pickle_without_models(name, resolved):
    det = create_detector(name, min_face=30, policy="largest")
    clone = copy.deepcopy(det)  # the same reduce protocol multiprocessing pickles with
    assert clone == det and clone.name == resolved
    assert len(pickle.dumps(det)) < 1000  # settings only, no model inside


# ------------------------------------------------------------------- real faces


@needs_dlib
@needs_yale
def test_align_matches_dlib_get_face_chip_on_real_faces():
    import dlib

    det = backends.hog_model()
    pred = backends.shape_predictor()
    diffs = []
    for i, img in enumerate(yale_images(12)):
        if i % 3 == 0:  # exercise dlib's pyramid path: a face much larger than the chip
            img = cv2.resize(img, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
        rects = det(img, 0)
        if not rects:
            continue
        shape = pred(img, rects[0])
        lm = np.array([(p.x, p.y) for p in shape.parts()], float)
        ours = align_face(img, lm).astype(int)
        diffs.append(np.abs(ours - dlib.get_face_chip(img, shape, 150, 0.25).astype(int)).mean())
    assert len(diffs) >= 10
    assert max(diffs) < 0.5  # measured: bit-identical


@pytest.mark.slow
@needs_dlib
@needs_yale
def test_auto_detection_rate_on_yalefaces():
    det = create_detector("auto")
    images = yale_images()
    found = [len(det.detect(img)) >= 1 for img in images]
    assert len(images) >= 150
    assert sum(found) / len(found) >= 0.95


@needs_dlib
@needs_yale
def test_two_faces_on_a_canvas_min_face_and_largest():
    a, b = yale_images(12)[0], yale_images(12)[11]
    small = cv2.resize(b, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((400, 800, 3), 128, np.uint8)
    canvas[20 : 20 + a.shape[0], 30 : 30 + a.shape[1]] = a
    canvas[150 : 150 + small.shape[0], 500 : 500 + small.shape[1]] = small
    faces = create_detector("dlib-hog").detect(canvas)
    assert len(faces) == 2
    big_face = max(faces, key=lambda f: f.width)
    small_face = min(faces, key=lambda f: f.width)
    assert 30 <= big_face.box[0] and big_face.box[2] <= 30 + a.shape[1] + 5
    assert 500 <= small_face.box[0] + 5 and small_face.box[2] <= 500 + small.shape[1] + 5
    for f in faces:  # landmarks inside their box
        assert f.landmarks.shape == (5, 2)
        assert (f.landmarks[:, 0] > f.box[0]).all() and (f.landmarks[:, 0] < f.box[2]).all()
    cut = (big_face.side + small_face.side) / 2
    assert [f.box for f in create_detector("dlib-hog", min_face=cut).detect(canvas)] == [big_face.box]
    assert [f.box for f in create_detector("dlib-hog", policy="largest").detect(canvas)] == [big_face.box]
    chips = faces_to_chips(canvas, faces)
    assert len(chips) == 2 and all(c.shape == (150, 150, 3) for c in chips)


@needs_dlib
@needs_yale
def test_large_image_boxes_scale_with_the_image():
    img = yale_images(1)[0]
    scale = 4000 / img.shape[1]
    big = cv2.resize(img, (4000, round(img.shape[0] * scale)), interpolation=cv2.INTER_LINEAR)
    det = create_detector("dlib-auto")
    (small_face,), (big_face,) = det.detect(img), det.detect(big)
    # Oracle 1: dlib run by hand on the 1280-px copy the detector works on, scaled back.
    copy = cv2.resize(big, (1280, round(big.shape[0] * 1280 / 4000)), interpolation=cv2.INTER_AREA)
    (rect,) = backends.hog_model()(copy, 0)
    fx, fy = 1280 / 4000, copy.shape[0] / big.shape[0]
    expected = (rect.left() / fx, rect.top() / fy, (rect.right() + 1) / fx, (rect.bottom() + 1) / fy)
    np.testing.assert_allclose(big_face.box, expected, rtol=1e-9)
    # Oracle 2: the face found in the original small photo, scaled up. HOG boxes
    # snap to its scan grid, so allow a tenth of the face size.
    side = small_face.side
    np.testing.assert_allclose(np.array(big_face.box) / scale, small_face.box, atol=0.1 * side)
    # Landmarks come from the full-resolution image: they scale too.
    np.testing.assert_allclose((big_face.landmarks + 0.5) / scale - 0.5, small_face.landmarks, atol=4)


@needs_dlib
def test_align_is_dlib_get_face_chip_bit_for_bit_on_synthetic_faces():
    """The oracle is dlib itself: random textures, random 5-point layouts (eyes, nose; faces from
    20 to 600 px, tilted, partly off the frame), every chip identical byte for byte."""
    import dlib

    rng = np.random.default_rng(7)
    for trial in range(40):
        h, w = rng.integers(60, 900, 2)
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
        width, angle = rng.uniform(20, 600), rng.uniform(-0.6, 0.6)
        centre = rng.uniform([-0.2 * w, -0.2 * h], [1.2 * w, 1.2 * h])
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        # dlib's 5-point order: left eye outer, inner, right eye outer, inner, nose base (image coords)
        layout = np.array([[0.45, -0.2], [0.15, -0.2], [-0.45, -0.2], [-0.15, -0.2], [0.0, 0.25]])
        lm = centre + (layout * width) @ rot.T + rng.normal(0, 0.02 * width, (5, 2))
        parts = [dlib.point(int(round(x)), int(round(y))) for x, y in lm]
        box = dlib.rectangle(int(lm[:, 0].min()), int(lm[:, 1].min()), int(lm[:, 0].max()), int(lm[:, 1].max()))
        theirs = dlib.get_face_chip(img, dlib.full_object_detection(box, parts), 150, 0.25)
        ours = align_face(img, np.array([(p.x, p.y) for p in parts], float))
        assert np.array_equal(ours, theirs), f"trial {trial}: {np.abs(ours.astype(int) - theirs).max()}"


@needs_dlib
def test_shipped_hog_file_is_dlibs_detector_and_a_bad_one_falls_back(tmp_path, monkeypatch):
    """weights/dlib_hog.svm (tools/export_hog.py) loads in milliseconds instead of dlib's ~0.5 s
    rebuild; it must be the same detector (same boxes and scores on real-looking photos: the
    oracle is dlib's compiled-in one), reproduced byte for byte by the tool, and a damaged file
    must never be used."""
    import dlib

    from facesearch.core import modelfiles
    from facesearch.photos.synthetic import make_identities, render_face

    spec = importlib.util.spec_from_file_location("export_hog", Path(__file__).parents[1] / "tools" / "export_hog.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    made = tool.export(tmp_path)
    assert made.read_bytes() == (modelfiles.shipped_weights_dir() / modelfiles.HOG_FILE).read_bytes()
    assert modelfiles.hog_model_path() is not None
    ours, theirs = dlib.fhog_object_detector(str(modelfiles.hog_model_path())), dlib.get_frontal_face_detector()
    rng = np.random.default_rng(3)
    photos = [np.asarray(render_face(p, rng, size=200)) for p in make_identities(6)] + yale_images(6)
    for img in photos:
        assert str(ours.run(img, 1, -0.5)) == str(theirs.run(img, 1, -0.5))
    bad = tmp_path / "w"
    bad.mkdir()
    (bad / modelfiles.HOG_FILE).write_bytes(made.read_bytes()[:-10] + b"0" * 10)
    (bad / modelfiles.HOG_FILE).with_suffix(".json").write_text(made.with_suffix(".json").read_text())
    monkeypatch.setattr(modelfiles, "shipped_weights_dir", lambda: bad)
    assert modelfiles.hog_model_path() is None  # backends.hog_model then builds dlib's own
