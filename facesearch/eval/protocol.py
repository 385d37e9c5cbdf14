"""The verification protocol: which pairs are scored, and the numbers every caller reports.

One protocol for ``facesearch evaluate``, training's validation, ``tools/calibrate.py`` and the
benchmarks, so their numbers are comparable: the pairs of :func:`facesearch.eval.pairs.make_pairs`
(all genuine pairs plus a seeded sample of impostor pairs), their L2 distances
(:func:`protocol_distances`), and :func:`verification_report` over them (ROC AUC, EER, TAR@FAR,
balanced accuracy at a cross-validated τ). :func:`score_embeddings` is the benchmarks' view of
the same report, with one-shot identification (each person's first photo enrolled, the rest
searched: closed-set rank-1) added.
"""

from __future__ import annotations

import numpy as np

from facesearch.eval.metrics import check_pairs, confusion_at, cv_threshold, eer, roc_auc, tar_at_far
from facesearch.eval.openset import openset_scores, rank1
from facesearch.eval.pairs import make_pairs
from facesearch.store.vectors.exact import pair_distances

# The benchmarks' keys for the report's numbers (bench/accuracy.py's JSON, tools/finetune_default.py).
_SCORE_KEYS = {"n_genuine": "genuine_pairs", "n_impostor": "impostor_pairs", "roc_auc": "roc_auc", "eer": "eer",
               "cv_balanced_accuracy": "balanced_accuracy_cv", "tau": "tau_cv",
               "tar@far1e-2": "tar@far1e-2", "tar@far1e-3": "tar@far1e-3"}


def protocol_distances(emb: np.ndarray, labels, seed: int = 0,
                       max_impostors: int | None = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """``(dist, same)``: the protocol's pairs of one labelled set of embeddings and their L2 distances."""
    i, j, same = make_pairs(labels, seed=seed, max_impostors=max_impostors)
    return pair_distances(emb, i, j, dtype=np.float64), same


def verification_report(dist, same, tau: float | None = None, folds: int = 10, seed: int = 0) -> dict:
    """All headline verification numbers as a JSON-serialisable dict of plain floats/ints.

    ``tau`` is the operating threshold; when None the cross-validated one is used
    (``tau_source`` says which).
    """
    d, s = check_pairs(dist, same)
    # balanced accuracy: with far more impostor than genuine pairs, plain accuracy picks "reject all"
    tau_cv, per_fold, cv_acc = cv_threshold(d, s, folds, seed, criterion="balanced_accuracy")
    e, tau_e = eer(d, s)
    t2, tau2 = tar_at_far(d, s, 1e-2)
    t3, tau3 = tar_at_far(d, s, 1e-3)
    used = tau_cv if tau is None else float(tau)
    c = confusion_at(d, s, used)
    return {
        "n_genuine": int(s.sum()), "n_impostor": int((~s).sum()),
        "roc_auc": roc_auc(d, s), "eer": e, "tau_eer": tau_e,
        "tar@far1e-2": t2, "tau@far1e-2": tau2, "tar@far1e-3": t3, "tau@far1e-3": tau3,
        "tau": used, "tau_source": "cv" if tau is None else "given",
        **{k: c[k] for k in ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "tp", "fp", "tn", "fn")},
        "cv_accuracy": cv_acc,
        "cv_balanced_accuracy": float(np.mean([r["balanced_accuracy"] for r in per_fold])),
        "cv_folds": len(per_fold),
    }


def score_embeddings(emb: np.ndarray, labels: np.ndarray, seed: int = 0, max_impostors: int = 50_000,
                     folds: int = 10) -> dict:
    """Verification (:func:`verification_report` at the cross-validated τ, under the benchmarks'
    keys, rounded) and one-shot identification numbers for one set, JSON-ready."""
    dist, same = protocol_distances(emb, labels, seed=seed, max_impostors=max_impostors)
    report = verification_report(dist, same, folds=folds, seed=seed)
    scores = {new: report[old] for old, new in _SCORE_KEYS.items()}
    return {k: v if isinstance(v, int) else round(v, 6) for k, v in scores.items()} | one_shot_top1(emb, labels)


def one_shot_top1(emb: np.ndarray, labels: np.ndarray) -> dict:
    """Gallery = each person's first photo; top-1 = probes whose nearest gallery face is theirs."""
    first = np.unique(labels, return_index=True)[1]
    probe = np.setdiff1d(np.arange(len(labels)), first)
    if len(probe) == 0:
        return {"one_shot_top1": None, "probes": 0}
    s = openset_scores(emb[first], labels[first], emb[probe], labels[probe])
    return {"one_shot_top1": round(rank1(s), 6), "probes": int(len(probe))}
