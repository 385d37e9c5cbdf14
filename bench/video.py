"""Videos: what indexing a clip costs, and whether a person is found in it from one photo, and when.

Clips are made in code (``facesearch.photos.video_make``) from ``dev/pins_celebs`` photos: shots of
4-7 s cycling over four people (some shots two at once), panned, zoomed or still, hard cuts between,
at 30 fps, 480p and 1080p, 10 s to 5 min (cached in ``--cache``). A different photo of each person
is the query. Four tables:

1. **Cost per clip**: seconds to index (``facesearch.indexing.video_index.index_clip``, the product's
   defaults: a sample every 0.5 s plus keyframes), × real time, faces stored, tracks, faces per track,
   and the peak RSS of a fresh process that indexed only that clip (memory must not grow with length).
2. **Decoders**: the sampled frames of one clip as RGB, PyAV (the product's) against OpenCV's
   ``VideoCapture`` (``grab`` every frame, ``retrieve`` the sampled ones).
3. **Sampling rate**: 0.25 / 0.5 / 1 / 2 s between samples: seconds, recall of appearances, time error.
4. **Against a per-frame brute force**: every frame detected and embedded, a person's frames merged
   into appearances (gaps up to 1 s); both are scored against the shots' truth: recall of appearances
   (a shot with the person is found when a hit overlaps it), and the start/end error of the found ones.

A hit is a track (or a brute-force appearance) with a face within the model's verification τ of the
query face.

    python bench/video.py              # ~15 min the first time (encoding), then ~8 min
    python bench/video.py --quick      # 10 s and 60 s clips only

Prints tables and writes ``bench/results/video.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

DATA = C.REPO.parent / "shared" / "data" / "dev" / "pins_celebs"
SIZES = {"480p": (854, 480), "1080p": (1920, 1080)}
FPS = 30


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "facesearch-bench-video")
    ap.add_argument("--quick", action="store_true", help="10 s and 60 s clips only")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: index one clip in this process, print JSON
    ap.add_argument("--out", type=Path, default=C.RESULTS / "video.json")
    return ap.parse_args(argv)


# --- clips and truth -------------------------------------------------------------------------


def people(n: int = 4) -> tuple[list[str], list[list[np.ndarray]]]:
    from facesearch.photos.load import load_array

    names = sorted(p.name for p in DATA.iterdir())[:n]
    return names, [[load_array(f) for f in sorted((DATA / name).iterdir())[:2]] for name in names]


def shots_for(seconds: float, names, photos, seed: int = 0):
    from facesearch.photos.video_make import Shot

    rng, shots, t, k = np.random.default_rng(seed), [], 0.0, 0
    while t < seconds - 1e-6:
        length = min(float(rng.integers(4, 8)), seconds - t)
        who = [k % len(names)] + ([(k + 1) % len(names)] if k % 3 == 2 else [])
        shots.append(Shot([photos[p][0] for p in who], length, ("pan", "zoom", "still")[k % 3],
                          tuple(names[p] for p in who), height=float(rng.uniform(0.25, 0.45))))
        t, k = t + length, k + 1
    return shots


def clip(cache: Path, res: str, seconds: int, names, photos) -> tuple[Path, list[dict]]:
    from facesearch.photos.video_make import write_clip

    path = cache / f"{res}_{seconds}s.mp4"
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        truth = write_clip(path, shots_for(seconds, names, photos), size=SIZES[res], fps=FPS)
        meta.write_text(json.dumps(truth))
        print(f"  made {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path, json.loads(meta.read_text())


# --- indexing one clip, in a fresh process ------------------------------------------------------


def engine():
    from facesearch.models.embed import open_engine
    from facesearch.models.weights_meta import resolve_weights

    return open_engine(resolve_weights(None))


def index_one(path: str, every_s: float = 0.5, eng=None) -> dict:
    """Index ``path`` as the product does; its tracks (start, end, faces' embeddings) and the cost."""
    from facesearch.indexing.video_index import index_clip
    from facesearch.indexing.work import IndexOptions, Work

    eng = eng or engine()
    t0 = time.perf_counter()
    r = index_clip(Work(path, 0, 0, None, None), IndexOptions(paths=[], index=Path("."), video_every_s=every_s), eng)
    seconds = time.perf_counter() - t0
    tracks: dict[int, dict] = {}
    for m, e in zip(r.moments, r.embeddings):
        t = tracks.setdefault(m["track"], {"start_s": m["start_s"], "end_s": m["end_s"], "emb": []})
        t["emb"].append(e.tolist())
    return {"seconds": seconds, "faces": len(r.faces), "tracks": list(tracks.values()), "error": r.error or r.failed,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # a fresh process's


def index_fresh(path: Path) -> dict:
    """:func:`index_one` in a new process: its peak RSS is this clip's alone."""
    out = subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(C.REPO)})
    return json.loads(out.stdout.splitlines()[-1])


