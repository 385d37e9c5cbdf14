"""Duplicate faces and photos by a distance threshold.

All pairs within τ come from FAISS range search (never an O(n²) Python loop).
Groups are formed by complete linkage seeded at the would-be keeper
(:func:`facesearch.store.vectors.ops.keeper_groups`): every member is within τ of every
other, so look-alikes never chain different people into one group. Byte-identical
files are reported as exact duplicates. Nothing is changed on disk unless an
action is confirmed, and every change is journaled first (:mod:`facesearch.core.journal`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch.core.atomic import atomic_write_bytes
from facesearch.core.errors import FacesearchError, NotFoundError
from facesearch.eval.tau import GIVEN, TauPolicy, tau_or_policy
from facesearch.photos.load import hamming64
from facesearch.store.vectors.components import keeper_groups
from facesearch.store.face_index import FaceIndex
from facesearch.core.journal import MoveJournal
from facesearch.core.journal_file import latest_journal, read_journal
from facesearch.core.journal import undo as undo_journal
from facesearch.core.paths import file_key, journal_dir, same_file

KEEP_RULES = ("largest", "sharpest", "oldest")
SAME_AS_KEEPER = "same file as its keeper"  # moving it would move the keeper: the photo's only copy
PHASH_BITS = 4  # of 64: re-encoded (JPEG q60) and 75 %-resized copies stay within it
# Names that say "I am the copy": "copy of", "Kopie", "(1)", "_dup", "-copy2".
_COPY_NAME = re.compile(r"copy|kopie|copie|duplicate|\bdup\b|_dup|\(\d+\)", re.IGNORECASE)


@dataclass
class DedupeOptions:
    index: os.PathLike
    tau: float | None = None
    scope: str = "faces"  # faces | photos
    keep: str = "largest"


def find_duplicates(opts: DedupeOptions) -> dict:
    """Groups of near-duplicate faces (or photos), largest groups first, each with its keeper and why."""
    if opts.scope not in ("faces", "photos"):
        raise FacesearchError(f"unknown scope {opts.scope!r}", hint="use --scope faces or --scope photos")
    if opts.keep not in KEEP_RULES:
        raise FacesearchError(f"unknown keep rule {opts.keep!r}", hint="use largest, sharpest or oldest")
    store = FaceIndex.open(opts.index, readonly=True)
    with store:
        policy = TauPolicy.from_config(store.manifest["model_config"])
        tau, source = tau_or_policy(opts.tau, policy.duplicates)
        warning = policy.dedupe_warning(tau) if source == GIVEN else None
        i, j, d = _photo_pairs(store, *store.range_pairs(tau))
        groups = (_face_groups if opts.scope == "faces" else _photo_groups)(store, i, j, d, opts.keep)
        groups.sort(key=lambda g: (-len(g["members"]), g["members"][0]["path"]))
        exact = store.exact_duplicate_files()
    return {"tau": tau, "tau_source": source, "warnings": [warning] if warning else [],
            "scope": opts.scope, "keep": opts.keep, "n_pairs": int(len(i)),
            "groups": groups, "n_groups": len(groups), "n_members": sum(len(g["members"]) for g in groups),
            "exact_duplicates": exact}


def _photo_pairs(store: FaceIndex, i, j, d):
    """The face pairs between photos: a clip's faces are moments of one appearance, alike by nature, and a
    frame is no copy of a photo (byte-identical clips are still listed, by content hash)."""
    clip = np.fromiter(store.moments(), np.int64)  # every clip face: a few per track, read once
    if not len(clip):
        return i, j, d
    keep = ~(np.isin(i, clip) | np.isin(j, clip))
    return i[keep], j[keep], d[keep]


def _face_groups(store: FaceIndex, i, j, d, rule: str) -> list[dict]:
    ids = sorted(set(i.tolist()) | set(j.tolist()))
    members = {r.face_id: _member(r) for r in store.faces(ids)} if ids else {}
    return _groups(members, i, j, d, rule)


def _photo_groups(store: FaceIndex, i, j, d, rule: str) -> list[dict]:
    """Photos that are duplicates of each other: their faces all match one to one (same face
    count), or their whole-photo hashes are (nearly) equal.

    A group photo that merely contains a face from a portrait is not a duplicate of that
    portrait, so a shared face alone does not link two photos. The photo pair's distance is its
    farthest matched face pair (0 for a hash-only link: re-encoded or resized copies whose faces
    moved past τ, or photos without faces).
    """
    matched = _face_matches(store, i, j, d)
    hashed = _hash_pairs(store.photo_hashes())
    paths = sorted({p for pair in [*matched, *hashed] for p in pair})
    info = {p: store.file_info(p) for p in paths}  # one lookup per photo
    links = {(pa, pb): x for (pa, pb), (na, nb, x) in matched.items()
             if info[pa]["n_faces"] == info[pb]["n_faces"] == na == nb}
    for pair in hashed:
        links.setdefault(pair, 0.0)
    pid = {p: n for n, p in enumerate(paths)}
    members = {n: {"path": p, **info[p]} for n, p in enumerate(paths)}
    rows = [(pid[a], pid[b], x) for (a, b), x in links.items()]
    arr = (np.array([r[k] for r in rows]) for k in range(3)) if rows else (np.zeros(0),) * 3
    return _groups(members, *arr, rule)


def _face_matches(store: FaceIndex, i, j, d) -> dict[tuple[str, str], tuple[int, int, float]]:
    """Photo pairs with matching faces: ``(faces of a matched, faces of b matched, farthest pair)``."""
    face_file = {r.face_id: r.path for r in store.faces(sorted(set(i.tolist()) | set(j.tolist())))}
    matched: dict[tuple[str, str], tuple[set, set, float]] = {}
    for a, b, x in zip(i.tolist(), j.tolist(), d.tolist()):
        pa, pb = face_file[a], face_file[b]
        if pa == pb:
            continue
        (pa, a), (pb, b) = sorted([(pa, a), (pb, b)])
        fa, fb, dmax = matched.get((pa, pb), (set(), set(), x))
        matched[(pa, pb)] = (fa | {a}, fb | {b}, max(dmax, x))
    return {pair: (len(fa), len(fb), x) for pair, (fa, fb, x) in matched.items()}


def _hash_pairs(hashes: list[tuple[str, int]]) -> set[tuple[str, str]]:
    """Photo pairs whose 64-bit hashes differ in at most PHASH_BITS bits.

    Cut into PHASH_BITS + 1 bands, two such hashes agree exactly on at least one band
    (pigeonhole), so candidates come from equal bands, not an all-pairs scan; a band value
    shared by thousands of photos (near-blank frames) is skipped.
    """
    width = -(-64 // (PHASH_BITS + 1))
    buckets: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for path, h in hashes:
        u = h & 0xFFFF_FFFF_FFFF_FFFF
        for band in range(PHASH_BITS + 1):
            buckets.setdefault((band, (u >> (width * band)) & ((1 << width) - 1)), []).append((path, h))
    pairs = set()
    for bucket in buckets.values():
        if len(bucket) > 1000:
            continue
        for n, (pa, ha) in enumerate(bucket):
            for pb, hb in bucket[n + 1:]:
                if pa != pb and hamming64(ha, hb) <= PHASH_BITS:
                    pairs.add(tuple(sorted((pa, pb))))
    return pairs


def _groups(members: dict[int, dict], i, j, d, rule: str) -> list[dict]:
    """Complete-linkage groups seeded at the best keeper, with distance stats and the keeper's reason."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    pair_d = {(min(a, b), max(a, b)): x for a, b, x in zip(i.tolist(), j.tolist(), np.asarray(d).tolist())}
    if rule == "sharpest":  # decoded once per photo, here, for the ranking and the reason alike
        for m in members.values():
            m.setdefault("sharpness", _sharpness(m["path"]))
    ranked = sorted(members, key=lambda k: (keeper_key(members[k], rule), k))
    rank = {k: n for n, k in enumerate(ranked)}
    out = []
    for ids in keeper_groups(i, j, rank):
        ds = [pair_d[(min(a, b), max(a, b))] for n, a in enumerate(ids) for b in ids[n + 1:]]
        group = [members[k] for k in ids]
        out.append({"members": group, "keeper": group[0]["path"],
                    "keeper_reason": keeper_reason(group[0], group[1], rule),
                    "max_distance": round(max(ds), 4), "mean_distance": round(float(np.mean(ds)), 4)})
    return out


