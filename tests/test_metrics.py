"""Verification metrics vs hand-computed cases and brute-force oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facesearch.core.errors import DataError
from facesearch.report.roc import plot_roc
from facesearch.eval.metrics import (
    _stratified_folds,
    best_threshold,
    confusion_at,
    cv_threshold,
    eer,
    roc_auc,
    roc_curve,
    tar_at_far,
)
from facesearch.eval.protocol import verification_report

# Hand case: genuine at 0.1, 0.4; impostors at 0.3, 0.6.
HAND_D = np.array([0.1, 0.4, 0.3, 0.6])
HAND_S = np.array([True, True, False, False])


def random_pairs(n=300, seed=0, decimals=2):
    """Overlapping genuine/impostor distances, rounded so that there are many ties."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    dist = np.where(same, rng.normal(0.8, 0.25, n), rng.normal(1.2, 0.2, n))
    return np.round(dist, decimals), same


def auc_oracle(dist, same):
    g, i = dist[same], dist[~same]
    wins = sum((a < b) + 0.5 * (a == b) for a in g for b in i)
    return wins / (len(g) * len(i))


def rates_loop(dist, same, tau):
    """(far, tar) at tau by explicit loop."""
    acc_g = sum(1 for d, s in zip(dist, same) if s and d <= tau)
    acc_i = sum(1 for d, s in zip(dist, same) if not s and d <= tau)
    return acc_i / (len(same) - sum(same)), acc_g / sum(same)


def candidate_taus(dist):
    """Every distinct decision: accept nothing, or accept all pairs with d <= each unique value."""
    return [-np.inf] + sorted(set(dist.tolist()))


def score_loop(dist, same, tau, criterion):
    far, tar = rates_loop(dist, same, tau)
    if criterion == "balanced_accuracy":
        return (tar + 1 - far) / 2
    return sum((d <= tau) == s for d, s in zip(dist, same)) / len(dist)


# ------------------------------------------------------------------ hand cases


def test_hand_case():
    assert roc_auc(HAND_D, HAND_S) == pytest.approx(0.75)
    assert eer(HAND_D, HAND_S) == pytest.approx((0.5, 0.3))
    assert best_threshold(HAND_D, HAND_S) == pytest.approx(0.2)  # acc 3/4, first of two maxima
    assert tar_at_far(HAND_D, HAND_S, 0.0) == pytest.approx((0.5, 0.1))
    assert tar_at_far(HAND_D, HAND_S, 0.5) == pytest.approx((1.0, 0.4))
    c = confusion_at(HAND_D, HAND_S, 0.35)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (1, 1, 1, 1)
    for k in ("accuracy", "precision", "recall", "f1", "balanced_accuracy"):
        assert c[k] == pytest.approx(0.5)
    far, tar, th = roc_curve(HAND_D, HAND_S)
    np.testing.assert_allclose(far, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tar, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(th[1:], [0.1, 0.3, 0.4, 0.6])
    assert th[0] < 0.1


def test_tie_counts_half():
    d = np.array([0.2, 0.5, 0.5, 0.8])
    s = np.array([True, True, False, False])
    assert roc_auc(d, s) == pytest.approx(3.5 / 4)


def test_perfect_and_reversed():
    d = np.array([0.1, 0.2, 0.8, 0.9])
    s = np.array([True, True, False, False])
    assert roc_auc(d, s) == 1.0
    e, tau = eer(d, s)
    assert e == 0.0 and 0.2 <= tau < 0.8
    assert 0.2 < best_threshold(d, s) < 0.8
    assert confusion_at(d, s, best_threshold(d, s))["accuracy"] == 1.0
    assert roc_auc(d, ~s) == 0.0
    assert eer(d, ~s)[0] == 1.0


def test_precision_zero_when_nothing_accepted():
    c = confusion_at(HAND_D, HAND_S, -1.0)
    assert c["precision"] == 0.0 and c["f1"] == 0.0 and c["accuracy"] == 0.5


# ------------------------------------------------------------ brute-force oracles


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_vs_pairwise_oracle(seed):
    d, s = random_pairs(n=200, seed=seed, decimals=1)  # heavy ties
    assert roc_auc(d, s) == pytest.approx(auc_oracle(d, s), abs=1e-12)


def test_roc_points_vs_loop():
    d, s = random_pairs(n=120, seed=3)
    far, tar, th = roc_curve(d, s)
    assert far[0] == tar[0] == 0.0 and far[-1] == tar[-1] == 1.0
    assert np.all(np.diff(th) > 0) and np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    assert len(th) == len(np.unique(d)) + 1
    for f, t, tau in zip(far, tar, th):
        assert (f, t) == pytest.approx(rates_loop(d, s, tau))


@pytest.mark.parametrize("criterion", ["accuracy", "balanced_accuracy"])
@pytest.mark.parametrize("seed", [0, 4])
def test_best_threshold_vs_sweep(criterion, seed):
    d, s = random_pairs(n=150, seed=seed)
    best = max(score_loop(d, s, t, criterion) for t in candidate_taus(d))
    tau = best_threshold(d, s, criterion)
    assert score_loop(d, s, tau, criterion) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.2, 1.0])
