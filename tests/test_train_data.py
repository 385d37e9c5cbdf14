"""Training data: identity folders, identity splits, PK batches, pairs, augmentation."""

from __future__ import annotations

import itertools
from collections import Counter
from math import comb
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch.core.errors import DataError
from facesearch.photos.synthetic import make_identity_folder
from facesearch.learn.augment import make_augment
from facesearch.photos.folders import IdentityFolder, split_by_identity
from facesearch.eval.pairs import make_pairs
from facesearch.learn.data import ImageDataset, PairDataset, PKSampler

N_PEOPLE, PER_PERSON = 6, 5
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """6 people x 5 PNGs, plus: a corrupt JPEG, a PGM, a GIF, a nested image, a one-photo
    person, an empty person folder, a stray root image and a hidden folder."""
    root = make_identity_folder(tmp_path_factory.mktemp("messy"), N_PEOPLE, PER_PERSON, size=32, seed=0)
    face = Image.open(root / "person_00" / "000.png").convert("RGB")
    (root / "person_00" / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    face.convert("L").save(root / "person_01" / "grey.pgm")
    face.save(root / "person_02" / "anim.gif")
    (root / "person_03" / "session" / "deeper").mkdir(parents=True)
    face.save(root / "person_03" / "session" / "deeper" / "nested.png")
    (root / "solo").mkdir()
    face.save(root / "solo" / "only.png")
    (root / "empty_person").mkdir()
    face.save(root / "stray.png")
    (root / ".cache").mkdir()
    face.save(root / ".cache" / "hidden.png")
    return root


def test_scan_counts_and_classes(messy):
    ds = IdentityFolder(messy)
    assert ds.classes == [f"person_{i:02d}" for i in range(N_PEOPLE)] + ["solo"]
    counts = dict(zip(ds.classes, ds.counts()))
    assert counts["person_00"] == PER_PERSON + 1  # the corrupt file is only found out on load
    assert counts["person_01"] == counts["person_02"] == counts["person_03"] == PER_PERSON + 1
    assert counts["person_04"] == PER_PERSON and counts["solo"] == 1
    assert len(ds) == N_PEOPLE * PER_PERSON + 5
    assert all(ds.classes[lab] == path.relative_to(messy).parts[0] for path, lab in ds.samples)


def test_every_sample_loads_and_bad_file_is_replaced_by_same_person(messy):
    ds = IdentityFolder(messy)
    for i in range(len(ds)):
        img, label = ds[i]
        assert img.mode == "RGB" and label == ds.samples[i][1]
    assert ds.bad_files == 1 and ds.bad_paths[0].endswith("zz_corrupt.jpg")
    bad = next(i for i, (p, _) in enumerate(ds.samples) if p.name == "zz_corrupt.jpg")
    img, label = ds[bad]
    first_of_person = next(p for p, lab in ds.samples if lab == label)
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(first_of_person).convert("RGB")))
    assert ds.bad_files == 1  # counted once, however often it is hit


def test_image_dataset_applies_transform_and_shares_the_bad_log(messy):
    ds = IdentityFolder(messy)
    sub = ImageDataset(ds.samples, transform=lambda im: np.asarray(im).shape, bad=ds.bad)
    shapes = {sub[i][0] for i in range(len(sub))}
    assert shapes == {(32, 32, 3)}
    assert ds.bad_files == 1 == sub.bad_files
    plain = ImageDataset(ds.samples[:3])
    assert isinstance(plain[0][0], Image.Image) and plain.bad_files == 0


def test_all_images_of_a_person_bad_is_a_data_error(tmp_path):
    root = make_identity_folder(tmp_path, 2, 2, size=32)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"junk")
    ds = IdentityFolder(root)
    broken = next(i for i, (path, _) in enumerate(ds.samples) if path.parent.name == "broken")
    with pytest.raises(DataError, match="unreadable"):
        ds[broken]


def test_from_roots_prefixes_and_keeps_people_apart(tmp_path):
    a = make_identity_folder(tmp_path / "train" / "faces", 2, 2, size=32, seed=0)
    b = make_identity_folder(tmp_path / "dev" / "faces", 2, 3, size=32, seed=1)
    c = make_identity_folder(tmp_path / "other", 2, 2, size=32, seed=2)
    ds = IdentityFolder.from_roots([a, b, c])
    assert ds.classes == ["train/faces/person_00", "train/faces/person_01",
                          "dev/faces/person_00", "dev/faces/person_01",
                          "other/person_00", "other/person_01"]
    assert list(ds.counts()) == [2, 2, 3, 3, 2, 2]
    assert all(ds.classes[lab].endswith(p.parent.name) for p, lab in ds.samples)
    twice = IdentityFolder.from_roots([a, a])
    assert len(twice.classes) == 4 and twice.classes[2] == "faces#2/person_00"