# --- scoring --------------------------------------------------------------------------------


def query_embeddings(eng, names, photos) -> dict[str, np.ndarray]:
    """Each person's query face: a photo not in any clip (the clips use each person's first)."""
    from facesearch.faces.chips import largest_face
    from facesearch.faces.detect import create_detector

    det = create_detector("auto")
    return {n: eng.embed([largest_face(ps[1], det, eng.config.align).chip])[0] for n, ps in zip(names, photos)}


def score(appearances: dict[str, list[tuple[float, float]]], truth: list[dict]) -> dict:
    """Recall of the truth's appearances (person, shot) and the start/end error of those found."""
    found, errors, wanted = 0, [], 0
    for shot in truth:
        for name in shot["names"]:
            wanted += 1
            hits = [(a, b) for a, b in appearances.get(name, []) if a <= shot["end_s"] and b >= shot["start_s"]]
            if hits:
                found += 1
                a, b = min(h[0] for h in hits), max(h[1] for h in hits)
                errors += [abs(max(a, shot["start_s"]) - shot["start_s"]), abs(min(b, shot["end_s"]) - shot["end_s"])]
    false = sum(1 for name, apps in appearances.items() for a, b in apps
                if not any(name in s["names"] and a <= s["end_s"] and b >= s["start_s"] for s in truth))
    return {"recall": round(found / max(wanted, 1), 3), "appearances": wanted, "false_hits": false,
            "time_err_mean_s": round(float(np.mean(errors)), 2) if errors else None,
            "time_err_max_s": round(float(np.max(errors)), 2) if errors else None}


def track_hits(result: dict, queries: dict, tau: float) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list] = {}
    for t in result["tracks"]:
        emb = np.asarray(t["emb"], np.float32)
        for name, q in queries.items():
            if float(np.min(np.linalg.norm(emb - q, axis=1))) <= tau:
                out.setdefault(name, []).append((t["start_s"], t["end_s"]))
    return out


def brute_force(path: Path, eng, queries: dict, tau: float) -> tuple[dict, float]:
    """Every frame detected and embedded; each person's matching frames merged into appearances."""
    import dataclasses

    from facesearch.faces.chips import make_chips
    from facesearch.faces.detect import create_detector
    from facesearch.photos.video import sample_frames

    det, times = None, {n: [] for n in queries}
    t0 = time.perf_counter()
    for s in sample_frames(path, every_s=0.0):
        if det is None:
            from facesearch.indexing.video_index import video_min_face

            det = dataclasses.replace(create_detector("auto", min_face=video_min_face(s.image.shape[:2], None, None)),
                                      crop_fallback=False)
        faces = det.detect(s.image)
        if not faces:
            continue
        emb = eng.embed(make_chips(s.image, faces, eng.config.align))
        for name, q in queries.items():
            if float(np.min(np.linalg.norm(emb - q, axis=1))) <= tau:
                times[name].append(s.time_s)
    return {n: _merge(ts) for n, ts in times.items() if ts}, time.perf_counter() - t0


def _merge(times: list[float], gap: float = 1.0) -> list[tuple[float, float]]:
    out = [[times[0], times[0]]]
    for t in times[1:]:
        if t - out[-1][1] <= gap:
            out[-1][1] = t
        else:
            out.append([t, t])
    return [tuple(x) for x in out]


# --- decoders ------------------------------------------------------------------------------------


def decode_pyav(path: Path, every_s: float) -> tuple[int, float]:
    from facesearch.photos.video import sample_frames

    t0 = time.perf_counter()
    n = sum(1 for _ in sample_frames(path, every_s))
    return n, time.perf_counter() - t0


def decode_opencv(path: Path, every_s: float) -> tuple[int, float]:
    import cv2

    t0 = time.perf_counter()
    cap, n, next_t = cv2.VideoCapture(str(path)), 0, 0.0
    while cap.grab():
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if t + 1e-6 >= next_t:
            ok, bgr = cap.retrieve()
            if ok:
                _rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                n, next_t = n + 1, next_t + every_s
    cap.release()
    return n, time.perf_counter() - t0


