"""Shared helpers for the index benchmarks: machine info, synthetic embeddings,
timing and memory sampling, targets, tables and JSON results.

Benchmarks run as scripts (``python bench/search.py``) or through their
``main(argv)`` (the tests), so this module is imported as ``_common`` with
``bench/`` on ``sys.path``; it puts the repo root there for ``facesearch``.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata
import io
import os
import platform
import pstats
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from facesearch.core.atomic import atomic_write_json  # noqa: E402

RESULTS = REPO / "bench" / "results"
D = 128


# --- command line -------------------------------------------------------------------------


def parser(name: str, doc: str, sizes: list[int], quick_sizes: list[int]) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick, --sizes, --out, --seed, --profile."""
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"CI-sized run: sizes {quick_sizes}, seconds")
    ap.add_argument("--sizes", type=_sizes, default=None,
                    help=f"comma-separated vector counts, e.g. 10k,100k,1M (default {sizes})")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"result JSON, or a folder for {name}.json (default bench/results/{name}.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true",
                    help="cProfile each measured phase; the top functions go into the JSON")
    ap.set_defaults(default_sizes=sizes, quick_sizes=quick_sizes, name=name)
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and resolve ``sizes`` (quick / explicit / default) and ``out``."""
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = args.quick_sizes if args.quick else args.default_sizes
    out = args.out or RESULTS
    args.out = out / f"{args.name}.json" if out.suffix != ".json" else out
    return args


def _sizes(text: str) -> list[int]:
    units = {"k": 1_000, "m": 1_000_000}
    out = []
    for tok in text.lower().replace(" ", "").split(","):
        mult = units.get(tok[-1:], 1)
        out.append(int(float(tok[:-1] if mult > 1 else tok) * mult))
    return out


# --- machine ------------------------------------------------------------------------------


def machine() -> dict:
    """CPU, cores, RAM, GPU, library versions, load average and date: what the numbers depend on."""
    import faiss

    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(_meminfo_kib("MemTotal") / 2**20, 1),
        "gpu": _gpu_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        # GNU OpenMP spins idle threads by default; on a shared box that decides FAISS timings.
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")},
        "torch": _torch_version(),
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo_kib(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _gpu_name() -> str | None:
    # nvidia-smi, not torch: importing torch here would add ~0.4 GB to every RSS measured later.
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        return ", ".join(names) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- synthetic face-like embeddings -------------------------------------------------------

# Same-identity distance is ~sqrt(2 - 2/(1 + s2)) for per-sample noise energy s2:
# s2 in [0.15, 0.45] gives ~0.52-0.80. Identity centres share a mean direction
# (real embeddings are not centred) and lean towards one of a few "population"
# directions, so different identities sit at ~1.28 (same population) to ~1.38
# (different): clustered like real embeddings, not uniform on the sphere.
_NOISE_S2 = (0.15, 0.45)
_POPULATIONS = 16
_POP_WEIGHT = 0.45
_MEAN_WEIGHT = 0.3


@dataclass
class Faces:
    """Synthetic embeddings: ``x`` (n, d) unit float32 and ``identity`` (n,) labels."""

    x: np.ndarray
    identity: np.ndarray
    centres: np.ndarray = field(repr=False)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def face_embeddings(n: int, d: int = D, per_identity: int = 8, seed: int = 0) -> Faces:
    """``n`` unit vectors in identities of 1..2*per_identity-1 samples (mean ``per_identity``)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 2 * per_identity, size=n // per_identity + 16)
    while counts.sum() < n:  # rare short draw: top up (the common case keeps its random stream)
        counts = np.concatenate([counts, rng.integers(1, 2 * per_identity, size=n // per_identity // 10 + 16)])
    counts = counts[: np.searchsorted(np.cumsum(counts), n) + 1]
    identity = np.repeat(np.arange(len(counts)), counts)[:n]
    pops = unit_rows(rng.standard_normal((_POPULATIONS, d)))
    z = unit_rows(rng.standard_normal((len(counts), d)))
    mean = unit_rows(rng.standard_normal((1, d)))
    centres = unit_rows(z + _POP_WEIGHT * pops[rng.integers(0, _POPULATIONS, len(counts))] + _MEAN_WEIGHT * mean)
    x = samples_of(centres, identity, rng)
    perm = rng.permutation(n)  # identities interleaved, as photos arrive in any order
    return Faces(x[perm], identity[perm], centres)


def samples_of(centres: np.ndarray, identity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New noisy samples ("photos") of the given identities, built in chunks to bound memory."""
    d = centres.shape[1]
    out = np.empty((len(identity), d), np.float32)
    for s in range(0, len(identity), 262_144):
        ids = identity[s : s + 262_144]
        scale = np.sqrt(rng.uniform(*_NOISE_S2, size=(len(ids), 1)) / d).astype(np.float32)
        noise = rng.standard_normal((len(ids), d), dtype=np.float32) * scale
        out[s : s + len(ids)] = unit_rows(centres[ids] + noise)
    return out


def near_copies(x: np.ndarray, rows: np.ndarray, dist: tuple[float, float], rng) -> np.ndarray:
    """Near-duplicates of ``x[rows]`` at L2 distance ~uniform(``dist``) (small-angle noise)."""
    d = x.shape[1]
    target = rng.uniform(*dist, size=(len(rows), 1)).astype(np.float32)
    noise = rng.standard_normal((len(rows), d), dtype=np.float32)
    noise -= (noise * x[rows]).sum(1, keepdims=True) * x[rows]  # orthogonal: distance ~= |noise|
    noise *= target / np.linalg.norm(noise, axis=1, keepdims=True)
    return unit_rows(x[rows] + noise)


def distance_profile(faces: Faces, n_pairs: int = 20_000, seed: int = 1) -> dict:
    """Percentiles of same- and different-identity distances: evidence the data looks face-like."""
    rng = np.random.default_rng(seed)
    order = np.argsort(faces.identity, kind="stable")
    ident = faces.identity[order]
    a = rng.integers(0, len(order) - 1, n_pairs)
    same = ident[a] == ident[a + 1]
    d_same = np.linalg.norm(faces.x[order[a[same]]] - faces.x[order[a[same] + 1]], axis=1)
    i, j = rng.integers(0, len(order), (2, n_pairs))
    diff = faces.identity[i] != faces.identity[j]
    d_diff = np.linalg.norm(faces.x[i[diff]] - faces.x[j[diff]], axis=1)
    pct = lambda v: [round(float(p), 3) for p in np.percentile(v, [5, 50, 95])] if len(v) else None  # noqa: E731
    return {"same_identity_p5_p50_p95": pct(d_same), "different_identity_p5_p50_p95": pct(d_diff)}


# --- timing, memory, profiling ------------------------------------------------------------


@contextmanager
def network_precision(precision: str | None) -> Iterator[None]:
    """YuNet built at ``precision`` (``$FACESEARCH_PRECISION``, read when the model is built) for the
    duration (None: as the environment says); the setting and the cached model put back
    afterwards. Both networks read it when they are built (the embedder per EmbeddingEngine)."""
    from facesearch.faces import tiling

    asked = os.environ.get("FACESEARCH_PRECISION")
    if precision:
        os.environ["FACESEARCH_PRECISION"] = precision
    tiling.yunet_model.cache_clear()
    try:
        yield
    finally:
        os.environ.pop("FACESEARCH_PRECISION", None)
        if asked is not None:
            os.environ["FACESEARCH_PRECISION"] = asked
        tiling.yunet_model.cache_clear()


@contextmanager
def timer() -> Iterator[dict]:
    """``with timer() as t: ...`` then ``t["s"]`` holds the elapsed seconds."""
    t = {"s": 0.0}
    t0 = time.perf_counter()
    try:
        yield t
    finally:
        t["s"] = time.perf_counter() - t0


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class RssSampler:
    """Peak RSS over a block, sampled by a thread every ``interval`` s.

    ``ru_maxrss`` is a lifetime maximum (an earlier phase would mask this one)
    and tracemalloc misses FAISS's C++ allocations and slows numpy, so sample.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> "RssSampler":
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


class Profiler:
    """Optional cProfile of named phases; ``top()`` gives the costliest functions per phase."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.stats: dict[str, list[dict]] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        prof = cProfile.Profile()
        prof.enable()
        try:
            yield
        finally:
            prof.disable()
            self.stats[name] = _top(prof)


def _top(prof: cProfile.Profile, n: int = 12) -> list[dict]:
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in st.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": ncalls,
                     "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3)})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:n]


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(seconds, q)), 3)


# --- targets, tables, results -------------------------------------------------------------


def target(name: str, value: float | None, limit: float, better: str, unit: str = "") -> dict:
    """A target verdict: ``better`` is "lower" (value <= limit) or "higher" (value >= limit).

    ``ratio`` = value / limit: below 1 meets a "lower" target, above 1 a "higher" one.
    """
    if value is None:
        return {"target": name, "limit": limit, "unit": unit, "value": None, "met": None, "ratio": None}
    met = value <= limit if better == "lower" else value >= limit
    return {"target": name, "limit": limit, "unit": unit, "better": better, "value": value,
            "met": bool(met), "ratio": round(value / limit, 3) if limit else None}


def verdict(t: dict) -> str:
    if t["met"] is None:
        return "not measured"
    ratio = "" if t["ratio"] is None else f", ratio {t['ratio']:g}"  # a limit of 0 has no ratio
    return f"{'met' if t['met'] else 'MISSED'} ({t['value']:g} {t['unit']} vs {t['limit']:g}{ratio})"


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    """A Rich table on stdout (plain text when Rich is missing)."""
    cells = [[_cell(v) for v in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        print("  ".join(columns))
        for row in cells:
            print("  ".join(row))
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c not in ("index", "target", "status") else "left")
    for row in cells:
        table.add_row(*row)
    Console(width=160).print(table)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_results(path: Path, results: dict) -> None:
    """Write ``results`` to ``path`` atomically (a crash never leaves half a JSON)."""
    results.setdefault("machine", {})["loadavg_end"] = loadavg()
    atomic_write_json(path, results)
    print(f"wrote {path}")
