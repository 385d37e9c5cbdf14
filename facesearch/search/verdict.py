"""Answers in words: what a face's distance means, said the way a person would say it.

The one place where the calibrated τ policy (:class:`facesearch.eval.tau.TauPolicy`) becomes words.
Every view (the CLI table, ``--json``, the HTML reports, the web page) shows these words and keeps the
raw distance, τ and FAR behind ``--verbose`` or a details toggle.

The rule, per face of a query:

- **very likely** the same person: named (within the identification τ), and also within the model's
  strict verification τ at FAR 1e-4 (without that calibration point: a FAR at its distance of at most
  1e-4), i.e. at most one pair of different people in 10,000 is that alike;
- **likely** the same person: named, but not that close;
- **unknown**: not named (beyond τ, nobody named near, or a face too hard to read).

The error rate is the FAR at the face's distance, said as "about 1 in N pairs of different people
look this alike" (N rounded to one significant figure; "fewer than" when the distance is closer
than calibration could measure).
"""

from __future__ import annotations

from facesearch.eval.tau import TauPolicy

VERY_LIKELY_FAR = 1e-4  # the strict operating point: one impostor pair in 10,000
VERY_LIKELY, LIKELY, UNKNOWN = "very likely", "likely", "unknown"


def face_verdict(face: dict, policy: TauPolicy) -> dict:
    """The words for one face of a ``query`` answer: ``{"verdict", "verdict_text", "error_rate"}``.

    ``face`` is the library's face dict (``identity``, ``candidate``, ``distance``, ``far``,
    ``far_is_bound``, ``quality_ok``); nothing in it is changed.
    """
    level = _level(face, policy)
    return {"verdict": level, "verdict_text": _sentence(face, level),
            "error_rate": error_rate(face.get("far"), bool(face.get("far_is_bound")))}


def _level(face: dict, policy: TauPolicy) -> str:
    if not face.get("identity"):
        return UNKNOWN
    d, far = face.get("distance"), face.get("far")
    if policy.far1e4 is not None:
        strict = d is not None and d <= policy.far1e4
    else:
        strict = far is not None and far <= VERY_LIKELY_FAR
    return VERY_LIKELY if strict else LIKELY


def _sentence(face: dict, level: str) -> str:
    if level != UNKNOWN:
        return f"{face['identity']} — {level} the same person"
    if face.get("quality_ok") is False:
        return "unknown — the face is too hard to read to name"
    if face.get("candidate"):
        return f"unknown — looks most like {face['candidate']}, but not enough to say"
    return "unknown — nobody named looks alike"


def match_verdict(distance: float, policy: TauPolicy, tau_same: float) -> str:
    """One match's words: ``very likely`` / ``likely`` the same person as the query face, else ``""``."""
    if distance > tau_same:
        return ""
    strict = policy.far1e4 if policy.far1e4 is not None else policy.tau_for_far(VERY_LIKELY_FAR)
    return VERY_LIKELY if strict is not None and distance <= strict else LIKELY


def error_rate(far: float | None, bound: bool = False) -> str:
    """A FAR in plain language: ``about 1 in 10,000 pairs of different people look this alike``."""
    if far is None:
        return "no calibration to say how often strangers look this alike"
    if far >= 0.5:
        return "most pairs of different people look at least this alike"
    n = 1.0 / far
    rounded = float(f"{n:.1g}")  # one significant figure: 1/3.2e-5 → 30,000
    return f"{'fewer than' if bound else 'about'} 1 in {rounded:,.0f} pairs of different people look this alike"


def add_verdicts(answer: dict, policy: TauPolicy) -> dict:
    """Add the words to every face of a ``query`` answer (``{"results": [...], "tau_same", ...}``), in place."""
    for result in answer.get("results", []):
        for face in result.get("faces", []):
            face.update(face_verdict(face, policy))
            readable = face.get("quality_ok", True)  # an unreadable face has no "same person" hits
            for m in face.get("matches", []):
                m["verdict"] = match_verdict(m["distance"], policy, answer["tau_same"]) if readable else ""
    return answer
