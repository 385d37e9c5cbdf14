"""The min-face pass as a cascade: look coarsely, then closely only where a small face can be.

The min-face pass shows the photo so that a ``min_face`` face is 30 px (``tiling.YUNET_MIN_VISIBLE``):
1.5x its size for 20 px faces, the pass that cost most of a web photo's detection (issue 38). A
20 px face is still *seen* at 1x, only not surely: YuNet gives it a low score there. So the pass
runs first at ``COARSE`` times smaller with the score floor ``LOW``; a face that is large and sure
there is kept as found, and every other candidate gets a small window of its own at the min-face
scale, with the usual score threshold, where it is kept or dropped exactly as the full pass would
decide. Windows are cheap (~0.6 ms a 96 px call), so the cost follows the faces, not the pixels.

Measured on composites of dev faces (bench/detectors.py --scales and --passes; taking turns with
the full pass on the same photos; YuNet only): web-sized photos with 1-4 faces of 40-160 px
115-140 -> 50-65 ms, 640x480 ones 33-39 -> 22-25 ms, close-ups at 1000 px 114-125 -> 46-58 ms,
1600x1200 groups 270-370 -> 150-245 ms, 1024x768 crowds of 16-40 px faces 98-108 -> 84-93 ms.
Recall is level: 20-32 px faces 98.4 -> 98.8-99.1 % (crowds) and 92.6 -> 92.6 % (groups), 16-24 px
79 -> 81 %, and false faces on 40 face-free photos 7 -> 8 (which borderline patterns pass differs);
the 20 of --scales (up to 3000 px) 2 -> 3, with the DOUBT rule below.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BIG", "COARSE", "DOUBT", "LOW", "MIN_PIXELS", "SURE", "TOP",
           "candidates", "inside", "near", "not_parts", "windows"]

# The coarse look is this many times smaller than the min-face pass: a min_face face is 20 px
# there, where YuNet still scores most of them (crowds, 20-24 px: 98-100 % above 0.1, 62-87 %
# above 0.7). 1.25 kept the same recall for 1.4x the cost.
COARSE = 1.5
# Candidates' score floor in the coarse look. 0.2 and 0.15 lost 2-5 % of the 16-24 px faces in
# groups and crowds; 0.1 lost none, for ~2x the windows (each ~0.6 ms).
LOW = 0.1
# A coarse face at least BIG px wide (coarse px) with a score of at least SURE is kept as found;
# every other face below TOP px is a candidate. Below BIG the min-face view's landmarks are the
# better ones (the chips are cut from them). At 0.7 (the usual threshold) the coarse look kept
# false faces that the min-face view scores below it (web composites: 3 -> 8 false faces).
BIG = 60.0
SURE = 0.85
TOP = 160.0
# A coarse candidate at least BIG px wide is at a size YuNet judges well; scoring under DOUBT there,
# it is a pattern, not a face, and gets no window. On 20 face-free photos 0.25 halved the false faces
# the windows added (6 -> 3: patches scored 0.11 and 0.17 coarse, 0.72-0.74 in their window) and
# changed no face found in crowds, groups, close-ups or composites of Yale B and UMIST faces (dark,
# turned); 0.5 lost one of those Yale B / UMIST faces.
DOUBT = 0.25
# A window is the candidate's box widened by CONTEXT of its size each side, at least WINDOW_MIN px
# at the min-face scale; a face found there counts when its centre lies within its candidate's box
# widened by KEEP_PAD. A whole box of context each side found fewer small faces in groups
# (92.6 -> 90.7 %) and made crowds fall back to the full pass 16 times of 30.
CONTEXT = 0.5
WINDOW_MIN = 64
KEEP_PAD = 0.5
# A window's face whose centre lies inside a sure face (coarse-kept, or a later view's) at least PART
# times its width is a part of it: on the web race's photos such parts were 1 of its 5 extra false faces.
PART = 1.5
# Where the windows would cover more than this share of the full pass's pixels (a dense crowd),
# the full pass runs instead. A photo whose min-face pass is under MIN_PIXELS runs it whole: the
# coarse look would save less than a millisecond or two.
MAX_SHARE = 0.8
MIN_PIXELS = 250_000


def candidates(rows: np.ndarray, coarse_scale: float, sure_rows: np.ndarray, score: float,
               hole_score: float) -> tuple[np.ndarray, np.ndarray]:
    """(faces kept as found, candidates to look at closely) from the coarse look's ``rows`` (photo
    px). ``sure_rows``: faces the later views found; a candidate whose centre lies inside a sure face
    (score at least ``hole_score``) twice its width is part of that face, not a face of its own."""
    w = rows[:, 2] * coarse_scale
    kept = ((w >= BIG) & (rows[:, 14] >= SURE)) | ((w >= TOP) & (rows[:, 14] >= score))
    cand = rows[~kept & (w < TOP) & ((w < BIG) | (rows[:, 14] >= DOUBT))]
    sure = np.concatenate([rows[kept], sure_rows])
    return rows[kept], cand[~inside(cand, sure[sure[:, 14] >= hole_score], 2.0)]


def not_parts(found: np.ndarray, kept: np.ndarray, sure_rows: np.ndarray, hole_score: float) -> np.ndarray:
    """The windows' ``found`` faces less those inside a sure face PART times wider (see :func:`inside`)."""
    sure = np.concatenate([kept, sure_rows])
    return found[~inside(found, sure[sure[:, 14] >= hole_score], PART)]


def inside(rows: np.ndarray, faces: np.ndarray, ratio: float) -> np.ndarray:
    """Whether each row's centre lies inside one of ``faces`` at least ``ratio`` times its width: a
    part of that face (a face holds no smaller face), not a face of its own."""
    out = np.zeros(len(rows), bool)
    for face in faces:
        out |= near(rows, face, 0.0) & (rows[:, 2] * ratio <= face[2])
    return out


def windows(cand: np.ndarray, scale: float, hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """One (x0, y0, x1, y1) window (photo px, clipped to ``hw``) around each candidate: its box
    widened by CONTEXT each side, at least WINDOW_MIN px at ``scale``, rounded up to YuNet's 32."""
    H, W = hw
    out = []
    for x, y, w, h in cand[:, :4]:
        side = max(WINDOW_MIN, np.ceil(max(w, h) * scale * (1 + 2 * CONTEXT) / 32) * 32) / scale
        cx, cy = x + w / 2, y + h / 2
        out.append((int(max(0, round(cx - side / 2))), int(max(0, round(cy - side / 2))),
                    int(min(W, round(cx + side / 2))), int(min(H, round(cy + side / 2)))))
    return out


def near(rows: np.ndarray, box: np.ndarray, pad: float = KEEP_PAD) -> np.ndarray:
    """Whether each row's centre lies inside the (x, y, w, h) ``box`` widened by ``pad`` of its size."""
    cx, cy = rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2
    x, y, w, h = box[:4]
    return (cx > x - pad * w) & (cx < x + (1 + pad) * w) & (cy > y - pad * h) & (cy < y + (1 + pad) * h)