def test_tar_at_far_vs_brute(target):
    d, s = random_pairs(n=250, seed=5)
    rates = [rates_loop(d, s, t) for t in candidate_taus(d)]
    want = max(t for f, t in rates if f <= target)
    tar, tau = tar_at_far(d, s, target)
    assert tar == pytest.approx(want)
    far_at, tar_at = rates_loop(d, s, tau)
    assert far_at <= target and tar_at == pytest.approx(tar)


@pytest.mark.parametrize("seed,decimals", [(0, 3), (6, 3), (10, 3), (1, 2)])  # (1, 2) has an exact crossing
def test_eer_bounded_by_sweep(seed, decimals):
    d, s = random_pairs(n=200, seed=seed, decimals=decimals)
    rates = [rates_loop(d, s, t) for t in candidate_taus(d)]
    upper = min(max(f, 1 - t) for f, t in rates)
    lower = max(min(f, 1 - t) for f, t in rates)
    e, tau = eer(d, s)
    assert lower - 1e-12 <= e <= upper + 1e-12
    ng, ni = int(s.sum()), int((~s).sum())
    exact = [t for t in candidate_taus(d) if ((d <= t) & ~s).sum() * ng == ((d > t) & s).sum() * ni]
    if exact:  # some threshold has FAR == FRR exactly: eer is there, and tau is one such
        assert tau in exact
        far, tar = rates_loop(d, s, tau)
        assert far == pytest.approx(1 - tar) == pytest.approx(e)


# ----------------------------------------------------------- cross-validation


def test_cv_threshold_matches_manual_folds():
    d, s = random_pairs(n=200, seed=7)
    tau_mean, per_fold, acc = cv_threshold(d, s, folds=10, seed=3)
    fold_of = _stratified_folds(s, 10, 3)
    assert len(per_fold) == 10 and sum(r["n"] for r in per_fold) == len(d)
    for f, r in enumerate(per_fold):
        test = fold_of == f
        assert abs(int(s[test].sum()) - s.sum() / 10) < 1  # stratified
        assert r["tau"] == best_threshold(d[~test], s[~test])
        assert r["accuracy"] == pytest.approx(confusion_at(d[test], s[test], r["tau"])["accuracy"])
    assert tau_mean == pytest.approx(np.mean([r["tau"] for r in per_fold]))
    assert acc == pytest.approx(np.mean([r["accuracy"] for r in per_fold]))
    assert cv_threshold(d, s, folds=10, seed=3)[0] == tau_mean  # deterministic


def test_cv_threshold_small_and_separable():
    d = np.array([0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
    s = np.array([True, True, True, False, False, False])
    tau, per_fold, acc = cv_threshold(d, s, folds=10)
    assert len(per_fold) == 3 and acc == 1.0 and 0.3 < tau < 0.9
    with pytest.raises(DataError):
        cv_threshold(np.array([0.1, 0.2, 0.9]), np.array([True, False, False]))


def test_verification_report_json_and_tau():
    d, s = random_pairs(n=300, seed=8)
    r = verification_report(d, s)
    json.dumps(r, allow_nan=False)
    assert r["tau_source"] == "cv" and r["n_genuine"] + r["n_impostor"] == 300
    for k in ("roc_auc", "eer", "tau_eer", "tar@far1e-2", "tau@far1e-2", "tar@far1e-3", "tau@far1e-3",
              "accuracy", "precision", "recall", "f1", "balanced_accuracy", "cv_accuracy"):
        assert isinstance(r[k], float), k
    given = verification_report(d, s, tau=1.0)
    assert given["tau"] == 1.0 and given["tau_source"] == "given"
    assert given["accuracy"] == confusion_at(d, s, 1.0)["accuracy"]


def test_bad_input_raises_data_error():
    with pytest.raises(DataError):
        roc_auc([0.1, 0.2], [True, True])
    with pytest.raises(DataError):
        roc_auc([0.1, np.nan], [True, False])
    with pytest.raises(DataError):
        roc_auc([0.1, 0.2, 0.3], [True, False])


# -------------------------------------------------------------------- plotting


@pytest.mark.parametrize("log_far", [True, False])
def test_plot_roc_writes_png(tmp_path, log_far):
    d, s = random_pairs(n=200, seed=9)
    out = plot_roc(d, s, tmp_path / "roc.png", tau=1.0, title="test", log_far=log_far)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]  # no temp file left behind
