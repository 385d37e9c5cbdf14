"""YuNet's post-processing: head outputs to face rows, then NMS, as OpenCV does it (numpy only).

``decode`` is ``cv2.FaceDetectorYN``'s postProcess; ``batched_nms``/``nms`` are
``cv2.dnn.NMSBoxes``, and ``postprocess`` puts them together per image as
``cv2.FaceDetectorYN.detect`` returns its rows.
"""

from __future__ import annotations

import numpy as np

from facesearch.faces.yunet_runtime import STRIDES

__all__ = ["batched_nms", "decode", "nms", "postprocess"]


def decode(outputs: dict, canvas_hw: tuple[int, int], score_threshold: float,
           sizes: list[tuple[int, int]] | None = None):
    """Head outputs -> candidate rows (M, 15) and each row's image index (M,), as OpenCV in float32.

    Rows come per image, then stride 8, 16, 32, then cells row-major (OpenCV's order, which breaks
    NMS ties). ``sizes`` limits each image to the cells of its own padded canvas. Outputs may be
    numpy arrays or CPU torch tensors; the rows come back as the same kind.
    """
    first = next(iter(outputs.values()))
    out = {k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()}
    H, W = canvas_hw
    rows, owners = [], []
    for s in STRIDES:
        gh, gw = H // s, W // s
        score = np.sqrt(np.clip(out[f"cls_{s}"][..., 0], 0, 1) * np.clip(out[f"obj_{s}"][..., 0], 0, 1))
        keep = score >= np.float32(score_threshold)
        if sizes is not None:
            keep &= _cell_mask(sizes, gh, gw, s)
        b, n = np.nonzero(keep)
        r, c = (n // gw).astype(np.float32), (n % gw).astype(np.float32)
        box, kps = out[f"bbox_{s}"][b, n], out[f"kps_{s}"][b, n]
        w, h = np.exp(box[:, 2]) * s, np.exp(box[:, 3]) * s
        x1, y1 = (c + box[:, 0]) * s - w / 2, (r + box[:, 1]) * s - h / 2
        lm = np.stack([(kps[:, 0::2] + c[:, None]) * s, (kps[:, 1::2] + r[:, None]) * s], axis=2)
        rows.append(np.concatenate([np.stack([x1, y1, w, h], 1), lm.reshape(-1, 10), score[b, n][:, None]], 1))
        owners.append(b)
    owner = np.concatenate(owners).astype(np.int64)
    order = np.argsort(owner, kind="stable")  # group by image, keep stride/cell order within
    rows_out, owner_out = np.concatenate(rows).astype(np.float32)[order], owner[order]
    if isinstance(first, np.ndarray):
        return rows_out, owner_out
    import torch  # the caller passed tensors: it has torch already

    return torch.from_numpy(rows_out), torch.from_numpy(owner_out)


def _cell_mask(sizes: list[tuple[int, int]], gh: int, gw: int, stride: int) -> np.ndarray:
    """B x (gh*gw) booleans: the cell lies inside that image's own padded canvas."""
    lim = np.asarray(sizes, np.int64) // stride  # B x 2: rows, cols
    r = np.repeat(np.arange(gh), gw)
    c = np.tile(np.arange(gw), gh)
    return (r[None] < lim[:, :1]) & (c[None] < lim[:, 1:])


def _overlap(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """OpenCV's rectOverlap of integer Rects (x, y, w, h): 1 - float(jaccardDistance).

    Area is w*h, the intersection is empty unless it has positive width and height, and two
    zero-area rects count as identical (overlap 1), as in OpenCV.
    """
    iw = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2]) - np.maximum(box[0], others[:, 0])
    ih = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3]) - np.maximum(box[1], others[:, 1])
    empty = (box[2] <= 0) | (box[3] <= 0) | (others[:, 2] <= 0) | (others[:, 3] <= 0)
    inter = np.where((iw > 0) & (ih > 0) & ~empty, iw * ih, 0).astype(np.float64)
    areas = box[2] * box[3] + others[:, 2] * others[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(areas <= 0, 0.0, 1.0 - inter / (areas - inter))  # double, like OpenCV
    return np.float32(1) - dist.astype(np.float32)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, score_threshold: float,
                nms_threshold: float, top_k: int = 0) -> np.ndarray:
    """``cv2.dnn.NMSBoxes`` run independently on each group (image) of integer (x, y, w, h) boxes.

    Keeps scores > threshold, sorts them descending (ties in input order), keeps each group's
    first ``top_k`` (if > 0), then greedily drops a box whose overlap with a kept box of its group
    exceeds ``nms_threshold``. Returns indices into the inputs, by group, best first. The loop runs
    once per kept box with a vectorised test against the rest of its group: O(kept x boxes).
    """
    scores = np.asarray(scores, np.float32)
    groups = np.asarray(groups, np.int64)
    cand = np.flatnonzero(scores > np.float32(score_threshold))
    order = cand[np.lexsort((-scores[cand], groups[cand]))]  # stable: by group, then score descending
    g = groups[order]
    start = np.searchsorted(g, g, side="left")
    if top_k > 0:
        order, g, start = _first_k(order, g, start, top_k)
    end = np.searchsorted(g, g, side="right")
    b = np.asarray(boxes, np.int64)[order]
    alive = np.ones(len(order), bool)
    thr = np.float32(nms_threshold)
    for i in range(len(order)):
        if alive[i] and end[i] > i + 1:
            alive[i + 1 : end[i]] &= _overlap(b[i], b[i + 1 : end[i]]) <= thr
    return order[alive]


def _first_k(order: np.ndarray, g: np.ndarray, start: np.ndarray, k: int):
    keep = (np.arange(len(order)) - start) < k
    g = g[keep]
    return order[keep], g, np.searchsorted(g, g, side="left")


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float,
        top_k: int = 0) -> np.ndarray:
    """``cv2.dnn.NMSBoxes`` on one set of integer (x, y, w, h) boxes: kept indices, best first."""
    return batched_nms(boxes, scores, np.zeros(len(scores), np.int64), score_threshold, nms_threshold, top_k)


def postprocess(rows: np.ndarray, owner: np.ndarray, n_images: int, score_threshold: float,
                nms_threshold: float, top_k: int) -> list[np.ndarray]:
    """Candidate rows -> one (N, 15) float32 array per image, as cv2.FaceDetectorYN returns.

    OpenCV runs NMS only when an image has more than one candidate (a lone candidate is
    returned as is, even at score == threshold), on the boxes cast to int (truncated).
    """
    counts = np.bincount(owner, minlength=n_images)
    multi = np.flatnonzero(counts[owner] > 1)
    boxes = np.trunc(rows[multi, :4]).astype(np.int64)
    kept = multi[batched_nms(boxes, rows[multi, 14], owner[multi], score_threshold, nms_threshold, top_k)]
    kept = np.concatenate([kept, np.flatnonzero(counts[owner] == 1)])
    kept = kept[np.argsort(owner[kept], kind="stable")]  # batched_nms already orders within an image
    split = np.searchsorted(owner[kept], np.arange(1, n_images))
    return [np.ascontiguousarray(rows[k], dtype=np.float32) for k in np.split(kept, split)]
