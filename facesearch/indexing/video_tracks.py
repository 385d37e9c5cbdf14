"""Linking the faces of a clip's sampled frames into tracks: one track is one appearance of one person.

Plain arrays in, tracks out (no decoding, no model). A face joins the track it continues: the nearest
(by embedding) of the tracks seen within ``max_gap_s`` whose last box it overlaps (IoU ≥ ``min_iou``)
within the model's verification τ, or, across a scene cut or a jump, within the strict FAR 1e-3 τ
alone. Overlap alone never links: two people crossing swap boxes, not faces. Each track keeps only its
``keep`` best faces by the model's own rating (the quality gate ``query`` names faces by), so a long
appearance costs a few rows, not one per frame, and memory stays bounded whatever the clip's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facesearch.faces.face import Face, iou


@dataclass
class Seen:
    """One face on one sampled frame, embedded."""

    time_s: float
    face: Face
    embedding: np.ndarray
    quality: float  # the model's rating of the face; the detector's score x side for a model without one


@dataclass
class Track:
    """One appearance: when it starts and ends (sampled times) and its best faces, best first."""

    id: int
    start_s: float
    end_s: float
    last: Seen
    best: list[Seen] = field(default_factory=list)
    seen: int = 0


@dataclass(frozen=True)
class LinkRule:
    """How faces are linked: τ with overlap, τ without, the longest gap, the overlap, faces kept, the gate."""

    tau: float
    tau_strict: float
    max_gap_s: float = 1.5
    min_iou: float = 0.3
    keep: int = 3
    quality_min: float | None = None


class Tracker:
    """Feed it each sampled frame's faces in time order; it hands back the tracks that ended."""

    def __init__(self, rule: LinkRule):
        self.rule = rule
        self.active: list[Track] = []
        self.next_id = 0

    def update(self, time_s: float, faces: list[Seen], cut: bool = False) -> list[Track]:
        """Link ``faces`` (seen at ``time_s``) to the live tracks; the tracks that ended before them."""
        ended = [t for t in self.active if time_s - t.end_s > self.rule.max_gap_s]
        self.active = [t for t in self.active if t not in ended]
        free = set(range(len(faces)))
        for k, t in self._pairs(faces, cut):
            if k in free and t.end_s < time_s:  # one face per track per frame
                free.discard(k)
                _extend(t, faces[k], self.rule)
        for k in sorted(free):
            self.active.append(self._start(faces[k]))
        return ended

    def finish(self) -> list[Track]:
        """The tracks still live at the clip's end."""
        out, self.active = self.active, []
        return out

    def _pairs(self, faces: list[Seen], cut: bool) -> list[tuple[int, Track]]:
        """Allowed (face, track) links, best first."""
        cand = []
        for k, f in enumerate(faces):
            for t in self.active:
                d = float(np.linalg.norm(f.embedding - t.last.embedding))
                overlap = 0.0 if cut else iou(f.face.box, t.last.face.box)
                if d <= self.rule.tau_strict or (overlap >= self.rule.min_iou and d <= self.rule.tau):
                    cand.append((d - overlap, k, t))
        cand.sort(key=lambda c: c[0])
        return [(k, t) for _, k, t in cand]

    def _start(self, f: Seen) -> Track:
        t = Track(self.next_id, f.time_s, f.time_s, f)
        self.next_id += 1
        _extend(t, f, self.rule)
        return t


def _extend(t: Track, f: Seen, rule: LinkRule) -> None:
    t.last, t.end_s, t.seen = f, max(t.end_s, f.time_s), t.seen + 1
    t.best = sorted(t.best + [f], key=lambda s: -s.quality)[: rule.keep]


def kept_faces(t: Track, rule: LinkRule) -> list[Seen]:
    """The faces a track stores: its best ones through the quality gate, else its single best (a track
    the model cannot read is still one appearance, found but not named)."""
    ok = [s for s in t.best if rule.quality_min is None or s.quality >= rule.quality_min]
    return ok or t.best[:1]


def moments(t: Track, faces: list[Seen]) -> list[dict[str, Any]]:
    """Per stored face of ``t``: its time, its track, the track's start and end."""
    return [{"time_s": s.time_s, "track": t.id, "start_s": t.start_s, "end_s": t.end_s} for s in faces]
