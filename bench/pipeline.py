"""End-to-end photos/s: the ``facesearch index`` CLI vs the ``face_recognition`` CLI, same photos.

The collection is a flat folder of real photos built in a temporary directory
outside the repo (the face_recognition CLI does not recurse): all 164
uncropped ``train/yalefaces`` photos plus an evenly spread sample of
``dev/pins_celebs`` loose crops, copied, to ``--photos`` in all (default 1,000;
``--quick`` 20).

* ``facesearch``: ``python -m facesearch index PHOTOS --index NEW --json``, a
  fresh index, default detector (``auto``) and workers (all cores), timed as a
  subprocess: start-up, model load, detection, embedding and writing included.
* ``facesearch, before issue 38``: the same with ``--detector yunet-cnn``: dlib's CNN looks for the
  box of a near-frontal face HOG misses, where the default now aligns it from YuNet's own points.
* ``facesearch re-index``: the same command again on the unchanged collection
  (target: < 5% of the first run; ``reindex_internal_pct_of_first`` leaves out
  the interpreter start-up and imports, which the index's own clock misses).
* ``facesearch, previous default``: the same with ``--detector dlib-auto
  --weights dlib_ft --min-face 40`` (dlib HOG + CNN fallback, the single model), in fp32
  (``FACESEARCH_PRECISION=fp32``) as it ran before bf16 autocast: the speed issue 14 is held to.
* ``facesearch, previous default on the runtime``: the same on today's inference runtime (its
  dlib_ft network exported too): what the previous default would cost now.
* ``facesearch, torch path``: the default with ``FACESEARCH_RUNTIME=torch``, the inference path
  before issue 28 (torch in every process), to measure what the runtime buys.
* ``facesearch, fp32``: (only on a CPU with native bf16) the default with
  ``FACESEARCH_PRECISION=fp32``: what bf16 buys.
* ``face_recognition``: ``face_recognition --cpus -1 KNOWN PHOTOS`` with a
  one-photo known-people folder, timed the same way. It prints one line per
  face (``path,name`` or ``path,unknown_person``; one known person means at
  most one match per face) and ``path,no_persons_found`` for a photo without
  a face; the faces found are counted from that.

    python bench/pipeline.py              # 1,000 photos, a few minutes on 2 busy cores
    python bench/pipeline.py --quick      # 20 photos, seconds
    python bench/pipeline.py --workers 2  # also time `facesearch index --workers 2`
    python bench/pipeline.py --web 60     # also race on 60 web-sized photos (bench/_web.py)

Prints a table and writes ``bench/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from embed import out_path  # noqa: E402

DATA = C.REPO.parent / "shared" / "data"
YALE = DATA / "train" / "yalefaces"
PINS = DATA / "dev" / "pins_celebs"
REINDEX_TARGET_PCT = 5.0
KNOWN_NAME = "known_person"  # the one face in the known-people folder
# The default before issue 38 (dlib's CNN for a frontal face HOG misses, not YuNet's points).
BEFORE_38 = "facesearch, before issue 38"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {"benchmark": "pipeline", "machine": C.machine(), "quick": args.quick}
    if not YALE.is_dir() or not PINS.is_dir():
        results["skipped"] = f"shared face data not found at {DATA}"
        print(results["skipped"])
        C.write_results(args.out, results)
        return 0
    work = Path(tempfile.mkdtemp(prefix="facesearch-bench-pipeline-", dir=args.tmp))
    try:
        photos, known = build_collection(work, args.photos)
        results["collection"] = describe(photos)
        results["runs"] = run_all(photos, known, work, args)
        if args.web:
            results["web"] = run_web(work, known, args.web)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["summary"] = summarise(results["runs"])
    results["targets"] = targets(results["summary"])
    if "web" in results:
        results["targets"] += web_targets(results["web"]["summary"])
    print_tables(results)
    C.write_results(args.out, results)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 photos (seconds)")
    ap.add_argument("--photos", type=int, default=None, help="photos in the collection (default 1000; quick 20)")
    ap.add_argument("--workers", type=int, action="append", default=[],
                    help="also time `facesearch index --workers N` (repeatable)")
    ap.add_argument("--web", type=int, default=0, metavar="N",
                    help="also race the default, the previous default and face_recognition on N web-sized photos")
    ap.add_argument("--tmp", default=None, help="where to build the collection (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary collection and indexes")
    ap.add_argument("--out", type=Path, default=None, help="result JSON, or a folder for pipeline.json")
    args = ap.parse_args(argv)
    args.photos = args.photos or (20 if args.quick else 1000)
    args.out = out_path(args.out, "pipeline")
    if args.tmp and Path(args.tmp).resolve().is_relative_to(C.REPO):
        ap.error("--tmp must be outside the repository: real photos are never copied into it")
    return args


# --- the collection -----------------------------------------------------------------------


def spread(files: list[Path], n: int) -> list[Path]:
    """``n`` files evenly spaced over the sorted list (covers every person)."""
    if n >= len(files):
        return files
    idx = np.linspace(0, len(files) - 1, num=max(n, 0)).round().astype(int)
    return [files[i] for i in idx]


def source_photos() -> tuple[list[Path], list[Path]]:
    """The photos a collection is drawn from: (train/yalefaces, dev/pins_celebs), sorted."""
    return tuple(sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
                 for root in (YALE, PINS))


def build_collection(work: Path, n: int) -> tuple[Path, Path]:
    """Copy yalefaces (up to half of ``n`` when small) + pins_celebs into one flat folder."""
    yale, pins = source_photos()
    chosen = spread(yale, min(len(yale), n // 2 if n < 2 * len(yale) else len(yale)))
    chosen += spread(pins, n - len(chosen))
    photos = work / "photos"
    photos.mkdir()
    for k, src in enumerate(chosen):
        # Flat and unique: the face_recognition CLI lists only the folder's own files.
        shutil.copy2(src, photos / f"{k:05d}_{src.parent.name}_{src.name}")
    known = work / "known"
    known.mkdir()
    shutil.copy2(yale[0], known / f"{KNOWN_NAME}{yale[0].suffix}")
    return photos, known


def describe(photos: Path) -> dict:
    files = sorted(photos.iterdir())
    return {"photos": len(files), "yalefaces": sum("subject" in f.name for f in files),
            "pins_celebs": sum("subject" not in f.name for f in files),
            "bytes": sum(f.stat().st_size for f in files), "where": "temporary folder outside the repo"}


# --- the runs -----------------------------------------------------------------------------


def timed_run(cmd: list[str], extra_env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    # Unbuffered: face_recognition's pool workers print the results, and a worker's
    # block-buffered stdout into a pipe is lost when the pool terminates it.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc


def facesearch_index(photos: Path, index: Path, extra: list[str] = (), env: dict | None = None) -> dict:
    """One ``facesearch index`` run as a subprocess: wall seconds and its JSON summary."""
    cmd = [sys.executable, "-m", "facesearch", "index", str(photos), "--index", str(index), "--json", *extra]
    seconds, proc = timed_run(cmd, env)
    if proc.returncode != 0:
        return {"command": _show(cmd), "error": (proc.stderr or proc.stdout).strip()[-2000:]}
    summary = json.loads(proc.stdout)
    return {"command": " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), _show(cmd)]), "seconds": round(seconds, 3), "photos": summary["scanned"],
            "photos_per_s": round(summary["scanned"] / seconds, 2), "faces": summary["faces"],
            "photos_without_face": summary["noface"], "bad": summary["bad"], "new": summary["new"],
            "unchanged": summary["unchanged"], "internal_seconds": summary["seconds"]}


def face_recognition_cli() -> str | None:
    beside = Path(sys.executable).with_name("face_recognition")
    return str(beside) if beside.is_file() else shutil.which("face_recognition")


def face_recognition_run(photos: Path, known: Path) -> dict:
    """``face_recognition --cpus -1 KNOWN PHOTOS``: wall seconds and faces counted from its output."""
    exe = face_recognition_cli()
    if exe is None:
        return {"skipped": "the face_recognition CLI is not installed (make bench-deps)"}
    cmd = [exe, "--cpus", "-1", str(known), str(photos)]
    seconds, proc = timed_run(cmd, pkg_resources_shim(photos.parent))
    if proc.returncode != 0:
        return {"command": _show(cmd), "error": (proc.stderr or proc.stdout).strip()[-2000:]}
    counts = parse_face_recognition(proc.stdout, photos)
    if not counts["faces"] and not counts["photos_without_face"]:  # it exits 0 when it cannot run at all
        return {"command": _show(cmd), "error": (proc.stdout + proc.stderr).strip()[-2000:] or "no output"}
    n = len(list(photos.iterdir()))
    return {"command": _show(cmd), "seconds": round(seconds, 3), "photos": n,
            "photos_per_s": round(n / seconds, 2), **counts}


def pkg_resources_shim(work: Path) -> dict:
    """The environment that lets face_recognition run where setuptools (>= 81) no longer ships
    ``pkg_resources``: its model package needs only ``resource_filename``, given here by a
    one-function module on PYTHONPATH for that process alone. Nothing where pkg_resources exists."""
    if importlib.util.find_spec("pkg_resources") is not None:
        return {}
    shim = work / "pkg_resources_shim"
    shim.mkdir(exist_ok=True)
    (shim / "pkg_resources.py").write_text(
        "import importlib.util, os\n"
        "def resource_filename(package, resource):\n"
        "    spec = importlib.util.find_spec(package)\n"
        "    return os.path.join(list(spec.submodule_search_locations)[0], resource)\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}


def parse_face_recognition(stdout: str, photos: Path) -> dict:
    """Faces (one ``path,name`` record each) and photos without a face (``path,no_persons_found``).

    The CLI's pool workers print concurrently: a record is one write, but the
    newline after it is another, so two records can share a line. Records are
    therefore found by pattern, not by line.
    """
    names = "|".join(map(re.escape, ("no_persons_found", "unknown_person", KNOWN_NAME)))
    records = re.findall(re.escape(str(photos)) + r"[/\\](.+?),(" + names + ")", stdout)
    faces = [path for path, name in records if name != "no_persons_found"]
    return {"faces": len(faces), "photos_without_face": len(records) - len(faces), "photos_with_face": len(set(faces))}


PREVIOUS_DEFAULT = ["--detector", "dlib-auto", "--weights", "dlib_ft", "--min-face", "40"]
FP32 = {"FACESEARCH_PRECISION": "fp32"}
TORCH = {"FACESEARCH_RUNTIME": "torch"}


def run_all(photos: Path, known: Path, work: Path, args) -> dict:
    from facesearch.core.precision import cpu_has_bf16

    runs = {"facesearch": facesearch_index(photos, work / "index")}
    runs["facesearch re-index"] = facesearch_index(photos, work / "index")
    runs[BEFORE_38] = facesearch_index(photos, work / "index-38", ["--detector", "yunet-cnn"])
    # The default before YuNet and the fused model, on the same photos in the same run, as it ran
    # (torch, fp32), and on today's runtime.
    runs["facesearch, previous default"] = facesearch_index(photos, work / "index-prev", PREVIOUS_DEFAULT,
                                                            {**FP32, **TORCH})
    runs["facesearch, previous default on the runtime"] = facesearch_index(photos, work / "index-prev-rt",
                                                                           PREVIOUS_DEFAULT, FP32)
    runs["facesearch, torch path"] = facesearch_index(photos, work / "index-torch", env=TORCH)
    if cpu_has_bf16():
        runs["facesearch, fp32"] = facesearch_index(photos, work / "index-fp32", env=FP32)
    for w in args.workers:
        runs[f"facesearch --workers {w}"] = facesearch_index(photos, work / f"index-w{w}", ["--workers", str(w)])
    runs["face_recognition"] = face_recognition_run(photos, known)
    return runs


def run_web(work: Path, known: Path, n: int) -> dict:
    """The race on web-sized composites (``bench/_web.py``): the default, the previous default as it
    ran, and face_recognition, with the faces each found beside the faces pasted in."""
    from _web import build_web_collection

    folder, truth = build_web_collection(work, n, source_photos()[1])
    runs = {"facesearch": facesearch_index(folder, work / "index-web"),
            BEFORE_38: facesearch_index(folder, work / "index-web-38", ["--detector", "yunet-cnn"]),
            "facesearch, previous default": facesearch_index(folder, work / "index-web-prev", PREVIOUS_DEFAULT,
                                                             {**FP32, **TORCH}),
            "face_recognition": face_recognition_run(folder, known)}
    ours, peer, prev = runs["facesearch"], runs["face_recognition"], runs["facesearch, previous default"]
    summary = {"photos": n, "faces_pasted": truth}
    if "photos_per_s" in ours and "photos_per_s" in peer:
        summary["ratio"] = round(ours["photos_per_s"] / peer["photos_per_s"], 2)
    if "photos_per_s" in ours and "photos_per_s" in prev:
        summary["speed_vs_previous_default"] = round(ours["photos_per_s"] / prev["photos_per_s"], 2)
    summary |= _vs_before_38(runs)
    return {"runs": runs, "summary": summary}


def _vs_before_38(runs: dict) -> dict:
    """Issue 38's change on the same photos in the same run: speed and faces against the default before it."""
    ours, before = runs["facesearch"], runs.get(BEFORE_38, {})
    if "photos_per_s" not in ours or "photos_per_s" not in before:
        return {}
    return {"speed_vs_before_issue_38": round(ours["photos_per_s"] / before["photos_per_s"], 2),
            "faces_before_issue_38": before.get("faces")}


