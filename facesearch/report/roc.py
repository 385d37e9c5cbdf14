"""The ROC plot of a verification run (PNG), for ``evaluate --plot``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facesearch.core.atomic import atomic_path
from facesearch.eval.metrics import check_pairs, confusion_at, eer, roc_auc, roc_curve


def plot_roc(dist, same, path: str | os.PathLike, tau: float | None = None,
             title: str | None = None, log_far: bool = True) -> Path:
    """Write a ROC plot (PNG) to ``path`` atomically; mark the operating point at ``tau``.

    ``log_far`` puts FAR on a log axis, where the low-FAR region that matters
    for search is visible; FAR = 0 is drawn at the axis floor.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    d, s = check_pairs(dist, same)
    far, tar, _ = roc_curve(d, s)
    auc, (e, _) = roc_auc(d, s), eer(d, s)
    floor = 1.0 / (10.0 * (~s).sum()) if log_far else 0.0
    fig, ax = plt.subplots(figsize=(6, 5))
    try:
        ax.plot(np.maximum(far, floor), tar, lw=2, label=f"ROC (AUC={auc:.4f}, EER={e:.2%})")
        grid = np.logspace(np.log10(floor), 0, 200) if log_far else np.linspace(0, 1, 2)
        ax.plot(grid, grid, ls="--", color="grey", lw=1, label="chance")
        ax.plot(max(e, floor), 1 - e, "x", color="black", ms=8, label="EER point")
        if tau is not None:
            c = confusion_at(d, s, tau)
            far_t = c["fp"] / (c["fp"] + c["tn"])
            ax.plot(max(far_t, floor), c["recall"], "o", color="red", ms=8,
                    label=f"tau={tau:.3f}: TAR={c['recall']:.2%}, FAR={far_t:.2%}")
        if log_far:
            ax.set_xscale("log")
        ax.set_xlim(floor if log_far else 0.0, 1.0)
        ax.set_ylim(0.0, 1.01)
        ax.set_xlabel("false accept rate (FAR)" + (", log scale" if log_far else ""))
        ax.set_ylabel("true accept rate (TAR)")
        ax.set_title(title or "Face verification ROC")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)
