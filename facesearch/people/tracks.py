"""Clips' constraints on people: a track's faces are one person, two tracks on screen at once are two.

Clustering runs on *nodes*: a photo's face is a node of its own, a clip's track (its few stored faces)
is one node (must-link: the faces of one appearance cannot be split between people). Photos keep
their cannot-link (faces of one photo: ``groups``); a clip's faces are not all kept apart, as a
photo's are (one person appears in many tracks), only the pairs of tracks whose times overlap are
(``apart``). Each face then takes its node's label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Nodes:
    """Faces folded into nodes: ``of[k]`` is face k's node; per node its group, pin and "not" set;
    the pairs of nodes never one person."""

    of: np.ndarray
    groups: np.ndarray
    pinned: np.ndarray
    forbid: list
    apart: list

    @property
    def n(self) -> int:
        return len(self.groups)

    def edges(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The face graph's edges as node edges (a track's inner edges dropped)."""
        a, b = self.of[i], self.of[j]
        keep = a != b
        return a[keep], b[keep]

    def face_labels(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(labels)[self.of]


def fold(face_ids: np.ndarray, file_ids: np.ndarray, pinned: np.ndarray, forbid: list, moments: dict) -> Nodes:
    """Nodes for the faces ``face_ids`` (with their files, pins and "not" sets) given the clips' ``moments``."""
    of = np.empty(len(face_ids), np.int64)
    keys: dict[tuple, int] = {}
    spans: dict[int, tuple[int, float, float]] = {}  # node -> (file, start, end) of a clip's track
    for k, (fid, file_id) in enumerate(zip(face_ids.tolist(), file_ids.tolist())):
        m = moments.get(fid)
        key = ("face", fid) if m is None else ("track", file_id, m.track)
        if key not in keys:
            keys[key] = len(keys)
            if m is not None:
                spans[keys[key]] = (file_id, m.start_s, m.end_s)
        of[k] = keys[key]
    n = len(keys)
    groups = np.empty(n, np.int64)
    groups[of] = file_ids
    lone = np.array(sorted(spans), np.int64)  # a track shares no group: its file's other tracks may be it
    groups[lone] = -1 - lone
    return Nodes(of, groups, _node_pins(of, n, pinned), _node_forbid(of, n, forbid), _overlapping(spans))


def _node_pins(of: np.ndarray, n: int, pinned: np.ndarray) -> np.ndarray:
    """A node's pin: the first pinned face's person (a track's faces were pinned together)."""
    out = np.full(n, -1, np.int64)
    for k in np.flatnonzero(np.asarray(pinned) >= 0)[::-1]:
        out[of[k]] = pinned[k]
    return out


def _node_forbid(of: np.ndarray, n: int, forbid: list) -> list:
    out: list[set] = [set() for _ in range(n)]
    for k, f in enumerate(forbid):
        out[of[k]] |= set(f or ())
    return out


def _overlapping(spans: dict[int, tuple[int, float, float]]) -> list[tuple[int, int]]:
    """Pairs of tracks of one clip whose times overlap: on screen together, so two people."""
    by_file: dict[int, list[tuple[float, float, int]]] = {}
    for node, (file_id, a, b) in spans.items():
        by_file.setdefault(file_id, []).append((a, b, node))
    pairs = []
    for tracks in by_file.values():
        tracks.sort()
        for x, (a, b, u) in enumerate(tracks):
            for c, _, v in tracks[x + 1:]:
                if c > b:
                    break
                pairs.append((u, v))
    return pairs
