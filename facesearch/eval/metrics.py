"""Face-verification metrics on pair distances (numpy only).

Inputs are ``dist`` (N,) distances, smaller = more similar, and ``same`` (N,)
booleans, True for a genuine pair (same person). A pair is predicted "same"
when ``dist <= tau``. FAR = accepted impostors / impostors, TAR = accepted
genuine pairs / genuine pairs.
"""

from __future__ import annotations

import numpy as np

from facesearch.core.errors import DataError

CRITERIA = ("accuracy", "balanced_accuracy")


def check_pairs(dist, same) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to (float64, bool) 1-D arrays with both classes present."""
    d = np.asarray(dist, dtype=np.float64)
    s = np.asarray(same).astype(bool)
    if d.ndim != 1 or s.shape != d.shape:
        raise DataError(
            f"dist and same must be 1-D and of equal length, got shapes {d.shape} and {s.shape}",
            hint="pass one distance and one same/different flag per pair",
        )
    if not np.isfinite(d).all():
        raise DataError("distances contain NaN or infinity", hint="check the embeddings for NaN")
    if s.all() or not s.any():
        raise DataError(
            f"need both genuine and impostor pairs, got {int(s.sum())} genuine of {len(s)}",
            hint="the evaluation pairs must include same-person and different-person pairs",
        )
    return d, s


def _below(x: float) -> float:
    # A threshold that accepts nothing. Finite (JSON-safe) and far enough below
    # x that rounding tau to float32 still rejects a pair at exactly x.
    return float(x - 1e-6 * (1.0 + abs(x)))


def _counts(d: np.ndarray, s: np.ndarray, taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accepted genuine, accepted impostors) at each threshold, in O((N + T) log N)."""
    tp = np.searchsorted(np.sort(d[s]), taus, side="right")
    fp = np.searchsorted(np.sort(d[~s]), taus, side="right")
    return tp, fp


def roc_curve(dist, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, tar, thresholds)``, one point per unique distance, ascending.

    The first point accepts nothing (FAR = TAR = 0, threshold just below the
    smallest distance); the last accepts everything. Tied distances form one
    point, so a tie between a genuine and an impostor pair is a diagonal step.
    """
    d, s = check_pairs(dist, same)
    u = np.unique(d)
    thresholds = np.concatenate([[_below(u[0])], u])
    tp, fp = _counts(d, s, thresholds)
    return fp / (~s).sum(), tp / s.sum(), thresholds


def roc_auc(dist, same) -> float:
    """Area under the ROC: P(random genuine pair is closer than random impostor), ties ½."""
    far, tar, _ = roc_curve(dist, same)
    # The trapezoid over a tied group is exactly the ½ credit for ties.
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def eer(dist, same) -> tuple[float, float]:
    """``(eer, tau)``: where FAR = FRR (= 1 − TAR).

    If some threshold has FAR = FRR exactly, that point. Otherwise interpolates
    linearly between the two adjacent ROC points where FAR − FRR changes sign;
    tau is interpolated the same way.
    """
    d, s = check_pairs(dist, same)
    far, tar, th = roc_curve(d, s)
    n_gen, n_imp = int(s.sum()), int((~s).sum())
    # Sign of FAR - FRR in exact integers: float rounding could otherwise put an
    # exact crossing one point early and tau just below it.
    fp, fn = np.rint(far * n_imp).astype(np.int64), np.rint((1.0 - tar) * n_gen).astype(np.int64)
    sign = fp * n_gen - fn * n_imp  # -1 at the first point, +1 at the last, non-decreasing
    i = int(np.argmax(sign >= 0))
    if sign[i] == 0:
        return float(far[i]), float(th[i])
    t = sign[i - 1] / (sign[i - 1] - sign[i])
    rate = far[i - 1] + t * (far[i] - far[i - 1])
    tau = th[i - 1] + t * (th[i] - th[i - 1])
    return float(rate), float(tau)


def tar_at_far(dist, same, far: float) -> tuple[float, float]:
    """``(tar, tau)``: the largest TAR whose FAR is <= ``far``, at the smallest such tau."""
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    fars, tars, th = roc_curve(dist, same)
    # fars and tars are both non-decreasing: the answer is the last point within budget,
    # moved back to the first point with the same TAR (lowest FAR for that TAR).
    last = int(np.searchsorted(fars, far, side="right")) - 1
    first = int(np.searchsorted(tars, tars[last], side="left"))
    return float(tars[first]), float(th[first])


def confusion_at(dist, same, tau: float) -> dict:
    """Counts and rates when pairs with ``dist <= tau`` are called "same".

    Precision (and F1) is 0 when nothing is accepted.
    """
    d, s = check_pairs(dist, same)
    pred = d <= tau
    tp, fp = int((pred & s).sum()), int((pred & ~s).sum())
    fn, tn = int((~pred & s).sum()), int((~pred & ~s).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": (tp + tn) / len(d),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "balanced_accuracy": (recall + tn / (tn + fp)) / 2.0,
    }


def best_threshold(dist, same, criterion: str = "accuracy") -> float:
    """The tau maximising ``criterion`` on these pairs (ties: the smallest tau).

    Exact: every distinct decision is tried, with tau at the midpoint between
    consecutive unique distances (plus "accept nothing" and "accept all").
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    d, s = check_pairs(dist, same)
    u = np.unique(d)
    taus = np.concatenate([[_below(u[0])], (u[:-1] + u[1:]) / 2.0, [u[-1]]])
    tp, fp = _counts(d, s, taus)
    n_gen, n_imp = int(s.sum()), int((~s).sum())
    tn = n_imp - fp
    if criterion == "accuracy":
        score = (tp + tn) / len(d)
    else:
        score = (tp / n_gen + tn / n_imp) / 2.0
    return float(taus[int(np.argmax(score))])


