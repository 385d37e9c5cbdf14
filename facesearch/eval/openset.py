"""Open-set identification: probes searched against a gallery of enrolled people (numpy only).

Terms as in NIST FRVT 1:N and ISO/IEC 19795-1. A *mated* probe shows someone who
is enrolled; a *non-mated* probe shows a stranger. At threshold τ a probe is
given the identity of its nearest enrolled face when that distance is ≤ τ:

- **FPIR** (false positive identification rate): non-mated probes that get a name;
- **FNIR** (false negative identification rate): mated probes that do not get
  *their* name (no name, or somebody else's);
- **rank-1**: mated probes whose nearest identity is theirs, whatever the distance.

The chance that a stranger lands within τ of *someone* grows with the gallery,
which is why the identification τ depends on the gallery size
(:meth:`facesearch.eval.tau.TauPolicy.identification`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesearch.core.errors import DataError


@dataclass
class OpenSetScores:
    """Per probe: the nearest enrolled identity and its distance, and whether the probe is mated."""

    best_label: np.ndarray  # (P,) label of the nearest gallery face
    best_dist: np.ndarray  # (P,) its distance
    true_label: np.ndarray  # (P,) the probe's own label
    mated: np.ndarray  # (P,) bool: the probe's person is enrolled

    @property
    def correct(self) -> np.ndarray:
        """Mated probes whose nearest identity is their own."""
        return self.mated & (self.best_label == self.true_label)


def nearest_in_gallery(gallery: np.ndarray, probes: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Index and L2 distance of each probe's nearest gallery row (exact; any vectors)."""
    g = np.ascontiguousarray(gallery, dtype=np.float64)
    g2 = np.einsum("ij,ij->i", g, g)
    idx, dist = np.empty(len(probes), np.int64), np.empty(len(probes), np.float64)
    for a in range(0, len(probes), chunk):
        p = np.asarray(probes[a:a + chunk], dtype=np.float64)
        d2 = g2[None, :] - 2.0 * (p @ g.T)  # |p|² is the same for every row: left out of the argmin
        best = np.argmin(d2, axis=1)
        idx[a:a + chunk] = best
        dist[a:a + chunk] = np.sqrt(np.clip(d2[np.arange(len(best)), best] + np.einsum("ij,ij->i", p, p), 0, None))
    return idx, dist


def openset_scores(gallery: np.ndarray, gallery_labels, probes: np.ndarray, probe_labels) -> OpenSetScores:
    """Score every probe against the gallery. Labels are any hashable values (strings, ints)."""
    gallery_labels, probe_labels = np.asarray(gallery_labels), np.asarray(probe_labels)
    if len(gallery) == 0 or len(gallery) != len(gallery_labels) or len(probes) != len(probe_labels):
        raise DataError("gallery and probes need one label per embedding, and a non-empty gallery",
                        hint="enrol at least one face")
    idx, dist = nearest_in_gallery(gallery, probes)
    mated = np.isin(probe_labels, gallery_labels)
    return OpenSetScores(gallery_labels[idx], dist, probe_labels, mated)


def fpir_fnir(s: OpenSetScores, tau: float) -> tuple[float, float]:
    """``(FPIR, FNIR)`` at ``tau``; NaN for a side with no probes."""
    named = s.best_dist <= tau
    fpir = float(named[~s.mated].mean()) if (~s.mated).any() else float("nan")
    fnir = float(1.0 - (named & s.correct)[s.mated].mean()) if s.mated.any() else float("nan")
    return fpir, fnir


def tau_at_fpir(s: OpenSetScores, target: float) -> float:
    """The largest τ whose FPIR is ≤ ``target`` on these probes (ties: strictly below the tied distance)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target FPIR must be in [0, 1], got {target}")
    strangers = np.sort(s.best_dist[~s.mated])
    if len(strangers) == 0:
        raise DataError("no non-mated probes: FPIR is undefined", hint="hold some people out of the gallery")
    allowed = int(np.floor(target * len(strangers) + 1e-9))  # strangers that may be named
    if allowed >= len(strangers):
        return 2.0  # every stranger may be named: accept everything (max L2 between unit vectors)
    return float(np.nextafter(strangers[allowed], -np.inf))


def fnir_at_fpir(s: OpenSetScores, target: float) -> tuple[float, float]:
    """``(FNIR, τ)`` at the largest τ whose FPIR is ≤ ``target``: the best a single τ can do."""
    tau = tau_at_fpir(s, target)
    return fpir_fnir(s, tau)[1], tau


def rank1(s: OpenSetScores) -> float:
    """Closed-set rank-1 identification rate of the mated probes."""
    return float(s.correct[s.mated].mean()) if s.mated.any() else float("nan")


def det_curve(s: OpenSetScores, points: int = 200) -> dict:
    """FNIR against FPIR over τ (the open-set DET), at up to ``points`` thresholds, as JSON lists."""
    taus = np.unique(np.quantile(s.best_dist, np.linspace(0, 1, points)))
    rates = np.array([fpir_fnir(s, t) for t in taus])
    return {"tau": taus.round(5).tolist(), "fpir": rates[:, 0].round(6).tolist(), "fnir": rates[:, 1].round(6).tolist()}
