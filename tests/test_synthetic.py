"""Synthetic faces: deterministic, identities separable in raw pixels, scenes well formed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from facesearch.photos.synthetic import (
    SyntheticIdentity,
    compose_photo,
    make_identities,
    make_identity_folder,
    render_face,
)


def _render(identity, seed, size=48, **kw):
    return np.asarray(render_face(identity, np.random.default_rng(seed), size=size, **kw))


def test_same_seed_same_people_and_pixels():
    a, b = make_identities(4, seed=3), make_identities(4, seed=3)
    assert a == b
    assert np.array_equal(_render(a[0], 7), _render(b[0], 7))
    assert SyntheticIdentity.random(11) == SyntheticIdentity.random(11)


def test_different_seeds_differ():
    ids = make_identities(4, seed=0)
    assert len({p.name for p in ids}) == 4
    assert ids != make_identities(4, seed=1)
    # The same person photographed twice is never pixel-identical.
    assert not np.array_equal(_render(ids[0], 1), _render(ids[0], 2))


@pytest.mark.parametrize("size", [32, 64])
def test_render_shape_and_mode(size):
    img = render_face(make_identities(1)[0], np.random.default_rng(0), size=size)
    assert img.mode == "RGB" and img.size == (size, size)


def test_render_without_jitter_or_lighting():
    person = make_identities(1, seed=5)[0]
    a = _render(person, 1, pose_jitter=False, lighting=False)
    b = _render(person, 2, pose_jitter=False, lighting=False)
    assert a.shape == (48, 48, 3) and not np.array_equal(a, b)  # background and noise still vary


def test_alpha_covers_the_person_not_the_corners():
    img = render_face(make_identities(1)[0], np.random.default_rng(0), size=64, alpha=True)
    alpha = np.asarray(img.getchannel("A"))
    assert img.mode == "RGBA"
    assert alpha[32, 32] == 255  # the face centre
    assert alpha[0, 0] == 0 and alpha[0, -1] == 0  # background corners


def test_identities_differ_more_than_photos_of_one_person():
    """Raw-pixel oracle: mean distance between people > mean distance within a person."""
    ids = make_identities(6, seed=0)
    rng = np.random.default_rng(0)
    photos = [[np.asarray(render_face(p, rng, size=32), dtype=np.float32).ravel() for _ in range(5)] for p in ids]
    within = [np.linalg.norm(a - b) for imgs in photos for a, b in itertools.combinations(imgs, 2)]
    between = [np.linalg.norm(a - b) for p, q in itertools.combinations(range(len(ids)), 2)
               for a in photos[p] for b in photos[q]]
    assert np.mean(between) > 1.05 * np.mean(within)  # measured 1.15 for this seed


def test_make_identity_folder_layout(tmp_path):
    root = make_identity_folder(tmp_path / "faces", n_people=3, per_person=4, size=32, seed=1)
    people = sorted(p.name for p in root.iterdir())
    assert people == ["person_00", "person_01", "person_02"]
    for person in root.iterdir():
        files = sorted(person.iterdir())
        assert len(files) == 4
        with Image.open(files[0]) as im:
            assert im.size == (32, 32)


def test_make_identity_folder_is_deterministic(tmp_path):
    a = make_identity_folder(tmp_path / "a", 2, 2, size=32, seed=4)
    b = make_identity_folder(tmp_path / "b", 2, 2, size=32, seed=4)
    for fa in sorted(a.rglob("*.png")):
        fb = b / fa.relative_to(a)
        assert np.array_equal(np.asarray(Image.open(fa)), np.asarray(Image.open(fb)))


@pytest.mark.parametrize("alpha", [False, True])
def test_compose_photo_boxes_inside_and_disjoint(alpha):
    rng = np.random.default_rng(0)
    ids = make_identities(5, seed=2)
    faces = [render_face(p, rng, size=s, alpha=alpha) for p, s in zip(ids, [64, 80, 96, 64, 72])]
    photo, boxes = compose_photo(faces, canvas_size=(320, 240), rng=rng)
    assert photo.size == (320, 240) and photo.mode == "RGB"
    assert len(boxes) == len(faces)
    for (x0, y0, x1, y1), face in zip(boxes, faces):
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
        assert (x1 - x0, y1 - y0) == face.size
    for a, b in itertools.combinations(boxes, 2):  # brute force: no two boxes share a pixel
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_compose_photo_pastes_the_face():
    rng = np.random.default_rng(1)
    face = render_face(make_identities(1)[0], rng, size=64, alpha=True)
    photo, [(x0, y0, x1, y1)] = compose_photo([face], (200, 150), rng)
    centre = np.asarray(photo)[y0 + 32, x0 + 32].astype(int)
    assert np.abs(centre - np.asarray(face.convert("RGB"))[32, 32].astype(int)).max() <= 1


def test_compose_photo_refuses_what_cannot_fit():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        compose_photo([Image.new("RGB", (300, 300))], (200, 200), rng)
    with pytest.raises(ValueError):
        compose_photo([Image.new("RGB", (60, 60)) for _ in range(20)], (120, 120), rng)


def test_dlib_hog_finds_most_rendered_faces():
    """The demo relies on the classic detector firing on drawn faces (measured ~0.9 at 150 px)."""
    dlib = pytest.importorskip("dlib")
    hog = dlib.get_frontal_face_detector()
    rng = np.random.default_rng(0)
    ids = make_identities(10, seed=0)
    found = [len(hog(np.asarray(render_face(p, rng, size=150)), 1)) > 0 for p in ids]
    assert sum(found) >= 7
