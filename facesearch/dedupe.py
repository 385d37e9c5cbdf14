"""Duplicate faces and photos by a distance threshold.

All pairs within τ come from FAISS range search (never an O(n²) Python loop)
and are grouped by connected components. Byte-identical files are reported as
exact duplicates. Nothing is changed on disk unless an action is confirmed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch.atomic import atomic_write_bytes, atomic_write_json
from facesearch.errors import FacesearchError
from facesearch.index.ops import connected_components
from facesearch.index.store import FaceIndex
from facesearch.eval.tau import TauPolicy, check_tau

KEEP_RULES = ("largest", "sharpest", "oldest")


@dataclass
class DedupeOptions:
    index: os.PathLike
    tau: float | None = None
    scope: str = "faces"  # faces | photos
    keep: str = "largest"


def find_duplicates(opts: DedupeOptions) -> dict:
    """Groups of near-duplicate faces (or photos), largest groups first."""
    if opts.scope not in ("faces", "photos"):
        raise FacesearchError(f"unknown scope {opts.scope!r}", hint="use --scope faces or --scope photos")
    if opts.keep not in KEEP_RULES:
        raise FacesearchError(f"unknown keep rule {opts.keep!r}", hint="use largest, sharpest or oldest")
    store = FaceIndex.open(opts.index, readonly=True)
    with store:
        policy = TauPolicy.from_config(store.manifest["model_config"])
        if opts.tau is None:
            tau, source = policy.duplicates()
            warning = None
        else:
            tau, source = check_tau(opts.tau), "--tau"
            warning = policy.looseness_warning(tau)
        i, j, d = store.range_pairs(tau)
        groups = _face_groups(store, i, j, d) if opts.scope == "faces" else _photo_groups(store, i, j, d)
        for g in groups:
            g["keeper"] = _keeper(g["members"], opts.keep)
        groups.sort(key=lambda g: (-len(g["members"]), g["members"][0]["path"]))
        exact = store.exact_duplicate_files()
    return {"tau": tau, "tau_source": source, "warnings": [warning] if warning else [],
            "scope": opts.scope, "keep": opts.keep, "n_pairs": int(len(i)),
            "groups": groups, "n_groups": len(groups), "n_members": sum(len(g["members"]) for g in groups),
            "exact_duplicates": exact}


def _face_groups(store: FaceIndex, i, j, d) -> list[dict]:
    comps = connected_components(np.concatenate([i, j]), i, j) if len(i) else []
    pair_d = _pair_lookup(i, j, d)
    groups = []
    for comp in comps:
        rows = store.faces(sorted(comp))
        groups.append({"members": [_member(r) for r in rows], **_group_stats(sorted(comp), pair_d)})
    return groups


def _photo_groups(store: FaceIndex, i, j, d) -> list[dict]:
    """Photos whose faces all match one to one (same face count) are duplicates of each other.

    A group photo that merely contains a face from a portrait is not a duplicate
    of that portrait, so a shared face alone does not link two photos.
    """
    face_file = {r.face_id: r.path for r in store.faces(sorted(set(i.tolist()) | set(j.tolist())))}
    paths = sorted(set(face_file.values()))
    stats = {p: store.file_info(p) for p in paths}
    matched: dict[tuple[str, str], tuple[set, set, float]] = {}
    for a, b, x in zip(i.tolist(), j.tolist(), d.tolist()):
        pa, pb = face_file[a], face_file[b]
        if pa == pb:
            continue
        (pa, a), (pb, b) = sorted([(pa, a), (pb, b)])
        fa, fb, dmin = matched.get((pa, pb), (set(), set(), x))
        matched[(pa, pb)] = (fa | {a}, fb | {b}, min(dmin, x))
    pid = {p: n for n, p in enumerate(paths)}
    links = [(pid[pa], pid[pb], x) for (pa, pb), (fa, fb, x) in matched.items()
             if stats[pa]["n_faces"] == stats[pb]["n_faces"] == len(fa) == len(fb)]
    fi = np.array([a for a, _, _ in links], np.int64)
    fj = np.array([b for _, b, _ in links], np.int64)
    fd = np.array([x for _, _, x in links], np.float64)
    comps = connected_components(np.concatenate([fi, fj]), fi, fj) if len(fi) else []
    pair_d = _pair_lookup(fi, fj, fd)
    return [{"members": [{"path": paths[n], **stats[paths[n]]} for n in sorted(c)], **_group_stats(sorted(c), pair_d)}
            for c in comps]


def _pair_lookup(i, j, d) -> dict:
    out: dict = {}
    for a, b, x in zip(i.tolist(), j.tolist(), d.tolist()):
        key = (min(a, b), max(a, b))
        out[key] = min(x, out.get(key, x))
    return out


def _group_stats(ids: list[int], pair_d: dict) -> dict:
    """Max and mean distance over the within-τ pairs that link the group."""
    ds = [x for (a, b), x in pair_d.items() if a in set(ids) and b in set(ids)] if len(ids) < 500 else []
    return {"max_distance": round(max(ds), 4) if ds else None, "mean_distance": round(float(np.mean(ds)), 4) if ds else None}


def _member(r) -> dict:
    return {"face_id": int(r.face_id), "path": r.path, "box": [round(float(v), 1) for v in r.box],
            "label": r.label, "size": r.size, "mtime_ns": r.mtime_ns, "score": r.score}


def _keeper(members: list[dict], rule: str) -> str:
    if rule == "oldest":
        return min(members, key=lambda m: (m.get("mtime_ns") or 0, m["path"]))["path"]
    if rule == "sharpest":
        return max(members, key=lambda m: (_sharpness(m["path"]), m["path"]))["path"]
    return max(members, key=lambda m: (_area(m.get("box")) or (m.get("size") or 0), m.get("size") or 0))["path"]


def _area(box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1]) if box else 0.0


def _sharpness(path: str) -> float:
    """Variance of the Laplacian of the greyscale photo: higher is sharper."""
    import cv2

    from facesearch.errors import BadImageError
    from facesearch.imageio import load_array

    try:
        grey = cv2.cvtColor(load_array(path, max_pixels=40_000_000), cv2.COLOR_RGB2GRAY)
    except BadImageError:
        return -1.0
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def apply_actions(report: dict, move_to: str | None = None, link: bool = False, yes: bool = False,
                  log_path: str | None = None) -> dict:
    """Move (or replace with symlinks) every non-keeper photo; needs ``yes``; logs for undo.

    Never deletes. The JSON log lists each ``(from, to)`` so ``undo_actions`` can put files back.
    """
    if not (move_to or link):
        return {"actions": []}
    if not yes:
        raise FacesearchError("dedupe actions change files on disk and need confirmation",
                              hint="re-run with --yes (nothing has been changed)")
    dest = Path(move_to) if move_to else None
    actions = []
    for g in report["groups"]:
        for path in sorted({m["path"] for m in g["members"]} - {g["keeper"]}):
            actions.append(_act(Path(path), Path(g["keeper"]), dest, link))
    log_file = Path(log_path or f"dedupe-log-{time.strftime('%Y%m%d-%H%M%S')}.json")
    atomic_write_json(log_file, {"actions": actions})
    return {"actions": actions, "log": str(log_file)}


def _act(path: Path, keeper: Path, dest: Path | None, link: bool) -> dict:
    if not path.exists():
        return {"from": str(path), "to": None, "skipped": "missing"}
    target = None
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
        target = _free_name(dest / path.name)
        shutil.move(str(path), target)
    if link:
        if target is None:  # keep a copy of the replaced file beside it, never delete
            target = _free_name(path.with_name(path.name + ".dup"))
            os.replace(path, target)
        os.symlink(os.path.abspath(keeper), path)
    return {"from": str(path), "to": str(target), "link": link}


def _free_name(p: Path) -> Path:
    n, cand = 1, p
    while cand.exists():
        cand = p.with_name(f"{p.stem}.{n}{p.suffix}")
        n += 1
    return cand


def undo_actions(log_path: str) -> int:
    """Reverse a dedupe log: remove created links and move files back. Returns files restored."""
    actions = json.loads(Path(log_path).read_text())["actions"]
    restored = 0
    for a in actions:
        src, dst = Path(a["from"]), a.get("to")
        if dst is None:
            continue
        if src.is_symlink():
            src.unlink()
        if not src.exists() and Path(dst).exists():
            shutil.move(dst, src)
            restored += 1
    return restored


def write_csv(report: dict, path: os.PathLike) -> None:
    """One row per group member: group, path, box, keeper flag, group max/mean distance."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["group", "path", "box", "keeper", "max_distance", "mean_distance"])
    for n, g in enumerate(report["groups"], 1):
        for m in g["members"]:
            box = " ".join(f"{v:g}" for v in m["box"]) if m.get("box") else ""
            w.writerow([n, m["path"], box, int(m["path"] == g["keeper"]), g["max_distance"], g["mean_distance"]])
    atomic_write_bytes(path, buf.getvalue().encode())
