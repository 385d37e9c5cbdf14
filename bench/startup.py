"""Cold start: how long a new ``facesearch`` process takes, against a bare ``import torch``.

Every command below runs in a fresh Python process, as a user types it, on a
small synthetic collection (5 photos of 150 px drawn in code, dlib HOG
detection, the shipped default weights), in the same run as the baseline:

- ``python -c pass`` and ``python -c "import torch"``: what any PyTorch tool pays;
- ``facesearch --version`` and ``--help``: the CLI alone;
- ``facesearch index`` of the 5 photos into a new index;
- ``facesearch query`` of one photo against that index;
- the query's *work*: the same query run inside a process that has already
  imported everything (model load + decode + detect + embed + search), so
  ``cold query - work`` is what imports and start-up cost.

Targets: issue 28, a cold query <= 0.6 x a bare ``import torch`` (issue 38: 0.5 x) (on a CPU the networks run on
the inference runtime and torch is never imported); issue 10, cold query <= 1.5 x the bare torch
import + the work. Side by side in the same run: the same facesearch with
``FACESEARCH_RUNTIME=torch`` (the torch inference path, as before issue 28). Also recorded: which
heavy modules a cold query imported (torch, timm and torchvision should not be among them).

    python bench/startup.py            # 5 repeats of each, about a minute
    python bench/startup.py --quick    # 2 repeats
    git worktree add /tmp/fs_before 3b99504 && python bench/startup.py --baseline /tmp/fs_before
                                       # and an older facesearch, side by side in the same run

Prints a table and writes ``bench/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

HEAVY = ("torch", "torchvision", "timm", "faiss", "cv2", "dlib", "matplotlib", "rich", "typer", "PIL", "onnxruntime",
         "openvino")

# Runs one query in-process after importing everything it needs, and prints the
# work's seconds and the heavy modules that the query's imports pulled in.
_WORK = """
import json, sys, time
from facesearch.search.query import QueryOptions, query
import facesearch.models.embed, facesearch.models.weights, facesearch.faces.detect
t = time.perf_counter()
query([sys.argv[1]], QueryOptions(index=sys.argv[2]))
print(json.dumps({"work_s": time.perf_counter() - t}))
"""
_MODULES = """
import json, sys
from facesearch.cli.main import app
try:
    app(["query", sys.argv[1], "--index", sys.argv[2], "--json", "--quiet"], standalone_mode=False)
finally:
    heavy = sys.argv[3].split(",")
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))), file=sys.stderr)
"""


class Variant:
    """One facesearch to time: this environment's, or another source tree's (``--baseline``) run
    with the same interpreter and dependencies, so the two differ only in facesearch's code."""

    def __init__(self, name: str, source: Path | None = None, env: dict | None = None):
        self.name = name
        self.env = {**os.environ, **({"PYTHONPATH": str(source)} if source else {}), **(env or {})} \
            if source or env else None
        script = Path(sys.executable).parent / "facesearch"
        # The installed console script is what a user runs; a baseline tree has none of its own.
        self.cli = [str(script)] if script.is_file() and source is None else [sys.executable, "-m", "facesearch"]

    def run(self, args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=cwd, env=self.env, check=True, **kw)

    def timed(self, args: list[str], cwd: Path) -> float:
        t = time.perf_counter()
        self.run(args, cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return time.perf_counter() - t


def make_photos(folder: Path) -> list[Path]:
    from facesearch.photos.synthetic import make_identity_folder

    root = make_identity_folder(folder, n_people=5, per_person=1, size=150, seed=3)
    return sorted(root.rglob("*.png"))


def measure(work: Path, variants: list[Variant], repeats: int) -> dict[str, list[float]]:
    photos = make_photos(work / "photos")
    query = str(photos[0])
    runs: dict[str, list[float]] = {"python": [], "torch_import": []}
    for v in variants:
        v.run([*v.cli, "index", str(work / "photos"), "--index", str(work / f"idx_{v.name}"), "--quiet"], work,
              stdout=subprocess.DEVNULL)
        runs.update({f"{k} ({v.name})": [] for k in ("version", "help", "index_5", "query", "query_work")})
    here = Variant("python")
    for r in range(repeats):  # interleaved, so drifting load touches every row alike
        runs["python"].append(here.timed([sys.executable, "-c", "pass"], work))
        runs["torch_import"].append(here.timed([sys.executable, "-c", "import torch"], work))
        for v in variants:
            index, fresh = str(work / f"idx_{v.name}"), work / f"fresh_{v.name}_{r}"
            runs[f"version ({v.name})"].append(v.timed([*v.cli, "--version"], work))
            runs[f"help ({v.name})"].append(v.timed([*v.cli, "--help"], work))
            runs[f"index_5 ({v.name})"].append(
                v.timed([*v.cli, "index", str(work / "photos"), "--index", str(fresh), "--quiet"], work))
            shutil.rmtree(fresh)
            runs[f"query ({v.name})"].append(v.timed([*v.cli, "query", query, "--index", index, "--quiet"], work))
            out = v.run([sys.executable, "-c", _WORK, query, index], work, capture_output=True, text=True).stdout
            runs[f"query_work ({v.name})"].append(json.loads(out.splitlines()[-1])["work_s"])
    return runs


def imported_heavy(work: Path, v: Variant) -> list[str]:
    query, index = str(sorted((work / "photos").rglob("*.png"))[0]), str(work / f"idx_{v.name}")
    err = v.run([sys.executable, "-c", _MODULES, query, index, ",".join(HEAVY)], work,
                capture_output=True, text=True).stderr
    return json.loads(err.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another facesearch source tree (e.g. a `git worktree` of an older commit) to time alongside")
    ap.add_argument("--out", type=Path, default=C.RESULTS / "startup.json")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    variants = [Variant("now"), Variant("torch", env={"FACESEARCH_RUNTIME": "torch"})]
    variants += [Variant("baseline", args.baseline.resolve())] if args.baseline else []
    work = Path(tempfile.mkdtemp(prefix="fs_startup_"))
    try:
        runs = measure(work, variants, repeats)
        modules = {v.name: imported_heavy(work, v) for v in variants}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: round(float(np.median(v)), 3) for k, v in runs.items()}
    targets = [C.target(f"cold query ({v.name}) <= 1.5 x torch import + work", med[f"query ({v.name})"],
                        round(1.5 * med["torch_import"] + med[f"query_work ({v.name})"], 3), "lower", "s")
               for v in variants]
    targets += [C.target(f"cold query (now) <= {k} x torch import ({issue})", med["query (now)"],
                         round(k * med["torch_import"], 3), "lower", "s") for k, issue in ((0.6, "issue 28"), (0.5, "issue 38"))]
    rows = [[k, med[k], round(min(runs[k]), 3), round(max(runs[k]), 3), round(med[k] / med["torch_import"], 2)]
            for k in runs]
    C.print_table(f"cold start, median of {repeats} (seconds)", ["command", "median", "min", "max", "x torch import"],
                  rows)
    for name, mods in modules.items():
        print(f"heavy modules a cold query imports ({name}): {', '.join(mods)}")
    for t in targets:
        print(f"{t['target']}: {C.verdict(t)}")
    results = {"benchmark": "startup", "machine": C.machine(), "repeats": repeats, "median_s": med,
               "runs_s": {k: [round(x, 3) for x in v] for k, v in runs.items()},
               "baseline": str(args.baseline) if args.baseline else None,
               "query_imports": modules, "targets": targets,
               "command": "python bench/startup.py" + (" --quick" if args.quick else "")
               + (f" --baseline {args.baseline}" if args.baseline else "")}
    C.write_results(args.out, results)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
