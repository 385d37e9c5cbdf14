"""The τ policy: which distance threshold each command uses, and where it comes from.

Calibration (:func:`calibrate`, on dev pairs, never train) measures the model's
impostor distances once and stores, in the weights JSON's config:

- ``tau``: the *verification* τ at the equal error rate (EER) — a balanced
  "same person?" for one pair (``evaluate``'s operating point, the loosest
  τ a command accepts without a warning);
- ``tau_far1e3`` / ``tau_far1e4``: stricter verification τ at FAR 1e-3 / 1e-4;
- ``calibration.far_curve``: ``[far, τ]`` points, the fraction of impostor pairs
  (different people) within τ, from FAR 1e-1 down to what the pairs can measure;
- ``tau_dedupe``: the near-duplicate τ (``dedupe``'s default);
- ``calibration.quality_min``: the face-quality gate, for a model that rates its faces
  (:func:`quality_floor`): a face rated below it is never *named*, because no τ keeps
  strangers unnamed among faces the model cannot read (near-black, profile, blurred).

Identification against a gallery is not one pair: a stranger is compared with
every enrolled face, so the chance she is named grows with the gallery.
``calibration.identification`` (:func:`identification_curve`) stores, per gallery
size N, the τ that keeps that chance at a target FPIR (default 1 %), measured per
photo; :meth:`TauPolicy.identification` reads it (falling back to
``FPIR = 1 - (1 - FAR(τ))^N`` on the FAR curve), so the τ tightens as the gallery
grows. An index records its model's config (with this calibration) when it is
created, and commands read the policy from there, not from whatever weights file
is on disk later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from facesearch.core.errors import FacesearchError
from facesearch.eval.metrics import check_pairs, eer, tar_at_far

# FAR points of the stored curve, in half decades; a point is kept only where at least
# MIN_BELOW impostor pairs fall below it, so every stored τ is measured, not extrapolated.
FAR_GRID = tuple(float(10.0 ** -e) for e in np.arange(1.0, 7.01, 0.5))
MIN_BELOW = 10
DEFAULT_FPIR = 0.01
MAX_TAU = 2.0  # the largest L2 distance between unit vectors
# Share of ordinary in-the-wild dev photos the quality gate may turn away. On dev, strangers
# rated below the 2nd percentile of pins_celebs are named 4-30x the target FPIR at the default τ,
# those above it at a fifth of it (the sweep is in docs/benchmarks.md, "Quality gate").
QUALITY_REJECT = 0.02


def far_curve(impostor_dist) -> list[list[float]]:
    """``[far, τ]`` points: τ is the distance within which a fraction ``far`` of impostor pairs fall."""
    d = np.sort(np.asarray(impostor_dist, dtype=np.float64))
    points = []
    for far in FAR_GRID:
        below = int(np.floor(far * len(d)))
        if below < MIN_BELOW:
            break
        points.append([far, float(d[below - 1])])
    return points


def quality_floor(quality, reject: float = QUALITY_REJECT) -> float:
    """The quality below which a face is not named: the ``reject`` quantile of ordinary photos' quality."""
    q = np.asarray(quality, dtype=np.float64)
    if q.size == 0 or not np.isfinite(q).all() or not 0.0 <= reject < 1.0:
        raise FacesearchError("quality calibration needs finite ratings and 0 <= reject < 1")
    return round(float(np.quantile(q, reject)), 4)


def calibrate(dist, same, duplicate_dist=None, emb=None, labels=None, groups=None, quality=None) -> dict:
    """The policy's numbers from labelled pairs (and, optionally, photo-vs-degraded-copy distances).

    Returns config fields: ``tau``, ``tau_far1e3``, ``tau_far1e4`` (None where the
    pairs cannot measure it), ``tau_dedupe`` (with ``duplicate_dist``) and
    ``calibration`` (the FAR curve, the pair counts and, given the photos' ``emb``
    and ``labels`` (and ``groups``), the :func:`identification_curve`; given those photos'
    ``quality``, the :func:`quality_floor`).
    """
    d, s = check_pairs(dist, same)
    _, tau = eer(d, s)
    n_imp = int((~s).sum())
    out = {"tau": round(tau, 4),
           "tau_far1e3": round(tar_at_far(d, s, 1e-3)[1], 4) if n_imp * 1e-3 >= MIN_BELOW else None,
           "tau_far1e4": round(tar_at_far(d, s, 1e-4)[1], 4) if n_imp * 1e-4 >= MIN_BELOW else None,
           "calibration": {"far_curve": far_curve(d[~s]), "n_genuine": int(s.sum()), "n_impostor": n_imp}}
    if emb is not None:
        out["calibration"]["identification"] = identification_curve(emb, labels, groups)
    if quality is not None:
        out["calibration"]["quality_min"] = quality_floor(quality)
        out["calibration"]["quality_reject"] = QUALITY_REJECT
    if duplicate_dist is not None:
        # Near-duplicates: 99 % of degraded copies, but never as loose as the closest 1 % of
        # different photos of one person (those are not duplicates).
        out["tau_dedupe"] = round(float(min(np.percentile(duplicate_dist, 99), np.percentile(d[s], 1))), 4)
    return out