# --- the run -------------------------------------------------------------------------------------


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one:
        res = index_one(args.one)
        print(json.dumps(res))
        return
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent")
    names, photos = people()
    lengths = [10, 60] if args.quick else [10, 60, 300]
    clips = {(res, s): clip(args.cache, res, s, names, photos) for res in SIZES for s in lengths}
    eng = engine()
    tau = float(eng.config.tau)
    queries = query_embeddings(eng, names, photos)
    results = {"machine": C.machine(), "fps": FPS, "tau": tau, "every_s_default": 0.5,
               "cost": cost_table(clips, queries, tau), "decoders": decoder_table(clips[("1080p", 60)][0]),
               "sampling": sampling_table(clips[("480p", 60)], eng, queries, tau),
               "brute_force": brute_table(clips[("480p", 60)], eng, queries, tau)}
    C.write_results(args.out, results)


def cost_table(clips: dict, queries: dict, tau: float) -> list[dict]:
    rows = []
    for (res, seconds), (path, truth) in clips.items():
        r = index_fresh(path)
        per_track = [len(t["emb"]) for t in r["tracks"]]
        rows.append({"clip": path.name, "resolution": res, "seconds_of_video": seconds,
                     "index_s": round(r["seconds"], 2), "x_real_time": round(seconds / r["seconds"], 2),
                     "faces": r["faces"], "tracks": len(r["tracks"]),
                     "faces_per_track": round(float(np.mean(per_track)), 2) if per_track else 0,
                     "peak_rss_mb": r["peak_rss_mb"], **score(track_hits(r, queries, tau), truth)})
    C.print_table("cost per clip (index_clip, a sample every 0.5 s + keyframes)",
                  ["clip", "index s", "× real time", "faces", "tracks", "faces/track", "peak RSS MB", "recall"],
                  [[r["clip"], r["index_s"], r["x_real_time"], r["faces"], r["tracks"], r["faces_per_track"],
                    r["peak_rss_mb"], r["recall"]] for r in rows])
    return rows


def decoder_table(path: Path) -> list[dict]:
    rows = []
    for every in (0.5, 1.0 / FPS):
        for name, fn in (("pyav", decode_pyav), ("opencv", decode_opencv)):
            n, s = fn(path, every)
            rows.append({"decoder": name, "every_s": round(every, 3), "frames": n, "seconds": round(s, 2)})
    C.print_table(f"decoders: sampled RGB frames of {path.name}", ["decoder", "every s", "frames", "seconds"],
                  [[r["decoder"], r["every_s"], r["frames"], r["seconds"]] for r in rows])
    return rows


def sampling_table(clip_truth, eng, queries: dict, tau: float) -> list[dict]:
    path, truth = clip_truth
    rows = []
    for every in (0.25, 0.5, 1.0, 2.0):
        r = index_one(str(path), every, eng)
        rows.append({"every_s": every, "index_s": round(r["seconds"], 2), "faces": r["faces"],
                     "tracks": len(r["tracks"]), **score(track_hits(r, queries, tau), truth)})
    C.print_table(f"sampling rate ({path.name})", ["every s", "index s", "tracks", "recall", "false", "err mean s",
                                                   "err max s"],
                  [[r["every_s"], r["index_s"], r["tracks"], r["recall"], r["false_hits"], r["time_err_mean_s"],
                    r["time_err_max_s"]] for r in rows])
    return rows


def brute_table(clip_truth, eng, queries: dict, tau: float) -> dict:
    path, truth = clip_truth
    ours = index_one(str(path), 0.5, eng)
    brute, brute_s = brute_force(path, eng, queries, tau)
    out = {"clip": path.name,
           "indexed": {"seconds": round(ours["seconds"], 2), **score(track_hits(ours, queries, tau), truth)},
           "per_frame": {"seconds": round(brute_s, 2), **score(brute, truth)}}
    C.print_table(f"one photo per person, against every frame ({path.name})",
                  ["method", "seconds", "recall", "false", "err mean s", "err max s"],
                  [[k, v["seconds"], v["recall"], v["false_hits"], v["time_err_mean_s"], v["time_err_max_s"]]
                   for k, v in out.items() if k != "clip"])
    return out


if __name__ == "__main__":
    main()