def _member(r) -> dict:
    return {"face_id": int(r.face_id), "path": r.path, "box": [round(float(v), 1) for v in r.box],
            "label": r.label, "size": r.size, "mtime_ns": r.mtime_ns, "score": r.score}


# --- which copy to keep -----------------------------------------------------------------------


def keeper_key(m: dict, rule: str) -> tuple:
    """Sort key, best keeper first: the original is the largest, then oldest, then the shortest
    path that does not say "copy" (``rule`` puts sharpness or age first instead)."""
    size = (-_area(m.get("box")), -(m.get("size") or 0))
    age = (m.get("mtime_ns") or 0,)
    name = (bool(_COPY_NAME.search(Path(m["path"]).name)), len(m["path"]), m["path"])
    if rule == "oldest":
        return age + size + name
    if rule == "sharpest":
        return (-m["sharpness"],) + size + age + name
    return size + age + name


def keeper_reason(keeper: dict, other: dict, rule: str) -> str:
    """Why ``keeper`` beat the best other member, in words (the first criterion that decided)."""
    if rule == "sharpest" and keeper["sharpness"] != other["sharpness"]:
        return "sharpest photo"
    checks = [("larger face" if keeper.get("box") else "larger file", lambda m: (-_area(m.get("box")), -(m.get("size") or 0))),
              ("older file", lambda m: m.get("mtime_ns") or 0),
              ("name without 'copy'", lambda m: bool(_COPY_NAME.search(Path(m["path"]).name))),
              ("shorter path", lambda m: len(m["path"]))]
    if rule == "oldest":
        checks.insert(0, checks.pop(1))
    for why, key in checks:
        if key(keeper) != key(other):
            return why
    return "first path in order (the copies are alike)"