IDENT_SIZES = (1, 3, 10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000)
IDENT_FPIRS = (0.01, 0.001)
_TAU_GRID = np.linspace(0.0, MAX_TAU, 2001)


def identification_curve(emb: np.ndarray, labels, groups=None) -> dict:
    """``{fpir: [[N, τ], ...]}``: the largest τ at which a stranger is named at most ``fpir`` of the time
    against a gallery of ``N`` faces of other people, measured per probe on labelled photos.

    Each photo is a stranger to every other person of its group (a dev set: people are only
    compared within the set they were photographed in). With ``F_p(τ)`` the share of those
    other-person faces within τ of photo ``p``, a gallery of N faces names ``p`` with chance
    ``1 - (1 - F_p(τ))^N``; FPIR is its mean over photos. Unlike one pooled FAR this keeps
    "generic-looking" photos (close to many people) apart from the rest, so it neither
    under- nor over-counts them.
    """
    labels = np.asarray(labels)
    groups = np.zeros(len(labels), int) if groups is None else np.asarray(groups)
    ecdf = np.concatenate([_impostor_ecdf(emb[groups == g], labels[groups == g]) for g in np.unique(groups)])
    out = {}
    for fpir in IDENT_FPIRS:
        points = []
        for n in IDENT_SIZES:
            named = (1.0 - (1.0 - ecdf) ** n).mean(axis=0)  # FPIR at each τ of the grid, non-decreasing
            k = int(np.searchsorted(named, fpir, side="right")) - 1  # last grid τ within the target
            points.append([n, float(_TAU_GRID[max(k, 0)])])
        out[str(fpir)] = points
    return out


def _impostor_ecdf(emb: np.ndarray, labels: np.ndarray, chunk: int = 512) -> np.ndarray:
    """(photos, grid) share of each photo's other-person faces within each τ of the grid."""
    e = np.asarray(emb, np.float64)
    rows = []
    for a in range(0, len(e), chunk):
        d = np.sqrt(np.clip(2.0 - 2.0 * e[a:a + chunk] @ e.T, 0.0, None))  # unit vectors
        other = labels[a:a + chunk, None] != labels[None, :]
        for drow, orow in zip(d, other):
            imp = np.sort(drow[orow])
            rows.append(np.searchsorted(imp, _TAU_GRID, side="right") / max(len(imp), 1))
    return np.array(rows)


