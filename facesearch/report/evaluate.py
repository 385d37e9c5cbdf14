"""HTML report for ``facesearch evaluate``: ROC and DET curves, distance histograms with τ,
the metrics table and the hardest mistakes as thumbnail pairs."""

from __future__ import annotations

import io
import os
from statistics import NormalDist

import numpy as np

from facesearch.core.errors import DataError
from facesearch.eval.metrics import check_pairs, confusion_at, roc_curve
from facesearch.report.html import (
    bad_files_section,
    ImageCache, esc, face_thumb, fmt, img_tag, page, png_uri, short_path, table, write_html,
)

HARDEST = 8  # pairs shown per kind of mistake
# Shown first, in this order; any other scalar in the report follows.
METRIC_ORDER = ("tau", "tau_source", "accuracy", "balanced_accuracy", "precision", "recall", "f1",
                "roc_auc", "eer", "tau_eer", "tar@far1e-2", "tau@far1e-2", "tar@far1e-3", "tau@far1e-3",
                "cv_accuracy", "cv_balanced_accuracy", "cv_folds", "n_genuine", "n_impostor",
                "tp", "fp", "tn", "fn", "model_id", "n_images", "detector")
DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95)


def render_evaluate_html(report: dict, dist, same, path: str | os.PathLike | None = None,
                         pairs: list[tuple[str, str]] | None = None) -> str:
    """The verification report page; written atomically to ``path`` if given.

    ``dist``/``same`` are the pair distances and genuine flags the report was
    computed from; ``pairs`` (optional, aligned with them) names each pair's two
    photos so the hardest mistakes can be shown.
    """
    d, s = check_pairs(dist, same)
    if pairs is not None and len(pairs) != len(d):
        raise DataError(f"{len(pairs)} pair names for {len(d)} distances",
                        hint="pass one (path_a, path_b) per distance, in the same order")
    tau = float(report.get("tau", np.median(d)))
    plots = [("ROC", _roc_png(d, s, tau)), ("DET", _det_png(d, s, tau)), ("distances", _hist_png(d, s, tau))]
    figs = "".join(f"<img class=\"plot\" src=\"{png_uri(png)}\" alt=\"{esc(name)}\">" for name, png in plots)
    body = [_data_line(report), "<h2>Metrics</h2>", _metrics_table(report),
            f"<h2>Curves</h2><div class=\"row\">{figs}</div>"]
    if pairs is not None:
        body.append(_hardest(d, s, pairs, tau))
    body.append(bad_files_section(report.get("bad_files") or []))
    text = page("facesearch verification report", "\n".join(body))
    if path is not None:
        write_html(path, text)
    return text


def _data_line(report: dict) -> str:
    data = report.get("data")
    src = ", ".join(str(x) for x in data) if isinstance(data, list) else (data or "")
    model = report.get("model_id", "")
    return f"<p class=\"muted\">data: {esc(str(src))} · model: {esc(str(model))}</p>"


def _metrics_table(report: dict) -> str:
    scalar = {k: v for k, v in report.items() if isinstance(v, (int, float, str, bool)) or v is None}
    keys = [k for k in METRIC_ORDER if k in scalar] + sorted(k for k in scalar if k not in METRIC_ORDER)
    return table([(k, fmt(scalar[k])) for k in keys], header=("metric", "value"), cls="summary")


# ----------------------------------------------------------------------------- plots


def _figure(width: float = 5.2, height: float = 4.2):
    # Figure without pyplot: no global backend state, safe in any process.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _rates_at(d: np.ndarray, s: np.ndarray, tau: float) -> tuple[float, float]:
    """(FAR, FRR) when pairs with distance <= tau are accepted."""
    c = confusion_at(d, s, tau)
    return c["fp"] / (c["fp"] + c["tn"]), 1.0 - c["recall"]


