"""Where a photo's indexing time goes, stage by stage: the default vs the previous default.

``bench/pipeline.py`` times whole ``facesearch index`` runs; this script says
why they differ. On one core (one thread), in this process, over the same
photos as ``bench/pipeline.py`` (its mix of ``train/yalefaces`` and
``dev/pins_celebs`` crops, ``--photos`` of them), it runs what an indexing
worker and the embedding engine run, with a clock around each stage:

* ``decode``: ``load_array`` (EXIF-rotated RGB) and the photo's ``dhash``;
* ``find faces``: the detector's own search (YuNet's network, decoding and NMS;
  for ``dlib-auto`` HOG, and dlib's CNN where HOG finds nothing);
* ``dlib box``: (YuNet only) dlib's own box for its shape predictor, from HOG in
  a window around each face, or dlib's CNN where HOG misses;
* ``landmarks``: dlib's 5-point shape predictor;
* ``chips``: the aligned chips the model wants (two per face for the fused model);
* ``embed``: the model in batches of 64, its parts timed apart where it has two.

The default runs at the product's precision (bf16 where the CPU has it) on the product's
inference runtime (``facesearch.core.runtime``: OpenVINO for the embedders, ONNX Runtime for
YuNet, one thread each); the previous default (``--detector dlib-auto --weights dlib_ft
--min-face 40``) in fp32, as it ran (torch) and on the runtime, as ``bench/pipeline.py`` runs it; and, side by side, the default
through torch as it ran before issue 28 (``FACESEARCH_RUNTIME=torch``). Stages are summed per photo, so the
per-photo total is the CPU time one core spends; the end-to-end speed on all
cores is ``bench/pipeline.py``'s.

    python bench/stages.py             # 300 photos, ~1 minute
    python bench/stages.py --quick     # 30 photos

Prints a table and writes ``bench/results/stages.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from embed import out_path  # noqa: E402
from pipeline import PINS, YALE, source_photos, spread  # noqa: E402

STAGES = ("decode", "find faces", "dlib box", "landmarks", "chips", "embed")
PREVIOUS = {"detector": "dlib-auto", "weights": "dlib_ft", "min_face": 40, "precision": "fp32", "runtime": None}
DEFAULT = {"detector": "auto", "weights": None, "min_face": None, "precision": None, "runtime": None}
DEFAULT_TORCH = {**DEFAULT, "runtime": "torch"}  # the default's inference path before issue 28
# The default before issue 38: dlib's CNN looks for the box of a near-frontal face HOG misses,
# where the default now aligns it from YuNet's own points.
BEFORE_38 = {**DEFAULT, "detector": "yunet-cnn"}
PREVIOUS_TORCH = {**PREVIOUS, "runtime": "torch"}  # the previous default as it ran (bench/pipeline.py's baseline)
YALE_SHARE = 0.164  # bench/pipeline.py's 1,000 photos: 164 yalefaces, 836 pins_celebs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {"benchmark": "stages", "machine": C.machine(), "quick": args.quick}
    if not YALE.is_dir() or not PINS.is_dir():
        results["skipped"] = f"shared face data not found at {YALE.parent.parent}"
        print(results["skipped"])
        C.write_results(args.out, results)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        photos = web_photos(Path(tmp), args.web) if args.web else sample(args.photos)
        results["photos"] = {"n": len(photos), "yalefaces": sum(p.is_relative_to(YALE) for p in photos),
                             "web": bool(args.web)}
        for p in photos:
            p.read_bytes()  # into the page cache: the first configuration would pay for the disk
        with _one_core():
            results["runs"] = {"previous default (torch)": profile(photos, PREVIOUS_TORCH),
                               "previous default": profile(photos, PREVIOUS),
                               "default before issue 38": profile(photos, BEFORE_38),
                               "default": profile(photos, DEFAULT), "default (torch)": profile(photos, DEFAULT_TORCH)}
    results["summary"] = summarise(results["runs"])
    print_table(results)
    C.write_results(args.out, results)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30 photos (seconds)")
    ap.add_argument("--photos", type=int, default=None, help="photos (default 300; quick 30)")
    ap.add_argument("--web", type=int, default=0, metavar="N",
                    help="profile N web-sized photos (bench/_web.py, the race's) instead of the crops mix")
    ap.add_argument("--out", type=Path, default=None, help="result JSON, or a folder for stages.json")
    args = ap.parse_args(argv)
    args.photos = args.photos or (30 if args.quick else 300)
    args.out = out_path(args.out, "stages_web" if args.web else "stages")
    return args


def web_photos(work: Path, n: int) -> list[Path]:
    """``n`` of bench/pipeline.py's web-sized race photos, built in ``work``."""
    from _web import build_web_collection

    folder, _ = build_web_collection(work, n, source_photos()[1])
    return sorted(folder.iterdir())


