"""Distances, miners and losses vs brute-force loops over explicit pairs and triplets."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from facesearch.learn.distances import CosineDistance, LpDistance
from facesearch.core.errors import FacesearchError
from facesearch.learn.losses import (
    AvgNonZeroReducer,
    ContrastiveLoss,
    DistanceBCELoss,
    MeanReducer,
    RelationalDistanceLoss,
    SumReducer,
    TeacherMatchLoss,
    TripletMarginLoss,
    make_loss,
)
from facesearch.learn.miners import (
    AllPairsMiner,
    AllTripletsMiner,
    BalancedPairMiner,
    BatchHardMiner,
    SemiHardMiner,
)

TOL = 1e-5


def batch(n_ids=4, per_id=3, dim=8, seed=0, dtype=torch.float64):
    """Random unit embeddings for n_ids identities x per_id images, shuffled."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(n_ids * per_id, dim, generator=g, dtype=dtype), dim=1)
    labels = torch.arange(n_ids).repeat_interleave(per_id)
    perm = torch.randperm(len(labels), generator=g)
    return emb[perm], labels[perm]


def l2(x, y):
    return math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(x, y)))


def cos_d(x, y):
    dot = sum(float(a) * float(b) for a, b in zip(x, y))
    return 1.0 - dot / (math.sqrt(sum(float(a) ** 2 for a in x)) * math.sqrt(sum(float(b) ** 2 for b in y)))


def brute_pairs(labels):
    """Unordered pairs (i < j) as lists of (i, j, y)."""
    n = len(labels)
    return [(i, j, int(labels[i] == labels[j])) for i in range(n) for j in range(i + 1, n)]


def brute_triplets(labels):
    n = len(labels)
    return [(a, p, q) for a in range(n) for p in range(n) for q in range(n)
            if a != p and labels[a] == labels[p] and labels[q] != labels[a]]


def contrastive_term(d, y, m):
    return y * d * d + (1 - y) * max(0.0, m - d) ** 2


def reduce_mean_nonzero(terms):
    nz = [t for t in terms if t > 0]
    return sum(nz) / len(nz) if nz else 0.0


# ------------------------------------------------------------------- distances


@pytest.mark.parametrize("dist,oracle", [(LpDistance(), l2), (CosineDistance(), cos_d)])
def test_distances_match_loops(dist, oracle):
    x, _ = batch(dim=5, seed=1)
    y, _ = batch(n_ids=2, per_id=3, dim=5, seed=2)
    m = dist.pairwise(x, y)
    assert m.shape == (len(x), len(y))
    for i, j in itertools.product(range(len(x)), range(len(y))):
        assert abs(m[i, j].item() - oracle(x[i], y[j])) < TOL
    self_m = dist.pairwise(x)
    for i, j in itertools.product(range(len(x)), repeat=2):
        assert abs(self_m[i, j].item() - oracle(x[i], x[j])) < TOL
    p = dist.paired(x[:6], y)
    assert all(abs(p[i].item() - oracle(x[i], y[i])) < TOL for i in range(6))


def test_l2_gradient_finite_at_zero():
    x = torch.randn(4, 6, requires_grad=True)
    LpDistance().paired(x, x.detach().clone()).sum().backward()
    assert torch.isfinite(x.grad).all()
    z = torch.randn(3, 6, requires_grad=True)
    d = LpDistance().pairwise(torch.cat([z, z]))  # duplicates: exact zeros off the diagonal
    d.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert LpDistance().paired(x, x).abs().max().item() == 0.0


# ---------------------------------------------------------------------- miners


def test_all_pairs_miner_matches_exhaustive():
    _, labels = batch()
    a1, p, a2, n = AllPairsMiner()(torch.zeros(len(labels), 2), labels)
    got_pos = set(zip(a1.tolist(), p.tolist()))
    got_neg = set(zip(a2.tolist(), n.tolist()))
    pairs = brute_pairs(labels.tolist())
    assert got_pos == {(i, j) for i, j, y in pairs if y} and len(got_pos) == len(a1)
    assert got_neg == {(i, j) for i, j, y in pairs if not y} and len(got_neg) == len(a2)


