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

Target (issue 10): cold query <= 1.5 x the bare torch import + the work. Also
recorded: which heavy modules a cold query imported (timm and torchvision should
not be among them).

    python bench/startup.py            # 5 repeats of each, about a minute
    python bench/startup.py --quick    # 2 repeats

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

HEAVY = ("torch", "torchvision", "timm", "faiss", "cv2", "dlib", "matplotlib", "rich", "typer", "PIL")

# Runs one query in-process after importing everything it needs, and prints the
# work's seconds and the heavy modules that the query's imports pulled in.
_WORK = """
import json, sys, time
from facesearch.search import QueryOptions, query
import facesearch.embed, facesearch.models.weights, facesearch.detect
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


def cli() -> list[str]:
    """The installed console script when there is one (what a user runs), else ``python -m facesearch``."""
    script = Path(sys.executable).parent / "facesearch"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "facesearch"]


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def make_photos(folder: Path) -> list[Path]:
    from facesearch.synthetic import make_identity_folder

    root = make_identity_folder(folder, n_people=5, per_person=1, size=150, seed=3)
    return sorted(root.rglob("*.png"))


def measure(work: Path, repeats: int) -> dict[str, list[float]]:
    photos = make_photos(work / "photos")
    index = work / "idx"
    subprocess.run([*cli(), "index", str(work / "photos"), "--index", str(index), "--quiet"], check=True, cwd=work)
    query = str(photos[0])
    runs: dict[str, list[float]] = {k: [] for k in ("python", "torch_import", "version", "help", "index_5",
                                                   "query", "query_work")}
    for r in range(repeats):  # interleaved, so drifting load touches every row alike
        runs["python"].append(timed([sys.executable, "-c", "pass"], work))
        runs["torch_import"].append(timed([sys.executable, "-c", "import torch"], work))
        runs["version"].append(timed([*cli(), "--version"], work))
        runs["help"].append(timed([*cli(), "--help"], work))
        fresh = work / f"idx_{r}"
        runs["index_5"].append(timed([*cli(), "index", str(work / "photos"), "--index", str(fresh), "--quiet"], work))
        shutil.rmtree(fresh)
        runs["query"].append(timed([*cli(), "query", query, "--index", str(index), "--quiet"], work))
        out = subprocess.run([sys.executable, "-c", _WORK, query, str(index)], cwd=work, check=True,
                             capture_output=True, text=True).stdout
        runs["query_work"].append(json.loads(out.splitlines()[-1])["work_s"])
    return runs


def imported_heavy(work: Path) -> list[str]:
    query, index = str(sorted((work / "photos").rglob("*.png"))[0]), str(work / "idx")
    err = subprocess.run([sys.executable, "-c", _MODULES, query, index, ",".join(HEAVY)], cwd=work, check=True,
                         capture_output=True, text=True).stderr
    return json.loads(err.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=C.RESULTS / "startup.json")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="fs_startup_"))
    try:
        runs = measure(work, repeats)
        modules = imported_heavy(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: round(float(np.median(v)), 3) for k, v in runs.items()}
    limit = round(1.5 * med["torch_import"] + med["query_work"], 3)
    targets = [C.target("cold query <= 1.5 x torch import + work", med["query"], limit, "lower", "s")]
    rows = [[k, med[k], round(min(runs[k]), 3), round(max(runs[k]), 3), round(med[k] / med["torch_import"], 2)]
            for k in runs]
    C.print_table(f"cold start, median of {repeats} (seconds)", ["command", "median", "min", "max", "x torch import"],
                  rows)
    print(f"heavy modules a cold query imports: {', '.join(modules)}")
    for t in targets:
        print(f"{t['target']}: {C.verdict(t)}")
    results = {"benchmark": "startup", "machine": C.machine(), "repeats": repeats, "median_s": med,
               "runs_s": {k: [round(x, 3) for x in v] for k, v in runs.items()},
               "query_imports": modules, "targets": targets,
               "command": "python bench/startup.py" + (" --quick" if args.quick else "")}
    C.write_results(args.out, results)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