def _roc_png(d: np.ndarray, s: np.ndarray, tau: float) -> bytes:
    far, tar, _ = roc_curve(d, s)
    floor = 1.0 / (10.0 * (~s).sum())  # FAR = 0 drawn at the axis floor of the log scale
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(np.maximum(far, floor), tar, lw=2, label="ROC")
    f, r = _rates_at(d, s, tau)
    ax.plot(max(f, floor), 1 - r, "o", color="red", label=f"τ={tau:.3f}: TAR={1 - r:.2%}, FAR={f:.2%}")
    ax.set_xscale("log")
    ax.set(xlim=(floor, 1.0), ylim=(0.0, 1.01), xlabel="false accept rate (log)",
           ylabel="true accept rate", title="ROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def _probit(p: np.ndarray) -> np.ndarray:
    inv = NormalDist().inv_cdf
    return np.array([inv(float(x)) for x in p])


def _det_png(d: np.ndarray, s: np.ndarray, tau: float) -> bytes:
    """FRR against FAR on normal-deviate axes, where good systems plot as near-straight lines."""
    far, tar, _ = roc_curve(d, s)
    frr = 1.0 - tar
    lo, hi = 0.5 / max(int(s.sum()), int((~s).sum())), 0.95  # rates of 0 and 1 have no deviate
    inside = (far > 0) & (far < 1) & (frr > 0) & (frr < 1)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(_probit(far[inside]), _probit(frr[inside]), lw=2, label="DET")
    f, r = _rates_at(d, s, tau)
    ax.plot(*_probit(np.clip([f, r], lo, hi)), "o", color="red", label=f"τ={tau:.3f}: FAR={f:.2%}, FRR={r:.2%}")
    ticks = [t for t in DET_TICKS if lo <= t <= hi]
    labels = [f"{t:.1%}" if t < 0.01 else f"{t:.0%}" for t in ticks]
    ax.set_xticks(_probit(np.array(ticks)), labels)
    ax.set_yticks(_probit(np.array(ticks)), labels)
    lim = (_probit(np.array([lo]))[0], _probit(np.array([hi]))[0])
    ax.set(xlim=lim, ylim=lim, xlabel="false accept rate (FAR)", ylabel="false reject rate (FRR)", title="DET")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def _hist_png(d: np.ndarray, s: np.ndarray, tau: float) -> bytes:
    bins = np.linspace(min(d.min(), tau), max(d.max(), tau), 50)
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(d[s], bins=bins, density=True, alpha=0.6, color="tab:green", label=f"genuine ({int(s.sum())})")
    ax.hist(d[~s], bins=bins, density=True, alpha=0.6, color="tab:red", label=f"impostor ({int((~s).sum())})")
    ax.axvline(tau, color="black", ls="--", lw=1.5, label=f"τ = {tau:.3f}")
    ax.set(xlabel="L2 distance", ylabel="density", title="Pair distances")
    ax.legend(fontsize=8)
    return _png(fig)


# ----------------------------------------------------------------------------- mistakes


def _hardest(d: np.ndarray, s: np.ndarray, pairs, tau: float) -> str:
    """Closest impostor pairs and farthest genuine pairs, each as two thumbnails."""
    cache = ImageCache()
    imp = np.flatnonzero(~s)[np.argsort(d[~s], kind="stable")][:HARDEST]
    gen = np.flatnonzero(s)[np.argsort(-d[s], kind="stable")][:HARDEST]
    out = ["<h2>Hardest mistakes</h2>"]
    for title, idx, wrong, what in (("Closest impostor pairs", imp, lambda x: x <= tau, "false accept"),
                                    ("Farthest genuine pairs", gen, lambda x: x > tau, "false reject")):
        cells = "".join(_pair_cell(pairs[int(i)], float(d[i]), what if wrong(d[i]) else "", cache) for i in idx)
        out.append(f"<h3>{title}</h3><div class=\"row\">{cells}</div>")
    return "\n".join(out)


def _pair_cell(pair, dist: float, mistake: str, cache: ImageCache) -> str:
    a, b = (str(p) for p in pair)
    ta, _ = face_thumb(cache, a, None)
    tb, _ = face_thumb(cache, b, None)
    flag = f"<br><span class=\"err\">{esc(mistake)}</span>" if mistake else ""
    names = f"<span title=\"{esc(a, quote=True)}\">{esc(short_path(a))}</span> · " \
            f"<span title=\"{esc(b, quote=True)}\">{esc(short_path(b))}</span>"
    return (f"<div class=\"card pair\" style=\"width:250px\">{img_tag(ta, cls='pairthumb', alt=a)} "
            f"{img_tag(tb, cls='pairthumb', alt=b)}<br>d={fmt(dist)}{flag}<br><small>{names}</small></div>")