def test_all_triplets_miner_matches_exhaustive():
    _, labels = batch(n_ids=3, per_id=3)
    a, p, n = AllTripletsMiner()(torch.zeros(len(labels), 2), labels)
    got = list(zip(a.tolist(), p.tolist(), n.tolist()))
    assert sorted(got) == sorted(brute_triplets(labels.tolist()))


def test_batch_hard_miner_matches_exhaustive():
    emb, labels = batch(n_ids=4, per_id=3, seed=3)
    labels[0] = 99  # an anchor with no positive: must be skipped
    a, p, n = BatchHardMiner()(emb, labels)
    L = labels.tolist()
    expected = {}
    for i in range(len(L)):
        pos = [j for j in range(len(L)) if j != i and L[j] == L[i]]
        neg = [j for j in range(len(L)) if L[j] != L[i]]
        if pos and neg:
            expected[i] = (max(pos, key=lambda j: l2(emb[i], emb[j])), min(neg, key=lambda j: l2(emb[i], emb[j])))
    assert {ai: (pi, ni) for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist())} == expected
    assert 0 not in a.tolist()


@pytest.mark.parametrize("fallback", ["skip", "hard"])
def test_semihard_miner_matches_exhaustive(fallback):
    emb, labels = batch(n_ids=4, per_id=4, dim=4, seed=4)
    margin = 0.3
    a, p, n = SemiHardMiner(margin, fallback=fallback)(emb, labels)
    got = sorted(zip(a.tolist(), p.tolist(), n.tolist()))
    L = labels.tolist()
    expected = []
    for ai, pi in ((i, j) for i in range(len(L)) for j in range(len(L)) if i != j and L[i] == L[j]):
        dap = l2(emb[ai], emb[pi])
        negs = [q for q in range(len(L)) if L[q] != L[ai]]
        semi = [q for q in negs if dap < l2(emb[ai], emb[q]) < dap + margin]
        expected += [(ai, pi, q) for q in semi]
        hard = [q for q in negs if l2(emb[ai], emb[q]) <= dap]
        if fallback == "hard" and not semi and hard:
            expected.append((ai, pi, max(hard, key=lambda q: l2(emb[ai], emb[q]))))
    assert got == sorted(expected)
    assert len(expected) > 0


@pytest.mark.parametrize("negatives", ["hard", "random"])
def test_balanced_pair_miner(negatives):
    emb, labels = batch(n_ids=4, per_id=3, seed=5)
    a1, p, a2, n = BalancedPairMiner(seed=0, negatives=negatives)(emb, labels)
    pairs = brute_pairs(labels.tolist())
    positives = {(i, j) for i, j, y in pairs if y}
    assert set(zip(a1.tolist(), p.tolist())) == positives
    assert len(a2) == len(positives)
    chosen = list(zip(a2.tolist(), n.tolist()))
    assert len(set(chosen)) == len(chosen) and all(labels[i] != labels[j] for i, j in chosen)
    if negatives == "hard":
        all_neg = sorted(l2(emb[i], emb[j]) for i, j, y in pairs if not y)
        got = sorted(l2(emb[i], emb[j]) for i, j in chosen)
        assert all(abs(x - y) < TOL for x, y in zip(got, all_neg[: len(got)]))
    else:  # reproducible for a seed
        again = BalancedPairMiner(seed=0, negatives="random")(emb, labels)
        assert torch.equal(again[2], a2) and torch.equal(again[3], n)


# ---------------------------------------------------------------------- losses


def test_contrastive_matches_loop_all_pairs_and_explicit_pairs():
    emb, labels = batch(seed=6)
    m = 1.0
    terms = [contrastive_term(l2(emb[i], emb[j]), y, m) for i, j, y in brute_pairs(labels.tolist())]
    assert abs(ContrastiveLoss(m)(emb, labels).item() - sum(terms) / len(terms)) < TOL
    e1, e2 = emb[:6], emb[6:]
    y = torch.tensor([1, 0, 1, 0, 0, 1])
    want = sum(contrastive_term(l2(e1[i], e2[i]), int(y[i]), m) for i in range(6)) / 6
    assert abs(ContrastiveLoss(m).forward_pairs(e1, e2, y).item() - want) < TOL


