"""Tail fine-tuning with teacher terms (facesearch.learn.distill), on synthetic chips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facesearch.models.factory import create_embedder
from facesearch.models.preprocess import preprocess
from facesearch.learn.distill import (
    BatchSampler,
    DistillOptions,
    FeatureBank,
    TailNet,
    build_bank,
    relational_target,
    distill,
    embed_bank,
    flip_ensemble,
    mirrored_teacher,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_embedder("dlib_resnet29", embedding_dim=128, input_size=150, head="none").eval()


def chips(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 150, 150, 3), dtype=np.uint8)


def test_tail_of_prefix_is_the_whole_model(model):
    x = preprocess(list(chips()), model.config)
    for cut in (0, 10, 13):
        tail = TailNet(model, cut)
        with torch.no_grad():
            torch.testing.assert_close(tail(tail.prefix(x)), model(x), atol=1e-5, rtol=1e-5)


def test_tail_rejects_bad_cut_and_trunks_without_blocks(model):
    with pytest.raises(ValueError, match="cut"):
        TailNet(model, 14)
    other = create_embedder("resnet18", embedding_dim=16, input_size=64)
    with pytest.raises(ValueError, match="no stem"):
        TailNet(other, 1)


def test_bank_view0_is_the_model_and_views_differ(model):
    c = chips(4)
    tail = TailNet(model, 12)
    bank = build_bank(tail, c, views=2, seed=1, batch=3)
    assert bank.feats.shape[:2] == (2, 4) and bank.feats.dtype == torch.float16
    with torch.no_grad():
        want = model(preprocess(list(c), model.config))
    # The teacher is the raw descriptor of the stored float16 features: the model's output up to fp16 rounding.
    torch.testing.assert_close(torch.nn.functional.normalize(bank.teacher[0], dim=1), want, atol=2e-3, rtol=0)
    assert not torch.allclose(bank.teacher[0].norm(dim=1), torch.ones(4))
    assert not torch.allclose(bank.teacher[0], bank.teacher[1])
    # Augmented views are seeded: the same bank twice.
    again = build_bank(tail, c, views=2, seed=1, batch=4)
    torch.testing.assert_close(again.teacher, bank.teacher)


def test_sampler_puts_pk_labelled_first_then_unlabelled():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 1 + [-1] * 10)
    opts = DistillOptions(p=2, k=4, unlabelled=3, seed=0)
    rows, views, n_lab = BatchSampler(labels, views=3, opts=opts)()
    assert n_lab == 8 and len(rows) == 11
    lab = labels[rows[:n_lab]]
    assert set(lab) <= {0, 1} and sorted(np.unique(lab, return_counts=True)[1]) == [4, 4]  # person 2 has no pair
    assert (labels[rows[n_lab:]] == -1).all()
    assert ((views >= 0) & (views < 3)).all()


def test_distill_trains_only_the_tail_and_fits_identities(model):
    """Two synthetic people: the identity term must separate them; the prefix stays frozen."""
    torch.manual_seed(0)
    tail = TailNet(model, 12)
    stem_before = model.trunk.conv1.weight.detach().clone()
    fc_before = model.trunk.fc.weight.detach().clone()
    feats = torch.randn(1, 40, 256, 4, 4).half()
    with torch.no_grad():
        teacher = tail(feats[0].float())[None]
    labels = np.repeat(np.arange(8), 5)
    labels[30:] = -1  # unlabelled rows get only the teacher terms

    def separation(t):
        e = embed_bank(t, feats[0])
        d = np.linalg.norm(e[:30, None] - e[None, :30], axis=2)
        same = labels[:30, None] == labels[None, :30]
        return {"gap": float(d[~same].mean() - d[same & ~np.eye(30, dtype=bool)].mean())}

    before = separation(tail)["gap"]
    opts = DistillOptions(steps=30, lr=1e-3, p=6, k=4, unlabelled=5, w_teacher=0.1, w_relational=0.1, eval_every=15)
    history = distill(tail, FeatureBank(feats, teacher), labels, opts, evaluate=separation)
    assert [h["step"] for h in history] == [15, 30]
    assert history[-1]["gap"] > before + 0.05
    assert torch.equal(model.trunk.conv1.weight, stem_before)
    assert not torch.equal(model.trunk.fc.weight, fc_before)


def test_teacher_terms_alone_keep_the_model(model):
    """With the teacher = the model itself, no identity term: nothing to learn, outputs stay put."""
    tail = TailNet(model, 13)
    feats = torch.randn(1, 24, 256, 4, 4).half()
    with torch.no_grad():
        teacher = tail(feats[0].float())[None]
    opts = DistillOptions(steps=5, lr=1e-4, p=4, k=2, unlabelled=0, w_identity=0.0, eval_every=5)
    distill(tail, FeatureBank(feats, teacher), np.repeat(np.arange(12), 2), opts)
    after = torch.from_numpy(embed_bank(tail, feats[0]))
    assert (1 - torch.nn.functional.cosine_similarity(after, teacher[0])).max() < 1e-3


def test_sampler_id_power_leans_towards_people_with_many_photos():
    labels = np.array([0] * 100 + [1] * 2 + [2] * 2 + [3] * 2)
    for power, lo, hi in ((0.0, 0.18, 0.32), (1.0, 0.9, 1.0)):  # 1/4 vs 100/106
        sample = BatchSampler(labels, views=1, opts=DistillOptions(p=1, k=2, unlabelled=0, id_power=power))
        share = np.mean([labels[sample()[0][0]] == 0 for _ in range(400)])
        assert lo <= share <= hi + 1e-9, (power, share)


def test_relational_target_unit_and_raw():
    teacher = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])  # views x N x D, norms 5 and 1
    bank = FeatureBank(torch.zeros(1, 2, 1, 1, 1), teacher)
    torch.testing.assert_close(relational_target(bank, "unit")(teacher[0]), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    torch.testing.assert_close(relational_target(bank, "raw")(teacher[0]), teacher[0] / 3.0)  # mean norm 3
    with pytest.raises(ValueError):
        relational_target(bank, "cosine")


def test_mirrored_teacher_and_flip_ensemble(model):
    c = chips(3, seed=4)
    tail = TailNet(model, 11)
    mirrored = mirrored_teacher(tail, c, batch=2)
    with torch.no_grad():
        want = model(preprocess([x[:, ::-1] for x in c], model.config))
    torch.testing.assert_close(torch.nn.functional.normalize(mirrored, dim=1), want, atol=2e-3, rtol=0)
    teacher = torch.randn(2, 3, 128)
    target = flip_ensemble(teacher, mirrored)
    assert target.shape == teacher.shape
    for v in range(2):  # every view of a face gets the same target: mean of plain view 0 and mirror
        torch.testing.assert_close(target[v], (teacher[0] + mirrored) / 2)