def sample(n: int) -> list[Path]:
    """``n`` photos in bench/pipeline.py's proportions, evenly spread over each set."""
    yale, pins = source_photos()
    k = min(len(yale), round(n * YALE_SHARE))
    return spread(yale, k) + spread(pins, n - k)


@contextmanager
def _one_core():
    """One thread for torch and OpenCV, as in each indexing worker; this process's threads put
    back afterwards."""
    import cv2
    import torch

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


class Clock:
    """CPU seconds per stage (this process, all its threads), added up over every call a stage makes.

    CPU time, not wall time: on a machine shared with other jobs the wall clock of a one-thread
    stage grows with their load, its CPU time much less (every network here runs one thread).
    """

    def __init__(self):
        self.seconds = {s: 0.0 for s in STAGES}
        self.parts: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.process_time()
        try:
            yield
        finally:
            self.seconds[name] += time.process_time() - t0


@contextmanager
def network_runtime(runtime: str | None) -> Iterator[None]:
    """``$FACESEARCH_RUNTIME`` set to ``runtime`` for the duration (None: as the environment says)
    and ``$FACESEARCH_THREADS=1`` (one core: the embedders would take every core, and CPU time
    would then count the second thread's waiting too), with YuNet's cached detector rebuilt on
    entry and exit (it reads the runtime when built)."""
    from facesearch.faces import tiling

    saved = {k: os.environ.get(k) for k in ("FACESEARCH_RUNTIME", "FACESEARCH_THREADS")}
    if runtime:
        os.environ["FACESEARCH_RUNTIME"] = runtime
    os.environ["FACESEARCH_THREADS"] = "1"
    tiling.yunet_model.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
        tiling.yunet_model.cache_clear()


def profile(photos: list[Path], setup: dict) -> dict:
    """One configuration's seconds per stage over ``photos`` (models loaded before the clock)."""
    with network_runtime(setup["runtime"]), C.network_precision(setup["precision"]):
        return _profile(photos, setup)


def _profile(photos: list[Path], setup: dict) -> dict:
    from facesearch.faces.detect import create_detector, network_precision
    from facesearch.models.embed import open_engine
    from facesearch.models.weights_meta import resolve_weights

    engine = open_engine(resolve_weights(setup["weights"]), device="cpu")
    # The detector for the model's chips, as indexing makes it: no dlib box or landmarks for a model
    # aligned from YuNet's points.
    det = create_detector(setup["detector"], min_face=setup["min_face"], align=engine.config.align)
    det.warmup()
    clock = Clock()
    with _timed_helpers(clock):
        chips = _detect_all(photos, det, engine.config.align, clock)
        _embed_all(engine, chips, clock)
    n, faces = len(photos), len(chips)
    return {"setup": dict(setup), "model_id": engine.model_id,
            "runtime": getattr(engine.runner, "runtime", "torch"),
            "precision": os.environ.get("FACESEARCH_PRECISION", "auto"),
            "detector_precision": network_precision(setup["detector"]),
            "photos": n, "faces": faces,
            "ms_per_photo": {s: round(1e3 * v / n, 2) for s, v in clock.seconds.items()},
            "embed_parts_ms_per_face": {k: round(1e3 * v / max(faces, 1), 2) for k, v in clock.parts.items()},
            "total_ms_per_photo": round(1e3 * sum(clock.seconds.values()) / n, 2)}


def _detect_all(photos, det, align: str, clock: Clock) -> list:
    from facesearch.faces.chips import make_chips
    from facesearch.photos.load import dhash, load_array

    chips = []
    for p in photos:
        with clock.stage("decode"):
            img = load_array(p)
            dhash(img)
        with clock.stage("find faces"):  # the helpers' own time is moved to their stages below
            faces = det.detect(img)
        with clock.stage("chips"):
            chips += make_chips(img, faces, align)
    # find faces ran the dlib box and landmarks too: those were clocked apart, take them out.
    clock.seconds["find faces"] -= clock.seconds["dlib box"] + clock.seconds["landmarks"]
    return chips


