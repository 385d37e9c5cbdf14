"""Training: a few epochs on synthetic identities must separate people better than the untrained net; resume works."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from PIL import Image

from facesearch.core.errors import DataError
from facesearch.eval.metrics import roc_auc
from facesearch.models import create_embedder, load_weights
from facesearch.models.preprocess import preprocess_one
from facesearch.photos.synthetic import make_identities, make_identity_folder, render_face
from facesearch.photos.folders import IdentityFolder, split_by_identity
from facesearch.eval.pairs import make_pairs
from facesearch.learn.trainer import TrainOptions, train


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    return make_identity_folder(tmp_path_factory.mktemp("syn") / "people", n_people=16, per_person=12, size=48, seed=4)


def opts(people, out, **kw):
    base = dict(data=[str(people)], out=str(out), backbone="resnet10t", input_size=32, embedding_dim=32,
                epochs=3, batch_size=16, lr=2e-3, val_fraction=0.3, seed=0, loss="triplet", device="cpu")
    base.update(kw)
    return TrainOptions(**base)


def pair_distances(model, ds: IdentityFolder, idx: np.ndarray, seed: int = 0):
    """L2 distances of every genuine and a seeded sample of impostor pairs among ``ds[idx]`` (no augmentation)."""
    model.eval()
    with torch.inference_mode():
        x = torch.stack([preprocess_one(Image.open(ds.samples[k][0]), model.config) for k in idx])
        emb = model(x).numpy()
    labels = np.array([ds.samples[k][1] for k in idx])
    i, j, same = make_pairs(labels, seed=seed, max_impostors=20_000)
    return np.linalg.norm(emb[i] - emb[j], axis=1), same


def paired_auc_gain(d_before, d_after, same, rounds: int = 300, seed: int = 0) -> tuple[float, float]:
    """AUC(after) - AUC(before) on the same pairs, and its 1st percentile over a paired bootstrap of pairs."""
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(rounds):
        k = rng.integers(0, len(same), len(same))
        gains.append(roc_auc(d_after[k], same[k]) - roc_auc(d_before[k], same[k]))
    return roc_auc(d_after, same) - roc_auc(d_before, same), float(np.percentile(gains, 1))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["triplet", "contrastive", "bce"])
def test_training_learns_to_separate_people(people, tmp_path, loss):
    # What must hold whatever the float path: the people it was trained on separate better than
    # after the same run with lr=0 (same data, seeds and steps, so BatchNorm statistics adapt
    # alike and only learning differs), by more than the pair sampling noise (a paired bootstrap
    # on the same pairs). A flipped label convention, a loss with no gradient or a broken
    # optimiser step all fail this. How well it generalises to new people is a property of data
    # and scale, measured on real faces in bench/accuracy.py.
    o = opts(people, tmp_path / "w", loss=loss, epochs=4)
    ds = IdentityFolder(people)
    train_idx, _ = split_by_identity(ds, o.val_fraction, o.seed)
    train(opts(people, tmp_path / "control", loss=loss, epochs=4, lr=0.0))
    d_before, same = pair_distances(load_weights(tmp_path / "control.json"), ds, train_idx)
    summary = train(o)
    d_after, same_after = pair_distances(load_weights(tmp_path / "w.json"), ds, train_idx)
    assert (same == same_after).all()
    gain, low = paired_auc_gain(d_before, d_after, same)
    assert low > 0, (loss, gain, low)
    meta = json.loads((tmp_path / "w.json").read_text())
    assert meta["config"]["tau"] is not None and meta["config"]["recipe"]["loss"] == loss
    assert load_weights(tmp_path / "w.json").config.metrics["val_auc"] == pytest.approx(summary["best_val_auc"])


@pytest.mark.slow
def test_resume_continues_and_matches_unbroken_run(people, tmp_path):
    full = train(opts(people, tmp_path / "a", epochs=2))
    train(opts(people, tmp_path / "b", epochs=1))
    resumed = train(opts(people, tmp_path / "b", epochs=2, resume=True))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    np.testing.assert_allclose([h["loss"] for h in resumed["history"]], [h["loss"] for h in full["history"]],
                               rtol=1e-4)


def test_one_identity_is_a_data_error(tmp_path):
    root = make_identity_folder(tmp_path / "one", n_people=1, per_person=4, size=48)
    with pytest.raises(DataError):
        train(opts(root, tmp_path / "w", epochs=1))


@pytest.mark.slow
def test_training_with_detector_aligns_like_indexing(people, tmp_path):
    from facesearch.faces.detect import create_detector
    from facesearch.faces.chips import extract_faces
    from facesearch.learn.trainer import ChipAligner

    summary = train(opts(people, tmp_path / "w", epochs=1, detector="auto", input_size=32))
    assert summary["history"][0]["epoch"] == 1 and np.isfinite(summary["history"][0]["loss"])
    # The chip training sees is the one indexing would embed for the same photo.
    align = load_weights(tmp_path / "w.json").config.align
    photo = render_face(make_identities(1, seed=3)[0], np.random.default_rng(0), size=150)
    indexed = extract_faces(np.asarray(photo), create_detector("auto"), align)
    assert indexed, "the detector should find the drawn face"
    np.testing.assert_array_equal(np.asarray(ChipAligner("auto", align)(photo)), indexed[0].chip)
