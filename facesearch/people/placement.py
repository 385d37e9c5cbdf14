"""Which face of a photo a name given to the whole photo means (the one home of that rule).

A name given to a photo (its folder's name, ``label PATH NAME``, ``enroll``, an upload's label)
names one person, not everyone in it. :func:`choose_face` picks the face:

1. the photo's only face;
2. else the face that agrees with the other faces of that name: each other photo given the
   name in the same batch, and each face already carrying it in the index, is one *vote* for every
   face of this photo within the model's verification τ of it (any of that photo's faces;
   :func:`facesearch.people.labels.placement_tau`);
   the face with the most votes wins if more than half the votes possible are its (:data:`MAJORITY`:
   the person is in every photo of the name, a bystander in some; where the person was not
   detected, a bystander seen in two of six photos must not take the name) and it has at least
   :data:`MARGIN` more than any other face of the photo (a tie is no evidence), and it agrees with
   at least one of them within the stricter ``strict_tau`` (a look-alike stays loosely alike);
3. else none: the name is reported as not placed, never guessed.

``--face N`` bypasses the rule: faces are numbered 1, 2, … from left to right (:func:`left_to_right`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facesearch.store.vectors.exact import distances

MARGIN = 1  # votes the chosen face needs over the photo's next face
MAJORITY = 0.5  # share of the other photos and named faces the chosen face must agree with (strictly more)


@dataclass(frozen=True)
class Choice:
    """The chosen face's index among the candidates (None: none) and why, in words."""

    face: int | None
    reason: str


def choose_face(cands: np.ndarray, photos: Sequence[np.ndarray], faces: np.ndarray, tau: float | None,
                strict_tau: float | None = None) -> Choice:
    """The candidate face (rows of ``cands``) a photo's name means.

    ``photos``: the faces of each *other* photo given that name (one vote per photo);
    ``faces``: faces already carrying the name (one vote each); ``tau``: the verification τ
    (None: no calibrated τ, so only an only face is placed); ``strict_tau``: the τ one of those
    agreements must also meet (None: no such check).
    """
    if len(cands) == 0:
        return Choice(None, "no face")
    if len(cands) == 1:
        return Choice(0, "the only face")
    if tau is None:
        return Choice(None, "the model has no verification τ to compare faces with")
    votes = support(cands, photos, faces, tau)
    order = np.argsort(-votes, kind="stable")
    best, second = int(votes[order[0]]), int(votes[order[1]])
    possible = len(photos) + len(faces)
    if best == 0:
        return Choice(None, "none of its faces looks like the other faces of that name")
    if best <= MAJORITY * possible:
        return Choice(None, f"its best face looks like only {best} of {possible} other faces or photos of that name")
    if best - second < MARGIN:
        return Choice(None, f"{np.sum(votes == best)} of its faces look equally like the other faces of that name")
    if strict_tau is not None and not support(cands[order[:1]], photos, faces, strict_tau)[0]:
        return Choice(None, "its best face is only loosely like the other faces of that name")
    return Choice(int(order[0]), f"looks like {best} of {possible} other faces or photos of that name")


def support(cands: np.ndarray, photos: Sequence[np.ndarray], faces: np.ndarray, tau: float) -> np.ndarray:
    """Votes of each candidate: other photos with a face within ``tau`` of it, plus named faces within ``tau``."""
    votes = np.zeros(len(cands), np.int64)
    for other in photos:
        if len(other):
            votes += (distances(cands, other) <= tau).any(axis=1)
    if len(faces):
        votes += (distances(cands, faces) <= tau).sum(axis=1)
    return votes


def left_to_right(boxes: Sequence[Sequence[float]]) -> list[int]:
    """Face indexes in the order ``--face N`` counts them: by the box's left edge, then its top."""
    return sorted(range(len(boxes)), key=lambda k: (boxes[k][0], boxes[k][1]))


def face_at(boxes: Sequence[Sequence[float]], position: int) -> int | None:
    """The index of face ``position`` (1-based, left to right); None when the photo has fewer faces."""
    order = left_to_right(boxes)
    return order[position - 1] if 1 <= position <= len(order) else None