def _area(box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1]) if box else 0.0


def _sharpness(path: str) -> float:
    """Variance of the Laplacian of the greyscale photo: higher is sharper."""
    import cv2

    from facesearch.core.errors import BadImageError
    from facesearch.photos.load import load_array

    try:
        grey = cv2.cvtColor(load_array(path, max_pixels=40_000_000), cv2.COLOR_RGB2GRAY)
    except BadImageError:
        return -1.0
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def plan_actions(report: dict, move_to: str | None = None) -> list[dict]:
    """What to act on, planned over the whole report: every non-keeper file once, never a keeper.

    A photo that is the keeper of any group stays, even where it is a duplicate in
    another (two collages of the same two people). With ``move_to`` each file's
    destination mirrors its folder relative to the files' common folder.
    """
    keepers = {g["keeper"] for g in report["groups"]}
    todo: dict[str, str] = {}
    for g in report["groups"]:
        for m in g["members"]:
            if m["path"] not in keepers:
                todo.setdefault(m["path"], g["keeper"])
    root = _common_folder([*todo, *keepers]) if todo else None
    actions = [{"src": p, "keeper": k, "dst": str(Path(move_to) / os.path.relpath(p, root)) if move_to else None}
               for p, k in sorted(todo.items())]
    keeper_files = {file_key(k) for k in keepers} - {None}  # one stat per file, not one per pair
    for a in actions:  # an alias of a keeper (an index from before paths were resolved) is no copy
        if file_key(a["src"]) in keeper_files:
            a["skipped"] = SAME_AS_KEEPER
    return actions


def apply_actions(report: dict, index: os.PathLike, move_to: str | None = None, link: bool = False,
                  yes: bool = False) -> dict:
    """Move (or replace with symlinks to their keeper) every planned file; needs ``yes``.

    Never deletes. Each change is written to a journal in the index folder *before*
    it is made (``facesearch undo`` restores them, after a clean run, a kill or a full
    disk), and the moved files leave the index so that ``verify`` still passes.
    """
    if not (move_to or link):
        return {"actions": []}
    if not yes:
        raise FacesearchError("dedupe actions change files on disk and need confirmation",
                              hint="re-run with --yes (nothing has been changed)")
    actions = plan_actions(report, move_to)
    journal = MoveJournal.create(journal_dir(index), "dedupe", {
        "index": str(index), "move_to": move_to, "link": link, "tau": report["tau"], "scope": report["scope"]})
    done: list[str] = []
    try:
        for a in actions:
            _act(journal, a, link, move_to)
            if not a.get("skipped"):
                done.append(a["src"])
    finally:
        _forget(index, done)  # also after a failure: what moved must leave the index
    return {"actions": actions, "moved": len(done), "journal": str(journal.path)}


def _act(journal: MoveJournal, a: dict, link: bool, move_to: str | None) -> None:
    src = Path(a["src"])
    if a.get("skipped"):
        return
    if same_file(src, a["keeper"]):  # again right before the move: the disk may have changed since the plan
        a["skipped"] = SAME_AS_KEEPER
        return
    if not src.exists() or src.is_symlink():
        a["skipped"] = "missing" if not src.exists() else "already a link"
        return
    if link:
        backup = Path(a["dst"]) if a["dst"] else _free_name(src.with_name(src.name + ".dup"))
        journal.symlink(src, Path(a["keeper"]), backup)
        a["dst"] = str(backup)
    else:  # within move_to: a symlinked folder under it would carry the photo out of it
        journal.move(src, Path(a["dst"]), within=move_to)


def _forget(index: os.PathLike, paths: list[str]) -> None:
    if paths:
        with FaceIndex.open(index) as store:
            store.remove_paths(paths)


def _common_folder(paths: list[str]) -> str:
    """The deepest folder holding all ``paths`` (distinct files, so never a file itself)."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def _free_name(p: Path) -> Path:
    n, cand = 1, p
    while cand.exists() or cand.is_symlink():
        cand = p.with_name(f"{p.stem}.{n}{p.suffix}")
        n += 1
    return cand


UNDO_HINTS = {  # what is left to do after an undo, by the run that is undone (its journal's "op")
    "dedupe": "restored photos are not in the index yet: re-run `facesearch index` on their folders",
    "write-xmp": "the sidecars and photos write-xmp changed are as they were; the index itself was not changed",
}


def undo(index: os.PathLike, journal: str | os.PathLike | None = None) -> dict:
    """Undo a dedupe or write-xmp run from its journal (default: the index's newest one not yet undone);
    ``op`` in the answer names the run undone."""
    path = Path(journal) if journal else latest_journal(journal_dir(index))
    if path is None or not path.is_file():
        raise NotFoundError(f"nothing to undo{f': no journal at {path}' if path else f' in {index}'}",
                            hint="undo puts back what a `dedupe --move-to/--link` or `people write-xmp` run changed; "
                                 "pass the journal path it printed")
    op = read_journal(path)[0].get("op", "dedupe")
    result = {"op": op, **undo_journal(path)}
    result["hint"] = UNDO_HINTS.get(op, "the files are as they were before that run")
    return result


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
