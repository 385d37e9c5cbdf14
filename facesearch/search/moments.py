"""Clips among the answers: one hit per appearance, and its moment in words.

A clip stores a few faces per track (one appearance of one person, :mod:`facesearch.store.moments`);
a search finds each of them, so the hits are folded to one per track, its best (nearest) face, with
the track's start and end: ``clip.mp4 0:03.4–0:07.9``.
"""

from __future__ import annotations


def one_per_track(matches: list, moments: dict) -> list:
    """``matches`` (nearest first) with only the nearest face of each clip's track; photos' faces all kept."""
    seen, out = set(), []
    for m in matches:
        mo = moments.get(m.face_id)
        key = None if mo is None else (m.path, mo.track)
        if key is not None and key in seen:
            continue
        seen.add(key)
        out.append(m)
    return out


def moment_fields(moment) -> dict:
    """The JSON a clip's hit adds: the face's time, its track, the track's start and end (none for a photo)."""
    if moment is None:
        return {}
    return {"time_s": round(moment.time_s, 3), "start_s": round(moment.start_s, 3),
            "end_s": round(moment.end_s, 3), "track": int(moment.track)}


def clock(seconds: float) -> str:
    """``0:03.4``, ``1:02:03.0``: minutes and seconds to a tenth, hours when there are some."""
    tenths = int(round(max(seconds, 0.0) * 10))
    h, rest = divmod(tenths, 36000)
    m, t = divmod(rest, 600)
    sec = f"{t // 10:02d}.{t % 10}"
    return f"{h}:{m:02d}:{sec}" if h else f"{m}:{sec}"


def span(hit: dict) -> str:
    """``0:03.4–0:07.9`` for a clip's hit (a dict with ``start_s``/``end_s``), "" for a photo's."""
    if hit.get("start_s") is None:
        return ""
    return f"{clock(hit['start_s'])}–{clock(hit['end_s'])}"
