"""The dev protocol on one set's embeddings: the numbers every benchmark and tool reports.

Verification over all genuine + a seeded sample of impostor pairs (ROC AUC, EER,
TAR@FAR, balanced accuracy at a cross-validated τ) and one-shot identification
(each person's first photo enrolled, the rest searched: closed-set rank-1).
"""

from __future__ import annotations

import numpy as np

from facesearch.eval.openset import openset_scores, rank1
from facesearch.eval.pairs import make_pairs, pair_distances
from facesearch.eval.metrics import cv_threshold, eer, roc_auc, tar_at_far


def score_embeddings(emb: np.ndarray, labels: np.ndarray, seed: int = 0, max_impostors: int = 50_000,
                     folds: int = 10) -> dict:
    """Verification and one-shot identification numbers for one set, JSON-ready."""
    i, j, same = make_pairs(labels, seed=seed, max_impostors=max_impostors)
    dist = pair_distances(emb, i, j)
    tau, per_fold, _ = cv_threshold(dist, same, folds, seed, criterion="balanced_accuracy")
    e, _ = eer(dist, same)
    return {
        "genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum()),
        "roc_auc": round(roc_auc(dist, same), 6), "eer": round(e, 6),
        "balanced_accuracy_cv": round(float(np.mean([f["balanced_accuracy"] for f in per_fold])), 6),
        "tau_cv": round(tau, 6),
        "tar@far1e-2": round(tar_at_far(dist, same, 1e-2)[0], 6),
        "tar@far1e-3": round(tar_at_far(dist, same, 1e-3)[0], 6),
        **one_shot_top1(emb, labels),
    }


def one_shot_top1(emb: np.ndarray, labels: np.ndarray) -> dict:
    """Gallery = each person's first photo; top-1 = probes whose nearest gallery face is theirs."""
    first = np.unique(labels, return_index=True)[1]
    probe = np.setdiff1d(np.arange(len(labels)), first)
    if len(probe) == 0:
        return {"one_shot_top1": None, "probes": 0}
    s = openset_scores(emb[first], labels[first], emb[probe], labels[probe])
    return {"one_shot_top1": round(rank1(s), 6), "probes": int(len(probe))}