@pytest.mark.parametrize("case", ["missing", "empty", "empty_people", "only_stray", "one_person"])
def test_folder_errors(tmp_path, case):
    root = tmp_path / "data"
    if case != "missing":
        root.mkdir()
    if case == "only_stray":
        Image.new("RGB", (8, 8)).save(root / "a.png")
    if case == "empty_people":
        (root / "nobody").mkdir()
        (root / "nobody" / "notes.txt").write_text("not an image")
    if case == "one_person":
        make_identity_folder(root, 1, 3, size=32)
    with pytest.raises(DataError) as err:
        IdentityFolder(root)
    assert err.value.hint
    expected = {"missing": "not found", "empty": "no images", "empty_people": "no images",
                "only_stray": "no person folders", "one_person": "at least 2"}
    assert expected[case] in err.value.message


def test_require_pairs(tmp_path):
    make_identity_folder(tmp_path, 3, 1, size=32)
    assert len(IdentityFolder(tmp_path)) == 3
    with pytest.raises(DataError, match="two or more"):
        IdentityFolder(tmp_path, require_pairs=True)
    with pytest.raises(DataError):
        PKSampler(IdentityFolder(tmp_path).labels)


# ----------------------------------------------------------------- splits


def _labels(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sizes", [[5] * 10, [1, 1, 1, 4, 2, 3, 1, 2], [2, 2, 2], [9, 1, 1, 1, 1, 1]])
def test_split_is_by_identity(sizes, seed):
    labels = _labels(sizes)
    train, val = split_by_identity(labels, 0.2, seed)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert not set(labels[train]) & set(labels[val])
    n_multi = sum(s >= 2 for s in sizes)
    val_multi = sum(sizes[p] >= 2 for p in set(labels[val]))
    if n_multi >= 3:  # possible to hold out two pairable people and still train on one
        assert val_multi >= 2
    assert any(sizes[p] >= 2 for p in set(labels[train])) or n_multi == 0


def test_split_deterministic_and_fraction(messy):
    ds = IdentityFolder(messy)
    a, b = split_by_identity(ds, 0.5, seed=3), split_by_identity(ds, 0.5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    train, val = split_by_identity(_labels([3] * 20), 0.25, seed=0)
    assert len(set(_labels([3] * 20)[val])) == 5
    train, val = split_by_identity(ds, 0.0)
    assert len(val) == 0 and len(train) == len(ds)
    with pytest.raises(DataError):
        split_by_identity(ds, 1.0)


# ----------------------------------------------------------------- PK batches


@pytest.mark.parametrize("p,k", [(4, 4), (3, 2), (5, 3)])
def test_pk_batches_have_p_people_times_k(p, k):
    labels = _labels([7, 2, 4, 1, 9, 3, 5, 6])
    sampler = PKSampler(labels, p=p, k=k, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(labels) // (p * k)
    for batch in batches:
        per_person = Counter(labels[batch].tolist())
        assert len(per_person) == p and set(per_person.values()) == {k}
        for person in per_person:  # no repeats unless the person has fewer than k images
            idx = [i for i in batch if labels[i] == person]
            assert len(set(idx)) == min(k, int((labels == person).sum()))


def test_pk_sampler_seeded_and_epochs_differ():
    labels = _labels([6] * 10)
    a, b = PKSampler(labels, 4, 3, seed=1), PKSampler(labels, 4, 3, seed=1)
    first = list(a)
    assert first == list(b)
    assert first != list(a)  # the next epoch continues the stream
    few = PKSampler(_labels([3, 3]), p=8, k=2)
    assert all(len(set(_labels([3, 3])[b])) == 2 for b in few) and len(few) == 1


# ----------------------------------------------------------------- pairs


@pytest.mark.parametrize("sizes", [[3, 1, 4, 1, 5], [2, 2], [1, 1, 1], [10, 7, 1, 3, 2, 2, 8]])
def test_make_pairs_matches_brute_force(sizes):
    rng = np.random.default_rng(0)
    labels = rng.permutation(_labels(sizes))
    i, j, same = make_pairs(labels, seed=0, max_impostors=10**9)
    got = set(zip(i.tolist(), j.tolist()))
    brute = {(a, b) for a, b in itertools.combinations(range(len(labels)), 2)}
    assert got == brute and len(i) == len(brute)  # everything, each once, i < j
    assert np.array_equal(same, labels[i] == labels[j])
    assert same.sum() == sum(comb(n, 2) for n in sizes)
    assert same[: same.sum()].all()  # genuine pairs first


def test_make_pairs_samples_impostors_and_caps_genuine():
    labels = _labels([4, 6, 3, 5, 2, 8])
    total_imp = comb(len(labels), 2) - sum(comb(n, 2) for n in [4, 6, 3, 5, 2, 8])
    i, j, same = make_pairs(labels, seed=5, max_impostors=40)
    assert same.sum() == sum(comb(n, 2) for n in [4, 6, 3, 5, 2, 8]) and (~same).sum() == 40 < total_imp
    imp = list(zip(i[~same].tolist(), j[~same].tolist()))
    assert len(set(imp)) == 40 and all(labels[a] != labels[b] and a < b for a, b in imp)
    again = make_pairs(labels, seed=5, max_impostors=40)
    assert all(np.array_equal(x, y) for x, y in zip((i, j, same), again))
    assert not np.array_equal(make_pairs(labels, seed=6, max_impostors=40)[0], i)
    i2, j2, same2 = make_pairs(labels, n_pairs=7, seed=0, max_impostors=0)
    assert len(i2) == 7 and same2.all() and (labels[i2] == labels[j2]).all()


def test_make_pairs_large_is_fast_enough_and_exact():
    labels = np.random.default_rng(0).integers(0, 3000, 20_000)
    i, j, same = make_pairs(labels, seed=0, max_impostors=20_000)
    counts = np.bincount(labels)
    assert same.sum() == int((counts * (counts - 1) // 2).sum())
    assert (~same).sum() == 20_000 and (labels[i] == labels[j]).tolist() == same.tolist()


def test_pair_dataset_balanced_and_singletons_only_negative(messy):
    ds = IdentityFolder(messy)
    labels = ds.labels
    pairs = PairDataset(ds, n_pairs=301, seed=0)
    y = pairs.pairs[:, 2]
    assert len(pairs) == 301 and y.sum() == 151
    i, j = pairs.pairs[:, 0], pairs.pairs[:, 1]
    assert np.array_equal(labels[i] == labels[j], y == 1)
    assert (i[y == 1] != j[y == 1]).all()
    solo = ds.classes.index("solo")
    assert not (labels[i[y == 1]] == solo).any()
    assert (labels[np.concatenate([i, j])] == solo).any()  # the singleton does appear as an impostor
    a, b, same = pairs[0]
    assert isinstance(a, Image.Image) and isinstance(b, Image.Image) and same in (0, 1)
    assert np.array_equal(PairDataset(ds, 301, seed=0).pairs, pairs.pairs)


def test_pair_dataset_unbalanced_labels_are_true():
    labels = _labels([3, 3, 1, 5])
    pairs = PairDataset(labels, n_pairs=200, seed=1, balanced=False)
    i, j, y = pairs.pairs.T
    assert (i != j).all() and np.array_equal(y == 1, labels[i] == labels[j])


# ----------------------------------------------------------------- augmentation


def test_augment_seeded_varied_and_keeps_size(messy):
    face = Image.open(messy / "person_00" / "001.png").convert("RGB")
    a, b = make_augment(32, seed=1), make_augment(32, seed=1)
    outs = [np.asarray(a(face)) for _ in range(30)]
    assert all(np.array_equal(o, np.asarray(b(face))) for o in outs)
    assert all(o.shape == (32, 32, 3) for o in outs)
    assert len({o.tobytes() for o in outs}) == 30
    grey = sum(bool((o[..., 0] == o[..., 1]).all() and (o[..., 1] == o[..., 2]).all()) for o in outs)
    assert 1 <= grey <= 15  # p = 0.2


def test_augment_handles_greyscale_odd_aspect_and_big_images():
    aug = make_augment(64, seed=0)
    out = aug(Image.new("L", (92, 112), 128))
    assert out.mode == "RGB" and out.size == (92, 112)  # aspect kept: preprocessing resizes later
    assert min(aug(Image.new("RGB", (1000, 800))).size) == 128


# ----------------------------------------------------------------- real data (skipped without ../shared/data)


@pytest.mark.shared
def test_real_orl_folder():
    orl = SHARED / "dev" / "orl_att_faces"
    if not orl.is_dir():
        pytest.skip("../shared/data is not here")
    ds = IdentityFolder(orl)
    assert len(ds.classes) == 40 and len(ds) == 400
    img, _ = ds[0]  # PGM greyscale comes back as RGB
    assert img.mode == "RGB" and img.size == (92, 112)
    i, j, same = make_pairs(ds.labels, seed=0, max_impostors=1000)
    assert same.sum() == 40 * comb(10, 2) and (~same).sum() == 1000
    train, val = split_by_identity(ds, 0.2, seed=0)
    assert len(set(ds.labels[val])) == 8 and not set(ds.labels[train]) & set(ds.labels[val])