def _show(cmd: list[str]) -> str:
    return " ".join(Path(c).name if c == sys.executable else c for c in cmd)


# --- report -------------------------------------------------------------------------------


def summarise(runs: dict) -> dict:
    ours, again, peer = runs["facesearch"], runs["facesearch re-index"], runs["face_recognition"]
    out = {"facesearch_photos_per_s": ours.get("photos_per_s"),
           "face_recognition_photos_per_s": peer.get("photos_per_s"),
           "facesearch_faces": ours.get("faces"), "face_recognition_faces": peer.get("faces")}
    if "photos_per_s" in ours and "photos_per_s" in peer:
        out["ratio"] = round(ours["photos_per_s"] / peer["photos_per_s"], 2)
    prev = runs.get("facesearch, previous default", {})
    if "photos_per_s" in ours and "photos_per_s" in prev:
        out["speed_vs_previous_default"] = round(ours["photos_per_s"] / prev["photos_per_s"], 2)
        out["previous_default_faces"] = prev.get("faces")
    for key, name in (("speed_vs_previous_default_on_runtime", "facesearch, previous default on the runtime"),
                      ("speed_vs_torch_path", "facesearch, torch path")):
        other = runs.get(name, {})
        if "photos_per_s" in ours and "photos_per_s" in other:
            out[key] = round(ours["photos_per_s"] / other["photos_per_s"], 2)
    out |= _vs_before_38(runs)
    if "seconds" in ours and "seconds" in again:
        out["reindex_pct_of_first"] = round(100 * again["seconds"] / ours["seconds"], 2)
        # The index's own clock starts after interpreter start-up and imports (torch, timm):
        # what is left is the work a re-index really does (stat, lookups, no decoding).
        out["reindex_internal_pct_of_first"] = round(100 * again["internal_seconds"] / ours["seconds"], 2)
        out["reindex_startup_seconds"] = round(again["seconds"] - again["internal_seconds"], 2)
    return out