@contextmanager
def _timed_helpers(clock: Clock):
    """Clock the detectors' per-face helpers where they are called (module globals, looked up per
    call): YuNet's in faces.tiling, dlib's detectors' in faces.backends."""
    from facesearch.faces import backends, tiling

    real = [("dlib box", tiling, "hog_box"), ("landmarks", tiling, "landmarks"), ("landmarks", backends, "landmarks")]
    saved = [getattr(module, name) for _, module, name in real]

    def wrap(stage, fn):
        def timed(*a, **k):
            with clock.stage(stage):
                return fn(*a, **k)
        return timed

    for (stage, module, name), fn in zip(real, saved):
        setattr(module, name, wrap(stage, fn))
    try:
        yield
    finally:
        for (_, module, name), fn in zip(real, saved):
            setattr(module, name, fn)


def _embed_all(engine, chips: list, clock: Clock) -> None:
    """The engine over every chip in its batches; each part of a fused model clocked apart."""
    undo = _clock_parts(engine, clock)
    engine.embed(chips[:8])  # first-call set-up (oneDNN primitives) off the clock
    clock.parts.clear()
    try:
        with clock.stage("embed"):
            engine.embed(chips)
    finally:
        undo()


def _clock_parts(engine, clock: Clock):
    """Clock the fused model's two networks (runtime networks or torch modules); returns an undo."""
    def add(name, t0):
        clock.parts[name] = clock.parts.get(name, 0.0) + time.process_time() - t0

    nets = getattr(engine.runner, "nets", None)
    if nets is not None and len(nets) == 1:
        return lambda: None  # one network: its time is the embed stage's
    if nets is not None:  # the inference runtime: wrap each network's call
        saved = [n._run for n in nets]
        for net, name, run in zip(nets, ("base", "sface"), saved):
            net._run = lambda x, r=run, n=name: (lambda t0: (r(x), add(n, t0))[0])(time.process_time())
        return lambda: [setattr(n, "_run", r) for n, r in zip(nets, saved)]
    hooks = []
    for name in ("base", "sface"):
        part = getattr(engine.model, name, None)
        if part is not None:
            starts = {}
            hooks.append(part.register_forward_pre_hook(lambda m, a, s=starts: s.update(t=time.process_time())))
            hooks.append(part.register_forward_hook(lambda m, a, o, s=starts, n=name: add(n, s["t"])))
    return lambda: [h.remove() for h in hooks]


def summarise(runs: dict) -> dict:
    prev, new, before = runs["previous default"], runs["default"], runs["default (torch)"]
    as_ran = runs.get("previous default (torch)", prev)
    before_38 = runs.get("default before issue 38", new)
    out = {"cpu_ms_per_photo": {k: v["total_ms_per_photo"] for k, v in runs.items()},
           "speed_vs_default_before_issue_38": round(before_38["total_ms_per_photo"] / new["total_ms_per_photo"], 2),
           "cpu_time_ratio": round(new["total_ms_per_photo"] / prev["total_ms_per_photo"], 2),
           "speed_vs_previous_default": round(as_ran["total_ms_per_photo"] / new["total_ms_per_photo"], 2),
           "speed_vs_previous_default_on_runtime": round(prev["total_ms_per_photo"] / new["total_ms_per_photo"], 2),
           "speed_vs_torch_path": round(before["total_ms_per_photo"] / new["total_ms_per_photo"], 2)}
    # What the default spends on work the previous default does not do at all.
    out["default_only_ms_per_photo"] = {
        "sface": round(new["embed_parts_ms_per_face"].get("sface", 0.0) * new["faces"] / new["photos"], 2),
        "dlib box": new["ms_per_photo"]["dlib box"]}
    return out


def print_table(results: dict) -> None:
    runs = results["runs"]
    names = list(runs)
    rows = [[s] + [runs[n]["ms_per_photo"][s] for n in names] for s in STAGES]
    rows.append(["total (one core)"] + [runs[n]["total_ms_per_photo"] for n in names])
    for part in ("base", "sface"):
        rows.append([f"  embed: {part}, ms/face"] + [runs[n]["embed_parts_ms_per_face"].get(part) for n in names])
    C.print_table(f"ms per photo on one core, {results['photos']['n']} photos "
                  f"({results['photos']['yalefaces']} yalefaces)", ["stage", *names], rows)
    print("summary:", results["summary"])


if __name__ == "__main__":
    raise SystemExit(main())
