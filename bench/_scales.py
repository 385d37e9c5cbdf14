"""Faces at every scale (issue 27): close-ups at many photo sizes, crowds of small faces, and
face-free photos, all made from dev faces and real backgrounds (``bench/groups.py``).

* close-ups: each source crop cut tightly around its face (1.0-1.6 face widths, the face
  filling the frame as in a profile picture or an ID photo) and resized so its long side is
  400 ... 3000 px; the no-face rate per size is the issue's first symptom;
* crowds: 1024x768 photos with 12-30 faces 16-40 px wide (small faces in a crowd);
* groups: 1600x1200 photos with faces 16-200 px wide (the composite of ``bench/detectors.py``);
* face-free: the backgrounds alone at 400-3000 px, and crops of them: every detection is false.

Recall is by face width (``WIDTH_BINS``); a detection matches a face as in ``groups.match``.
"""

from __future__ import annotations

import random
import time

import cv2
import numpy as np

import groups

WIDTH_BINS = ((16, 24), (24, 32), (32, 64), (64, 256), (256, 100_000))
CLOSEUP_SIDES = (400, 700, 1000, 1300, 1600, 2200, 3000)


def bin_name(lo: int, hi: int) -> str:
    return f"{lo}-{hi}" if hi < 100_000 else f"{lo}-frame"


def closeups(sources: list, side: int, seed: int) -> list:
    """One tight crop of each source face, resized to a long side of ``side`` px."""
    rng = random.Random(seed)
    out = []
    for src in sources:
        k = rng.uniform(1.0, 1.6)
        x0, y0, x1, y1 = src.box
        w = (x1 - x0) * k
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.1 * (x1 - x0)  # dlib's box starts at the brows
        H, W = src.image.shape[:2]
        a, b = int(max(0, cx - w / 2)), int(max(0, cy - 0.6 * w))
        c, d = int(min(W, cx + w / 2)), int(min(H, cy + 0.6 * w))
        crop = src.image[b:d, a:c]
        f = side / max(crop.shape[:2])
        img = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        box = np.array([[(x0 - a) * f, (y0 - b) * f, (x1 - a) * f, (y1 - b) * f]])
        out.append(groups.GroupPhoto(np.ascontiguousarray(img), box, "closeup"))
    return out


def crowds(sources: list, bgs: dict, n: int, size: tuple[int, int], widths: tuple[int, int],
           per_photo: tuple[int, int], seed: int) -> list:
    """``groups.compose`` with faces ``widths`` px wide (its module's range, set for the call)."""
    saved = groups.MIN_FACE, groups.MAX_FACE
    groups.MIN_FACE, groups.MAX_FACE = widths
    try:
        return groups.compose(sources, bgs, n, size, per_photo=per_photo, seed=seed)
    finally:
        groups.MIN_FACE, groups.MAX_FACE = saved


def face_free(bgs: dict, seed: int) -> list[np.ndarray]:
    """The backgrounds at long sides 400-3000 and square crops of them (100-400 px)."""
    rng = random.Random(seed)
    out = []
    for k, img in enumerate(bgs.values()):
        side = CLOSEUP_SIDES[k % len(CLOSEUP_SIDES)]
        f = side / max(img.shape[:2])
        out.append(cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC))
        H, W = img.shape[:2]
        s = rng.randint(min(60, min(H, W)), min(H, W))
        x, y = rng.randrange(W - s + 1), rng.randrange(H - s + 1)
        out.append(np.ascontiguousarray(img[y:y + s, x:x + s]))
    return out


def detect_and_match(det, photos: list) -> tuple:
    """Run ``det`` on each photo and match its boxes to the truth: ``(found, widths, false positives,
    detections, photos where nothing matched, seconds detecting)``, found/widths one entry per true face."""
    found, widths, fps, dets, elapsed, empty = [], [], 0, 0, 0.0, 0
    for ph in photos:
        t0 = time.perf_counter()
        faces = det.detect(ph.image)
        elapsed += time.perf_counter() - t0
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        hit, fp = groups.match(ph.boxes, boxes)
        found.append(hit)
        widths.append(ph.boxes[:, 2] - ph.boxes[:, 0])
        fps, dets, empty = fps + fp, dets + len(faces), empty + (not hit.any())
    return np.concatenate(found), np.concatenate(widths), fps, dets, empty, elapsed