@dataclass(frozen=True)
class TauPolicy:
    """A model's calibrated thresholds (from an index manifest's or a weights file's config)."""

    verification: float | None = None
    far1e3: float | None = None
    far1e4: float | None = None
    dedupe: float | None = None
    curve: tuple[tuple[float, float], ...] = ()  # (far, τ), loosest first
    ident: tuple[tuple[float, tuple[tuple[int, float], ...]], ...] = ()  # (fpir, ((N, τ), ...))
    quality_min: float | None = None  # faces rated below are not named (None: no gate)
    people_tau: float | None = None  # clustering τ (calibrated; None: the FAR 1e-3 τ)

    @classmethod
    def from_config(cls, config) -> "TauPolicy":
        """From an :class:`EmbedderConfig` or its dict."""
        c = config if isinstance(config, dict) else config.to_dict()
        cal = c.get("calibration") or {}
        curve = tuple((float(f), float(t)) for f, t in cal.get("far_curve", []))
        ident = tuple((float(f), tuple((int(n), float(t)) for n, t in pts))
                      for f, pts in (cal.get("identification") or {}).items())
        return cls(c.get("tau"), c.get("tau_far1e3"), c.get("tau_far1e4"), c.get("tau_dedupe"), curve, ident,
                   cal.get("quality_min"), c.get("tau_people"))

    def can_name(self, quality: float | None) -> bool:
        """Whether a face of this quality may be named (always, without a rating or a gate)."""
        return quality is None or self.quality_min is None or quality >= self.quality_min

    def far_at(self, d: float) -> float | None:
        """Fraction of impostor pairs within distance ``d``, log-interpolated on the curve.

        Clamped to the measured range: below the smallest stored τ it is the smallest
        measured FAR (an upper bound), above the loosest it is that FAR (a lower bound).
        None without a curve.
        """
        if not self.curve:
            return None
        log_far, taus = self._axes()
        return float(10 ** np.interp(d, taus, log_far))

    def below_curve(self, d: float) -> bool:
        """Closer than the strictest calibrated point: :meth:`far_at` is then an upper bound."""
        return bool(self.curve) and d < self.curve[-1][1]

    def tau_for_far(self, far: float) -> float | None:
        """The τ at which a fraction ``far`` of impostor pairs is accepted (clamped to the curve)."""
        if not self.curve:
            return None
        log_far, taus = self._axes()
        return float(np.interp(np.log10(max(far, 1e-300)), log_far, taus))

    def _axes(self) -> tuple[np.ndarray, np.ndarray]:
        # The curve is stored loosest first; both axes ascend from the strictest point.
        return np.log10([f for f, _ in self.curve][::-1]), np.array([t for _, t in self.curve][::-1])

    def identification(self, gallery_size: int, fpir: float = DEFAULT_FPIR) -> tuple[float, str]:
        """``(τ, source)`` for naming people against ``gallery_size`` enrolled faces at a target FPIR.

        From the calibrated identification curve (interpolated in log N); without one, from
        the FAR curve assuming independent comparisons (``FPIR = 1 - (1 - FAR)^N``, stricter);
        without that, the model's FAR 1e-4 / 1e-3 / EER τ. ``source`` says which.
        """
        n = max(int(gallery_size), 1)
        points = dict(self.ident).get(fpir)
        if points:
            sizes, taus = np.log10([p[0] for p in points]), np.array([p[1] for p in points])
            beyond = " (beyond the calibrated sizes: τ held there)" if n > points[-1][0] else ""
            return (float(np.interp(np.log10(n), sizes, taus)),
                    f"identification τ for FPIR {fpir:.1%} over {n} enrolled faces{beyond}".replace(".0%", "%"))
        far = 1.0 - (1.0 - fpir) ** (1.0 / n)  # per-comparison FAR that gives this FPIR over n faces
        tau = self.tau_for_far(far)
        if tau is not None:
            return tau, (f"identification τ for FPIR {fpir:.1%} over {n} enrolled faces, "
                         "from the FAR curve (independent comparisons)").replace(".0%", "%")
        for value, name in ((self.far1e4, "FAR 1e-4"), (self.far1e3, "FAR 1e-3"), (self.verification, "EER")):
            if value is not None:
                return value, f"the model's {name} τ (no identification calibration)"
        raise FacesearchError("the index's model has no calibrated τ",
                              hint="pass --tau, or calibrate the weights (tools/calibrate.py) and rebuild")

    def people(self) -> tuple[float, str]:
        """``(τ, source)`` for clustering faces into people (``bench/people.py``): faces are linked
        to their nearest faces within it, and Chinese Whispers groups them. The model's calibrated
        clustering τ (:func:`facesearch.people.cluster.people_tau`), else its strict FAR 1e-3 τ
        (models calibrated before)."""
        if self.people_tau is not None:
            return self.people_tau, "Chinese Whispers on neighbours within the model's clustering τ (chosen on dev)"
        if self.far1e3 is None:
            raise FacesearchError("the index's model has no calibrated τ for clustering people",
                                  hint="calibrate the weights (tools/calibrate.py) and rebuild the index")
        return self.far1e3, "Chinese Whispers on neighbours within the model's FAR 1e-3 τ"

    def duplicates(self) -> tuple[float, str]:
        """``(τ, source)`` for near-duplicate detection."""
        if self.dedupe is not None:
            return self.dedupe, "the model's calibrated near-duplicate τ"
        if self.far1e4 is not None or self.far1e3 is not None:
            return (self.far1e4 or self.far1e3), "the model's strict verification τ (no dedupe calibration)"
        raise FacesearchError("the index's model has no calibrated near-duplicate τ", hint="pass --tau")

    def looseness_warning(self, tau: float) -> str | None:
        """A warning when ``tau`` is looser than the verification τ, with the FAR it implies."""
        if self.verification is None or tau <= self.verification:
            return None
        return (f"τ {tau:g} is looser than the model's verification τ {self.verification:g}: "
                f"{self._share(tau)} of pairs of different people fall within it")

    def dedupe_warning(self, tau: float) -> str | None:
        """A warning when a dedupe ``tau`` is looser than the near-duplicate τ, with the FAR it implies."""
        if self.dedupe is None or tau <= self.dedupe:
            return self.looseness_warning(tau)
        return (f"τ {tau:g} is looser than the model's near-duplicate τ {self.dedupe:g}: it also groups different "
                f"photos of one person, and {self._share(tau)} of pairs of different people fall within it")

    def _share(self, tau: float) -> str:
        far = self.far_at(tau)
        if far is None:
            return "an unmeasured share"
        if tau > self.curve[0][1]:  # beyond the loosest measured point: a lower bound
            return f"more than {far:.0%}"
        return f"about {far:.0%}" if far >= 0.01 else f"about {far:.0e}"


def check_tau(tau: float) -> float:
    """Validate a user's τ: an L2 distance between unit vectors, so 0 < τ ≤ 2."""
    if not (0.0 < float(tau) <= MAX_TAU):  # also refuses NaN
        raise ValueError(f"{float(tau)} is not in 0 < tau <= {MAX_TAU:g} (an L2 distance between unit vectors)")
    return float(tau)


GIVEN = "--tau"  # the τ source of a user's explicit τ


def tau_or_policy(tau: float | None, policy_tau: Callable[[], tuple[float, str]]) -> tuple[float, str]:
    """``(τ, source)`` a command uses: the user's explicit ``tau`` overrides the policy's, validated
    by :func:`check_tau` (source :data:`GIVEN`, ``"--tau"``); without one, ``policy_tau()``, a
    :class:`TauPolicy` method such as :meth:`TauPolicy.duplicates`, is asked (and may refuse)."""
    if tau is None:
        return policy_tau()
    return check_tau(tau), GIVEN