def test_contrastive_y_convention():
    e = F.normalize(torch.randn(5, 8), dim=1)
    loss = ContrastiveLoss(margin=1.0)
    assert loss.forward_pairs(e, e.clone(), torch.ones(5)).item() == 0.0  # same person, same point
    far = -e  # distance 2 >= margin
    assert loss.forward_pairs(e, far, torch.zeros(5)).item() == 0.0  # different people, far apart
    assert loss.forward_pairs(e, e.clone(), torch.zeros(5)).item() == pytest.approx(1.0)  # m^2
    assert loss.forward_pairs(e, far, torch.ones(5)).item() == pytest.approx(4.0, abs=1e-5)  # d^2


def test_contrastive_gradient_finite_at_zero():
    e = torch.randn(4, 8, requires_grad=True)
    loss = ContrastiveLoss().forward_pairs(e, e.detach().clone(), torch.tensor([1, 0, 1, 0]))
    loss.backward()
    assert torch.isfinite(e.grad).all()
    z = torch.randn(3, 8, requires_grad=True)
    ContrastiveLoss()(torch.cat([z, z]), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert torch.isfinite(z.grad).all()


def test_triplet_matches_loop_all_triplets_and_mined():
    emb, labels = batch(n_ids=3, per_id=3, seed=7)
    m = 0.2
    trips = brute_triplets(labels.tolist())
    terms = [max(0.0, l2(emb[a], emb[p]) - l2(emb[a], emb[n]) + m) for a, p, n in trips]
    assert abs(TripletMarginLoss(m)(emb, labels).item() - reduce_mean_nonzero(terms)) < TOL
    mean_loss = TripletMarginLoss(m, reducer=MeanReducer())(emb, labels)
    assert abs(mean_loss.item() - sum(terms) / len(terms)) < TOL
    # With batch-hard mining: one triplet per anchor, loss is the same formula on those.
    miner = BatchHardMiner()
    a, p, n = miner(emb, labels)
    want = [max(0.0, l2(emb[i], emb[j]) - l2(emb[i], emb[k]) + m) for i, j, k in zip(a, p, n)]
    got = TripletMarginLoss(m, reducer=SumReducer())(emb, labels, (a, p, n))
    assert abs(got.item() - sum(want)) < TOL
    assert TripletMarginLoss(m, reducer=SumReducer(), miner=miner)(emb, labels).item() == pytest.approx(got.item())
    explicit = TripletMarginLoss(m, reducer=SumReducer()).forward_triplets(emb[a], emb[p], emb[n])
    assert abs(explicit.item() - sum(want)) < TOL


def test_triplet_rejects_pair_indices_and_pairs():
    emb, labels = batch()
    with pytest.raises(ValueError, match="triplet"):
        TripletMarginLoss()(emb, labels, AllPairsMiner()(emb, labels))
    with pytest.raises(TypeError):
        TripletMarginLoss().forward_pairs(emb, emb, torch.ones(len(emb)))


def test_bce_matches_loop_and_learns_w_b():
    emb, labels = batch(seed=8)
    loss = DistanceBCELoss(init_w=-4.0, init_b=3.0).double()
    terms = []
    for i, j, y in brute_pairs(labels.tolist()):
        p = 1.0 / (1.0 + math.exp(-(-4.0 * l2(emb[i], emb[j]) + 3.0)))
        terms.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    out = loss(emb, labels)
    assert abs(out.item() - sum(terms) / len(terms)) < TOL
    out.backward()
    assert loss.w.grad is not None and loss.b.grad is not None
    assert loss.w.grad.item() != 0.0 and loss.b.grad.item() != 0.0
    assert loss.probability(torch.tensor(0.75)).item() == pytest.approx(0.5)
    assert loss.threshold() == pytest.approx(0.75)
    assert {n for n, _ in loss.named_parameters()} == {"w", "b"}


def test_contrastive_with_triplet_indices_reads_pairs():
    emb, labels = batch(seed=9)
    a, p, n = BatchHardMiner()(emb, labels)
    got = ContrastiveLoss(0.8, reducer=SumReducer())(emb, labels, (a, p, n))
    want = sum(contrastive_term(l2(emb[i], emb[j]), 1, 0.8) + contrastive_term(l2(emb[i], emb[k]), 0, 0.8)
               for i, j, k in zip(a, p, n))
    assert abs(got.item() - want) < TOL


def test_swapping_distance_and_reducer():
    emb, labels = batch(seed=10)
    emb = emb * 3.0  # cosine distance must ignore scale
    pairs = brute_pairs(labels.tolist())
    terms = [contrastive_term(cos_d(emb[i], emb[j]), y, 0.5) for i, j, y in pairs]
    loss = ContrastiveLoss(0.5, distance=CosineDistance(), reducer=SumReducer())
    assert abs(loss(emb, labels).item() - sum(terms)) < TOL
    loss = ContrastiveLoss(0.5, distance=CosineDistance(), reducer=AvgNonZeroReducer())
    assert abs(loss(emb, labels).item() - reduce_mean_nonzero(terms)) < TOL


def test_reducers_on_empty_keep_graph():
    e = torch.randn(4, 3, requires_grad=True)
    empty = (torch.empty(0, dtype=torch.long),) * 3
    out = TripletMarginLoss()(e, torch.tensor([0, 0, 1, 1]), empty)
    assert out.item() == 0.0
    out.backward()  # no error, zero gradient
    assert torch.equal(e.grad, torch.zeros_like(e))


def test_make_loss_defaults_and_errors():
    loss, miner = make_loss("contrastive")
    assert isinstance(loss, ContrastiveLoss) and loss.margin == 1.0 and isinstance(miner, AllPairsMiner)
    loss, miner = make_loss("triplet")
    assert isinstance(loss, TripletMarginLoss) and loss.margin == 0.2 and isinstance(miner, BatchHardMiner)
    loss, miner = make_loss("bce")
    assert isinstance(loss, DistanceBCELoss) and isinstance(miner, BalancedPairMiner)
    loss, miner = make_loss("triplet", margin=0.3, miner="semihard")
    assert isinstance(miner, SemiHardMiner) and miner.margin == 0.3 and loss.miner is miner
    emb, labels = batch()
    assert torch.isfinite(loss(emb, labels))
    with pytest.raises(FacesearchError):
        make_loss("arcface")
    with pytest.raises(FacesearchError):
        make_loss("triplet", miner="all_pairs")
    with pytest.raises(FacesearchError):
        make_loss("contrastive", miner="nope")


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        ContrastiveLoss()(torch.randn(4, 3), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError):
        ContrastiveLoss().forward_pairs(torch.randn(4, 3), torch.randn(4, 2), torch.ones(4))


# ------------------------------------------------------------ distillation losses


def test_teacher_match_matches_loop():
    s, _ = batch(seed=3)
    t = torch.randn_like(s) * 3  # the teacher need not be unit length
    want = sum(cos_d(s[i], t[i]) for i in range(len(s))) / len(s)
    assert abs(float(TeacherMatchLoss()(s, t)) - want) < TOL
    assert float(TeacherMatchLoss()(t, t)) < TOL


def test_relational_matches_loop_and_only_student_gets_gradient():
    s, _ = batch(seed=4)
    t, _ = batch(seed=5)
    s.requires_grad_(True)
    t.requires_grad_(True)
    n, sd, td = len(s), s.detach(), t.detach()
    terms = [(l2(sd[i], sd[j]) - l2(td[i], td[j])) ** 2 for i in range(n) for j in range(i + 1, n)]
    loss = RelationalDistanceLoss()(s, t)
    assert abs(float(loss.detach()) - sum(terms) / len(terms)) < TOL
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    assert float(RelationalDistanceLoss()(t.detach(), t.detach())) < TOL


def test_distillation_losses_reject_mismatched_shapes():
    s, _ = batch()
    with pytest.raises(ValueError):
        TeacherMatchLoss()(s, s[:-1])
    with pytest.raises(ValueError):
        RelationalDistanceLoss()(s, s[:, :4])