def score_photos(det, photos: list) -> dict:
    """Recall by face width, no-face share (photos where nothing matched a face), false positives."""
    found, widths, fps, dets, empty, elapsed = detect_and_match(det, photos)
    recall = {bin_name(lo, hi): _share(found[(widths >= lo) & (widths < hi)]) for lo, hi in WIDTH_BINS}
    return {"photos": len(photos), "faces": int(len(found)), "recall": recall,
            "recall_20_32": _share(found[(widths >= 20) & (widths < 32)]),
            "no_face": round(empty / len(photos), 4), "false_positives": fps,
            "fp_share": round(fps / max(dets, 1), 4), "ms_per_photo": round(1000 * elapsed / len(photos), 1)}


def score_face_free(det, images: list[np.ndarray]) -> dict:
    """Photos with no face: the share where a face is reported anyway."""
    hits = [len(det.detect(im)) for im in images]
    return {"photos": len(images), "with_a_face": round(float(np.mean([h > 0 for h in hits])), 4),
            "detections": int(sum(hits))}


def _share(x: np.ndarray) -> float | None:
    return round(float(x.mean()), 4) if len(x) else None


def interleaved_ms(dets: dict, images: dict[str, np.ndarray], reps: int = 3) -> dict:
    """ms per photo of each detector (landmarks included), the detectors taking turns on each photo so
    that a busy shared CPU slows them alike; the best of ``reps`` per photo and detector."""
    out: dict = {name: {} for name in dets}
    for label, img in images.items():
        best = {name: float("inf") for name in dets}
        for _ in range(reps):
            for name, det in dets.items():
                t0 = time.perf_counter()
                det.detect(img)
                best[name] = min(best[name], time.perf_counter() - t0)
        for name in dets:
            out[name][label] = round(1000 * best[name], 1)
    return out


def cost_photos(sources: list, bgs: dict) -> dict[str, np.ndarray]:
    """Photos for the cost table: a dev crop, a 320x243 frame, portraits (close-ups) at 400-3000 px,
    a 1024x768 crowd and a 4000x3000 group."""
    src = sources[0]
    out = {f"{src.image.shape[1]}x{src.image.shape[0]} dev crop": src.image}
    out["320x243 photo"] = cv2.resize(next(iter(bgs.values())), (320, 243), interpolation=cv2.INTER_AREA)
    for side in (400, 1000, 1500, 2200, 3000):
        out[f"portrait {side} px"] = closeups(sources[:1], side, seed=side)[0].image
    out["1024x768 crowd"] = crowds(sources, bgs, 1, (1024, 768), (16, 40), (12, 30), seed=31)[0].image
    out["4000x3000 group"] = crowds(sources, bgs, 1, (4000, 3000), (16, 200), (6, 20), seed=32)[0].image
    return out


def plan_megapixels(det, hw: tuple[int, int]) -> float:
    """Megapixels YuNet sees for a photo of ``hw`` under ``det``'s plan (each image padded to 32 as
    YuNet pads it): a cost that no other work on a shared CPU can disturb."""
    def pad(n: int) -> int:
        return -(-n // 32) * 32

    plan, total = det.plan(hw), 0
    for i, p in enumerate(plan):
        h, w = round(hw[0] * p.scale), round(hw[1] * p.scale)
        if not p.tiled:
            total += pad(h) * pad(w)
            continue
        tiles, _ = det.tile_grid((h, w), p.scale, plan[i + 1].scale)
        total += sum(pad(y1 - y0) * pad(x1 - x0) for x0, y0, x1, y1 in tiles)
    return round(total / 1e6, 3)
