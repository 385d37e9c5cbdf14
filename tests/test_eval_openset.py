"""Open-set identification metrics and the τ policy, against explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facesearch.core.errors import FacesearchError
from facesearch.eval.openset import (
    fnir_at_fpir,
    fpir_fnir,
    nearest_in_gallery,
    openset_scores,
    rank1,
    tau_at_fpir,
)
from facesearch.eval.tau import (FAR_GRID, MIN_BELOW, QUALITY_REJECT, TauPolicy, calibrate, check_tau, far_curve,
                                 identification_curve, quality_floor)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n_people: int, per: int, seed: int, spread: float = 0.6, dim: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    labels = np.repeat(np.arange(n_people), per)
    return unit(centres[labels] + spread * rng.normal(size=(len(labels), dim))), labels


# ------------------------------------------------------------------ open-set metrics


def brute_scores(gallery, g_labels, probes, p_labels):
    best_label, best_dist = [], []
    for p in probes:
        d = [math.dist(p.astype(np.float64), g.astype(np.float64)) for g in gallery]
        k = int(np.argmin(d))
        best_label.append(g_labels[k]), best_dist.append(d[k])
    return np.array(best_label), np.array(best_dist)


def test_nearest_in_gallery_matches_brute_force():
    g, gl = clustered(12, 3, seed=1)
    p, _ = clustered(12, 2, seed=2)
    idx, dist = nearest_in_gallery(g, p, chunk=5)  # several chunks
    want_label, want_dist = brute_scores(g, np.arange(len(g)), p, None)
    np.testing.assert_array_equal(idx, want_label)
    np.testing.assert_allclose(dist, want_dist, atol=1e-5)


@pytest.fixture(scope="module")
def scores():
    emb, labels = clustered(30, 4, seed=3, spread=0.9)
    first = np.r_[True, labels[1:] != labels[:-1]]
    enrolled = labels < 20  # people 20..29 are strangers
    gallery = first & enrolled
    probes = ~gallery
    return openset_scores(emb[gallery], labels[gallery], emb[probes], labels[probes]), (emb, labels, gallery, probes)


def test_fpir_fnir_match_explicit_loops(scores):
    s, (emb, labels, gallery, probes) = scores
    g_labels = labels[gallery]
    best_label, best_dist = brute_scores(emb[gallery], g_labels, emb[probes], labels[probes])
    for tau in (0.0, 0.3, 0.6, 0.9, 1.2, 2.0):
        named = strangers_named = strangers = mated = missed = 0
        for lab, bl, bd in zip(labels[probes], best_label, best_dist):
            named = bd <= tau
            if lab in g_labels:
                mated += 1
                missed += not (named and bl == lab)
            else:
                strangers += 1
                strangers_named += named
        fpir, fnir = fpir_fnir(s, tau)
        assert fpir == pytest.approx(strangers_named / strangers) and fnir == pytest.approx(missed / mated)
    assert rank1(s) == pytest.approx(np.mean([bl == lab for lab, bl in zip(labels[probes], best_label)
                                              if lab in g_labels]))


@pytest.mark.parametrize("target", [0.0, 0.01, 0.1, 0.25, 1.0])
def test_tau_at_fpir_is_the_largest_within_target(scores, target):
    s, _ = scores
    tau = tau_at_fpir(s, target)
    assert fpir_fnir(s, tau)[0] <= target
    looser = [d for d in np.sort(s.best_dist[~s.mated]) if d > tau]
    if looser:  # the next stranger distance would break the target
        assert fpir_fnir(s, looser[0])[0] > target
    fnir, tau2 = fnir_at_fpir(s, target)
    assert tau2 == tau and fnir == fpir_fnir(s, tau)[1]


# ------------------------------------------------------------------ τ policy


def impostor_pairs(n_gen=2_000, n_imp=200_000, seed=0):
    rng = np.random.default_rng(seed)
    d = np.r_[rng.normal(0.5, 0.12, n_gen), rng.normal(1.1, 0.15, n_imp)].clip(0, 2)
    return d, np.r_[np.ones(n_gen, bool), np.zeros(n_imp, bool)]


def test_far_curve_points_are_measured_fractions():
    d, s = impostor_pairs()
    imp = d[~s]
    curve = far_curve(imp)
    assert [f for f, _ in curve] == list(FAR_GRID[:len(curve)])
    for far, tau in curve:
        assert (imp <= tau).sum() >= int(far * len(imp)) > (imp < tau).sum() - 1
        assert int(far * len(imp)) >= MIN_BELOW  # never extrapolated
    assert len(curve) < len(FAR_GRID)  # 2e5 impostors cannot measure FAR 1e-6


def test_policy_from_calibration_round_trip():
    d, s = impostor_pairs()
    fields = calibrate(d, s, duplicate_dist=np.full(50, 0.05))
    policy = TauPolicy.from_config(fields)
    assert policy.verification == fields["tau"] and policy.dedupe == pytest.approx(0.05)
    for far, tau in policy.curve:
        assert policy.far_at(tau) == pytest.approx(far, rel=1e-6)
        assert policy.tau_for_far(far) == pytest.approx(tau, abs=1e-9)
    assert policy.far1e4 is not None and policy.far1e4 < policy.far1e3 < policy.verification


def test_identification_tau_keeps_fpir_at_target_over_the_gallery():
    d, s = impostor_pairs(n_imp=2_000_000, seed=1)
    policy = TauPolicy.from_config(calibrate(d, s))
    imp = np.sort(d[~s])
    previous = 2.0
    for n in (1, 10, 100, 1000):
        tau, source = policy.identification(n, fpir=0.01)
        assert tau < previous and "FPIR 1%" in source  # a bigger gallery needs a stricter τ
        previous = tau
        # The chance that at least one of n independent strangers' comparisons lands within τ.
        far = np.searchsorted(imp, tau, side="right") / len(imp)
        assert 1 - (1 - far) ** n == pytest.approx(0.01, rel=0.35)


def test_policy_without_curve_falls_back_and_says_so():
    policy = TauPolicy.from_config({"tau": 0.4, "tau_far1e3": 0.3})
    assert policy.identification(50) == (0.3, "the model's FAR 1e-3 τ (no identification calibration)")
    assert policy.far_at(0.2) is None
    with pytest.raises(FacesearchError):
        TauPolicy.from_config({}).identification(10)


def test_looseness_warning_only_beyond_verification():
    d, s = impostor_pairs()
    policy = TauPolicy.from_config(calibrate(d, s))
    assert policy.looseness_warning(policy.verification) is None
    warning = policy.looseness_warning(min(2.0, policy.verification + 0.3))
    assert warning and "looser than the model's verification" in warning and "%" in warning


@pytest.mark.parametrize("tau", [0.0, -1.0, 2.0001, 5.0, float("nan")])
def test_check_tau_refuses_impossible_distances(tau):
    with pytest.raises(ValueError, match="0 < tau <= 2"):
        check_tau(tau)
    assert check_tau(2.0) == 2.0 and check_tau(1e-6) == 1e-6


def test_identification_curve_matches_simulated_galleries():
    emb, labels = clustered(40, 6, seed=5, spread=0.8)
    groups = labels % 2  # two "sets": people are strangers only within their own set
    curve = identification_curve(emb, labels, groups)
    rng = np.random.default_rng(0)
    for n, tau in curve["0.01"][:5]:  # N = 1 .. 100
        named = 0
        for _ in range(20):  # every photo as a stranger against N random other-person faces of its set
            for p in range(len(emb)):
                others = np.flatnonzero((labels != labels[p]) & (groups == groups[p]))
                g = rng.choice(others, n, replace=True)
                named += np.linalg.norm(emb[g] - emb[p], axis=1).min() <= tau
        assert named / (20 * len(emb)) == pytest.approx(0.01, abs=0.01)
    taus = [t for _, t in curve["0.01"]]
    assert taus == sorted(taus, reverse=True)  # bigger galleries, stricter τ
    assert all(t1 <= t2 for (_, t1), (_, t2) in zip(curve["0.001"], curve["0.01"]))


def test_policy_prefers_the_identification_curve():
    policy = TauPolicy.from_config({"tau": 0.4, "calibration": {
        "far_curve": [[1e-1, 0.45], [1e-3, 0.3]], "identification": {"0.01": [[1, 0.4], [100, 0.3], [10_000, 0.2]]}}})
    assert policy.identification(10)[0] == pytest.approx(0.35)  # halfway in log N
    assert policy.identification(1_000_000)[0] == 0.2 and "beyond the calibrated sizes" in policy.identification(10**6)[1]
    assert "from the FAR curve" in policy.identification(10, fpir=0.05)[1]  # no curve for that target


def test_quality_gate_turns_away_the_reject_share_of_ordinary_faces():
    """Oracle: the calibrated floor lets through all but the ``reject`` share of the calibration faces."""
    rng = np.random.default_rng(3)
    q = rng.gamma(9.0, 1.3, 5_000)
    d, s = impostor_pairs()
    emb, labels = clustered(20, 5, seed=4)
    fields = calibrate(d, s, emb=emb, labels=labels, quality=q)
    policy = TauPolicy.from_config(fields)
    refused = sum(not policy.can_name(float(v)) for v in q)
    assert refused == pytest.approx(QUALITY_REJECT * len(q), abs=2)
    assert policy.can_name(None)  # a model that rates nothing is never gated
    assert TauPolicy.from_config(calibrate(d, s)).quality_min is None  # nor is an uncalibrated one
    assert all(TauPolicy.from_config(calibrate(d, s)).can_name(float(v)) for v in q[:10])


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_quality_floor_refuses_what_it_cannot_calibrate_on(bad):
    with pytest.raises(FacesearchError):
        quality_floor(bad)
