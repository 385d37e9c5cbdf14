"""What each YuNet pass buys (issue 38): ``bench/detectors.py --passes``.

For the detector as issue 27 left it and today's (after a whole min-face pass one view 6x smaller,
not 480 px long; the min-face pass skips the inside of a large face the later views found), on the
same photos, taking turns per photo:

* per photo: YuNet network calls, the megapixels fed to it (each image padded to 32, as YuNet pads
  it), ms, faces found and false faces;
* per pass (the min-face pass, middle views, the last view), each run alone: calls, megapixels, ms,
  the faces it finds and the faces *only* it finds (a face no other pass of the plan finds);
* the cost curve: ms per megapixel of one YuNet call by image size, and two equal tiles in one call
  against two calls (whether batching tiles pays on this CPU).

Photos: the web race's (``bench/_web.py``: 800x600-1280x960, 1-4 faces 40-160 px), smaller web-sized
ones (500x375, 640x480: the held-out web photos' median long side is ~500), 1024x768 crowds of 16-40
px faces, 1600x1200 groups of 16-200 px faces, and close-ups at 400-3000 px. Detection only: dlib's
landmark step is the same per face for both plans (``bench/stages.py`` times it).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

import _scales as S
import _web
import groups
from facesearch.faces import tiling
from facesearch.faces.face import select_faces
from facesearch.faces.tiling import MAX_TILE_PIXELS, Pass, YuNetFaceDetector

SMALL_WEB = ((500, 375), (640, 480))
def issue27_plan(hw, min_face, max_side, min_visible, view_side, pass_ratio) -> list[Pass]:
    """``tiling.scale_plan`` as issue 27 left it: views evenly spaced down to ``view_side``, also
    after a whole first pass."""
    long_side = max(hw)
    s = min_visible / max(min_face, 1)
    tiled = long_side * s > max_side
    if tiled:
        s = min(s, math.sqrt(MAX_TILE_PIXELS / (hw[0] * hw[1])))
    plan, end = [Pass(s, tiled)], view_side / long_side
    while s > end * (1 + 1e-9):
        steps = max(1, math.ceil(math.log(s / end) / math.log(pass_ratio) - 1e-9))
        s = min(s / (s / end) ** (1 / steps), max_side / long_side)
        plan.append(Pass(s, False))
    return plan


@dataclass
class Issue27Detector(YuNetFaceDetector):
    """The detector as issue 27 left it: its plan, and a min-face pass that searched inside the
    faces the later views found."""

    skip_found: bool = False
    cascade: bool = False

    def plan(self, hw: tuple[int, int]) -> list[Pass]:
        return issue27_plan(hw, self.min_face, self.max_side, self.min_visible, self.view_side, self.pass_ratio)


class SmallViews(YuNetFaceDetector):
    """Measured, not adopted: each later view the full ``pass_ratio`` smaller also after tiles
    (today's plan does that only after a whole first pass)."""

    def plan(self, hw: tuple[int, int]) -> list[Pass]:
        plan = super().plan(hw)[:1]
        while max(hw) * plan[-1].scale > self.view_side * (1 + 1e-9):
            plan.append(Pass(min(plan[-1].scale / self.pass_ratio, self.max_side / max(hw)), False))
        return plan


def detectors() -> dict:
    return {"issue 27": Issue27Detector(), "issue 38, whole min-face pass": YuNetFaceDetector(cascade=False),
            "issue 38, min-face pass as a cascade": YuNetFaceDetector(),
            "issue 38, smaller views after tiles too (not adopted)": SmallViews()}


class Counting:
    """YuNet behind a meter: network calls (one per padded size in a call) and padded pixels."""

    def __init__(self, model):
        self.model, self.calls, self.pixels = model, 0, 0

    def detect_batch(self, images, *args, **kwargs):
        sizes = [(-(-im.shape[0] // 32) * 32, -(-im.shape[1] // 32) * 32) for im in images]
        self.calls += len(set(sizes))
        self.pixels += sum(h * w for h, w in sizes)
        return self.model.detect_batch(images, *args, **kwargs)


@contextmanager
def metered():
    """tiling's YuNet replaced by a :class:`Counting` one for the duration."""
    real = tiling.yunet_model
    meter = Counting(real())
    tiling.yunet_model = lambda: meter
    try:
        yield meter
    finally:
        tiling.yunet_model = real


def photo_sets(sources: list, bgs: dict, quick: bool) -> dict[str, list]:
    k = 1 if quick else 4
    sets = {"web": [ph for j, size in enumerate(_web.SIZES) for ph in S.crowds(
        sources, bgs, k, size, _web.FACE_WIDTHS, _web.FACES_PER_PHOTO, seed=40 + j)]}
    sets["web_small"] = [ph for j, size in enumerate(SMALL_WEB) for ph in S.crowds(
        sources, bgs, k + k // 2, size, (30, 120), _web.FACES_PER_PHOTO, seed=50 + j)]
    sets["crowd_1024"] = S.crowds(sources, bgs, k, (1024, 768), (16, 40), (12, 30), seed=11)
    sets["group_1600"] = S.crowds(sources, bgs, max(1, k // 2), (1600, 1200), (16, 200), (6, 20), seed=12)
    sets["closeups"] = [ph for side in (400, 1000, 2200, 3000) for ph in S.closeups(sources[:2 if quick else 3], side,
                                                                                      seed=side)]
    return sets


def _boxes(det, rows: np.ndarray) -> np.ndarray:
    faces = select_faces([tiling._yunet_face(r) for r in rows], det.min_face * det.min_face_slack, det.policy)
    return np.array([f.box for f in faces], np.float64).reshape(-1, 4)


def role(i: int, n: int) -> str:
    return "min-face pass" if i == 0 else "last view" if i == n - 1 else "middle view"


def weigh_passes(det, photo) -> dict:
    """Each pass of ``det``'s plan on ``photo`` (the min-face pass given the others' rows, as
    ``detect`` runs it): calls, MP, ms, the faces it finds (a boolean per true face), false faces."""
    plan, out, img = det.plan(photo.image.shape[:2]), {}, photo.image
    later = [det.pass_rows(img, plan, i, det.score_threshold) for i in range(1, len(plan))]
    for i in range(len(plan)):
        with metered() as m:
            t0 = time.perf_counter()
            rows = det.pass_rows(img, plan, i, det.score_threshold) if i else det.min_face_rows(
                img, plan, det.score_threshold, later)
            ms = 1000 * (time.perf_counter() - t0)
        hit, fp = groups.match(photo.boxes, _boxes(det, rows))
        out[role(i, len(plan))] = {"calls": m.calls, "mp": m.pixels / 1e6, "ms": ms, "hit": hit, "fp": fp}
    return out


def whole(det, photo) -> dict:
    """``det.detect`` on ``photo``: calls, MP, ms, faces found, false faces."""
    with metered() as m:
        t0 = time.perf_counter()
        faces = det.detect(photo.image)
        ms = 1000 * (time.perf_counter() - t0)
    hit, fp = groups.match(photo.boxes, np.array([f.box for f in faces], np.float64).reshape(-1, 4))
    return {"calls": m.calls, "mp": m.pixels / 1e6, "ms": ms, "found": int(hit.sum()), "fp": fp}


def compare(dets: dict, photos: list, reps: int) -> dict:
    """Both plans on ``photos``, taking turns on each: the whole detection (best ms of ``reps``)
    and each pass alone."""
    rows = {name: {"whole": [], "passes": []} for name in dets}
    for photo in photos:
        best = {}
        for _ in range(reps):
            for name, det in dets.items():
                r = whole(det, photo)
                best[name] = min(best.get(name, r), r, key=lambda x: x["ms"])
        for name, det in dets.items():
            rows[name]["whole"].append(best[name])
            rows[name]["passes"].append(weigh_passes(det, photo))
    faces = sum(len(ph.boxes) for ph in photos)
    return {name: summarize(r["whole"], r["passes"], faces) for name, r in rows.items()}


def summarize(wholes: list[dict], passes: list[dict], faces: int) -> dict:
    n = len(wholes)
    out = {"photos": n, "faces": faces, **{f"{k}_per_photo": round(sum(w[k] for w in wholes) / n, 3)
                                           for k in ("calls", "mp", "ms")},
           "recall": round(sum(w["found"] for w in wholes) / max(faces, 1), 4),
           "false_positives": sum(w["fp"] for w in wholes), "passes": {}}
    for name in ("min-face pass", "middle view", "last view"):
        mine = [(k, p[name]) for k, p in enumerate(passes) if name in p]
        if not mine:
            continue
        only = sum(int((p["hit"] & ~_others(passes[k], name)).sum()) for k, p in mine)
        out["passes"][name] = {"photos": len(mine), "found": sum(int(p["hit"].sum()) for _, p in mine),
                               "found_only_here": only, "false_positives": sum(p["fp"] for _, p in mine),
                               **{f"{k}_per_photo": round(sum(p[k] for _, p in mine) / len(mine), 3)
                                  for k in ("calls", "mp", "ms")}}
    return out


def _others(per_pass: dict, name: str) -> np.ndarray:
    hits = [p["hit"] for k, p in per_pass.items() if k != name]
    return np.any(hits, axis=0) if hits else np.zeros_like(per_pass[name]["hit"])


def cost_curve(reps: int = 5) -> dict:
    """ms per megapixel of one YuNet call by image size (noise images: the network's cost does
    not depend on what it sees), and two equal 768 px tiles in one call against two calls."""
    model, rng = tiling.yunet_model(), np.random.default_rng(0)

    def best(images):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model.detect_batch(images, tiling.YUNET_SCORE, tiling.YUNET_NMS)
            times.append(time.perf_counter() - t0)
        return 1000 * min(times)

    curve = {}
    for w, h in ((160, 128), (480, 352), (1024, 768), (1536, 1152), (2048, 1536), (3072, 2304)):
        ms = best([rng.integers(0, 255, (h, w, 3), dtype=np.uint8)])
        curve[f"{w}x{h}"] = {"ms": round(ms, 1), "ms_per_mp": round(ms / (w * h / 1e6), 1)}
    tile = rng.integers(0, 255, (768, 768, 3), dtype=np.uint8)
    return {"by_size": curve, "two_768_tiles_ms": {"one_call": round(best([tile, tile]), 1),
                                                  "two_calls": round(2 * best([tile]), 1)}}


def print_report(results: dict) -> None:
    print(f"{'set':11s} {'plan':44s} {'photos':>6s} {'calls':>6s} {'MP':>7s} {'ms':>8s} {'recall':>7s} {'FP':>3s}"
          "   per pass: calls/MP per photo, found (only here), FP")
    for set_name, by_plan in results["sets"].items():
        for name, r in by_plan.items():
            per = "; ".join(f"{k}: {p['calls_per_photo']:.1f}/{p['mp_per_photo']:.2f} {p['found']} "
                            f"({p['found_only_here']}) fp {p['false_positives']}" for k, p in r["passes"].items())
            print(f"{set_name:11s} {name:44s} {r['photos']:6d} {r['calls_per_photo']:6.2f} {r['mp_per_photo']:7.3f} "
                  f"{r['ms_per_photo']:8.1f} {100 * r['recall']:6.1f}% {r['false_positives']:3d}   {per}")
    print("cost curve:", results["cost_curve"])