def targets(summary: dict) -> list[dict]:
    return [C.target("re-index of an unchanged collection, % of the first run",
                     summary.get("reindex_pct_of_first"), REINDEX_TARGET_PCT, "lower", "%"),
            C.target("photos/s vs the previous default (dlib-auto + dlib_ft), same run",
                     summary.get("speed_vs_previous_default"), 1.0, "higher", "x"),
            C.target("photos/s vs the face_recognition CLI, same run (issue 28)", summary.get("ratio"), 3.0,
                     "higher", "x"),
            C.target("photos/s vs the default before issue 38, same run", summary.get("speed_vs_before_issue_38"),
                     1.5, "higher", "x")]


def web_targets(web: dict) -> list[dict]:
    return [C.target("photos/s vs the face_recognition CLI on web-sized photos (issue 28)", web.get("ratio"), 3.0,
                     "higher", "x"),
            C.target("photos/s vs the default before issue 38 on web-sized photos, same run",
                     web.get("speed_vs_before_issue_38"), 1.5, "higher", "x")]


def print_tables(results: dict) -> None:
    cols = ["run", "photos", "seconds", "photos_per_s", "faces", "photos_without_face"]
    rows = [[name] + [r.get(c) for c in cols[1:]] for name, r in results["runs"].items()]
    C.print_table(f"indexing {results['collection']['photos']} real photos (fresh index, all cores)", cols, rows)
    for name, r in results["runs"].items():
        if "error" in r or "skipped" in r:
            print(f"{name}: {r.get('error') or r.get('skipped')}")
    print("summary:", results["summary"])
    if "web" in results:
        web = results["web"]
        rows = [[name] + [r.get(c) for c in cols[1:]] for name, r in web["runs"].items()]
        C.print_table(f"web-sized photos ({web['summary']['faces_pasted']} faces pasted)", cols, rows)
        print("web summary:", web["summary"])
    for t in results["targets"]:
        print(f"{t['target']}: {C.verdict(t)}")


if __name__ == "__main__":
    raise SystemExit(main())