def cv_threshold(dist, same, folds: int = 10, seed: int = 0, criterion: str = "accuracy"):
    """LFW-style cross-validated threshold: ``(tau_mean, per_fold, cv_accuracy)``.

    Pairs are split into ``folds`` stratified random folds (fewer if a class has
    fewer pairs than folds). For each fold, tau is chosen on the others with
    :func:`best_threshold` and evaluated on it. ``per_fold`` lists dicts with
    ``tau``, ``accuracy``, ``balanced_accuracy`` and ``n``; ``cv_accuracy`` is
    the mean held-out accuracy, ``tau_mean`` the mean of the fold taus.
    """
    d, s = check_pairs(dist, same)
    fold_of = _stratified_folds(s, folds, seed)
    per_fold = []
    for f in range(int(fold_of.max()) + 1):
        test = fold_of == f
        tau = best_threshold(d[~test], s[~test], criterion)
        c = confusion_at(d[test], s[test], tau)
        per_fold.append({"tau": tau, "accuracy": c["accuracy"],
                         "balanced_accuracy": c["balanced_accuracy"], "n": int(test.sum())})
    tau_mean = float(np.mean([r["tau"] for r in per_fold]))
    return tau_mean, per_fold, float(np.mean([r["accuracy"] for r in per_fold]))


def _stratified_folds(s: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per pair; each fold gets its share of genuine and of impostor pairs."""
    k = min(int(folds), int(s.sum()), int((~s).sum()))
    if k < 2:
        raise DataError(
            f"cross-validation needs >= 2 genuine and >= 2 impostor pairs (and folds >= 2), got "
            f"{int(s.sum())} genuine, {int((~s).sum())} impostor, folds={folds}",
            hint="evaluate on more pairs, or pass a fixed tau",
        )
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(s), dtype=np.int64)
    for cls in (s, ~s):
        idx = rng.permutation(np.flatnonzero(cls))
        fold_of[idx] = np.arange(len(idx)) % k
    return fold_of

