"""Benchmark near-duplicate finding (``ops.range_pairs``) at scale.

Data: the clustered face-like embeddings of ``bench/search.py`` (d=128) with
planted near-duplicate groups of 2-5 vectors (pairwise L2 <= ~0.3, well under
tau) seeded from ~5% of the faces. For each size it builds the automatic index
(``ops.build_index(..., "auto")``), runs ``ops.range_pairs`` at tau (default
0.5) and ``ops.connected_components``, and reports time, peak RSS (sampled by
a thread), pair count and pair recall / precision against the exact pairs:

* n <= --exact-max (100k): ``ops.exact_pairs`` on the full set, timed side by side;
* larger n: exact pairs of a random sample of rows (``ops.exact_range`` of those
  rows against the whole base, blockwise), compared with the found pairs that
  touch the sample. The JSON says which.

Planted-pair recall (all planted pairs, any n) is reported too.

    python bench/dedupe.py                  # 100k, 1M
    python bench/dedupe.py --sizes 100k
    python bench/dedupe.py --quick          # 5k, seconds (CI)
    python bench/dedupe.py --sizes 1M --product   # + find_duplicates end to end on a real index

Prints tables and writes ``bench/results/dedupe.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from facesearch.store.vectors import ops  # noqa: E402

TAU = 0.5
DUP_FRACTION = 0.05  # of all vectors that belong to a planted group
DUP_DIST = (0.05, 0.2)  # copy-to-original distance; copy-to-copy <= ~0.28
_SLACK = 1e-4  # candidate radius slack; pair_distances decides the final cut (as ops does)
_EXACT_CHUNK = 16_384  # base rows per exact_range call (keeps its blocks GEMM-shaped)


@dataclass
class Planted:
    x: np.ndarray
    group: np.ndarray  # planted group per row, -1 for rows in none
    pairs: np.ndarray  # (m, 2) planted pairs i < j (positions = ids)


def main(argv: list[str] | None = None) -> int:
    ap = C.parser("dedupe", __doc__, sizes=[100_000, 1_000_000], quick_sizes=[5_000])
    ap.add_argument("--tau", type=float, default=TAU, help=f"L2 distance threshold (default {TAU})")
    ap.add_argument("--index", default="auto", help="index type for range_pairs (default auto)")
    ap.add_argument("--exact-max", type=int, default=100_000, help="largest n checked by exact_pairs on all rows")
    ap.add_argument("--sample", type=int, default=10_000, help="rows sampled for the exact check above --exact-max")
    ap.add_argument("--product", action="store_true",
                    help="also time find_duplicates end to end on a real index of the same vectors")
    args = C.parse(ap, argv)
    prof = C.Profiler(args.profile)
    results = {"benchmark": "dedupe", "machine": C.machine(), "quick": args.quick,
               "params": {"tau": args.tau, "index": args.index, "dup_fraction": DUP_FRACTION,
                          "dup_distance": list(DUP_DIST), "group_sizes": [2, 5], "seed": args.seed,
                          "d": C.D, "k_cap": ops.RANGE_K_CAP},
               "sizes": {}}
    for n in args.sizes:
        results["sizes"][str(n)] = bench_size(n, args, prof)
        print(f"done n={n:,} (load {C.loadavg()})", flush=True)
    results["gpu"] = bench_gpu(args)
    results["targets"] = targets(results)
    if prof.enabled:
        results["profile"] = prof.stats
    print_tables(results)
    C.write_results(args.out, results)
    return 0


# --- data ---------------------------------------------------------------------------------


def planted_faces(n: int, seed: int) -> Planted:
    """``n`` face-like vectors, ~DUP_FRACTION of them in near-duplicate groups of 2-5."""
    rng = np.random.default_rng(seed + 7)
    sizes = rng.integers(2, 6, size=max(1, int(n * DUP_FRACTION / 3.5)))
    faces = C.face_embeddings(n - int((sizes - 1).sum()), seed=seed)
    seeds = rng.choice(len(faces.x), len(sizes), replace=False)
    copies = C.near_copies(faces.x, np.repeat(seeds, sizes - 1), DUP_DIST, rng)
    group = np.full(n, -1, np.int64)
    group[seeds] = np.arange(len(sizes))
    group[len(faces.x):] = np.repeat(np.arange(len(sizes)), sizes - 1)
    perm = rng.permutation(n)
    x, group = np.concatenate([faces.x, copies])[perm], group[perm]
    return Planted(x, group, _group_pairs(group))


def _group_pairs(group: np.ndarray) -> np.ndarray:
    """All pairs of positions within each group (groups have <= 5 members)."""
    pos = np.flatnonzero(group >= 0)
    pos = pos[np.argsort(group[pos], kind="stable")]
    g = group[pos]
    pairs = [np.stack([pos[:-o], pos[o:]], 1)[g[:-o] == g[o:]] for o in range(1, 5) if o < len(pos)]
    p = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return np.sort(p, axis=1)


# --- one size -----------------------------------------------------------------------------


def bench_size(n: int, args, prof: C.Profiler) -> dict:
    data = planted_faces(n, args.seed)
    x, ids = data.x, np.arange(n, dtype=np.int64)
    out = {"n": n, "planted_groups": int(data.group.max() + 1), "planted_pairs": len(data.pairs),
           "loadavg_start": C.loadavg()}
    with C.RssSampler() as mem:
        with prof.phase(f"n={n} build"), C.timer() as t_build:
            index = ops.build_index(x, ids, args.index)
        with prof.phase(f"n={n} range_pairs"), C.timer() as t_pairs:
            i, j, _ = ops.range_pairs(index, args.tau, xb=x, ids=ids)
    with C.timer() as t_cc:
        comps = ops.connected_components(ids, i, j, min_size=2)
    del index
    out["fast"] = {"index": args.index, "resolved": ops.resolve_index_type(args.index, n),
                   "build_s": round(t_build["s"], 3), "pairs_s": round(t_pairs["s"], 3),
                   "components_s": round(t_cc["s"], 3), "total_s": round(t_build["s"] + t_pairs["s"] + t_cc["s"], 3),
                   "peak_rss_bytes": mem.peak, "rss_start_bytes": mem.start,
                   "peak_rss_delta_bytes": mem.peak - mem.start, "pairs": len(i), "groups": len(comps),
                   "planted_pair_recall": round(_recall(_keys(data.pairs[:, 0], data.pairs[:, 1], n),
                                                        _keys(i, j, n)), 5),
                   "planted_groups_whole": round(_groups_whole(comps, data), 5)}
    out["exact"] = exact_check(x, i, j, args, n)
    if args.product:
        out["product"] = product_path(data, args)
    print(f"  n={n:,} {out['fast']['resolved']}: build {t_build['s']:.1f}s pairs {t_pairs['s']:.1f}s "
          f"{len(i):,} pairs, recall {out['exact']['pair_recall']}", flush=True)
    return out


def product_path(data: Planted, args) -> dict:
    """``facesearch dedupe`` as users run it: ``find_duplicates`` on a real index (SQLite + FAISS)
    holding the vectors as one face per photo, timed end to end (pairs, rows, grouping, keepers,
    exact duplicates) with its peak RSS. Filling the index is indexing, timed apart."""
    import shutil
    import tempfile

    from facesearch.search.dedupe import DedupeOptions, find_duplicates
    from facesearch.store.face_index import FaceIndex, FaceRecord

    folder = Path(tempfile.mkdtemp(prefix="fs_dedupe_bench_")) / "idx"
    try:
        with C.timer() as t_fill:
            config = {"embedding_dim": C.D, "tau": max(0.6, args.tau), "tau_dedupe": args.tau}
            with FaceIndex.create(folder, model_id="bench", model_config=config, dim=C.D) as store:
                for a in range(0, len(data.x), 50_000):
                    store.write_batch([{"path": f"/bench/{k // 1000:04d}/{k}.jpg", "size": 1000 + k % 997,
                                        "mtime_ns": k, "hash": f"h{k}", "faces": [FaceRecord((0, 0, 90, 90), 0.9, None)],
                                        "embeddings": data.x[k:k + 1]} for k in range(a, min(a + 50_000, len(data.x)))])
                store.search(data.x[:1], 1)  # the FAISS index a real index already holds
        with C.RssSampler() as mem, C.timer() as t_find:
            report = find_duplicates(DedupeOptions(index=folder, tau=args.tau, scope="faces"))
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    sizes = [len(g["members"]) for g in report["groups"]]
    print(f"  product path: fill {t_fill['s']:.1f}s, find_duplicates {t_find['s']:.1f}s, "
          f"{len(sizes):,} groups, peak {mem.peak / 2**30:.2f} GiB", flush=True)
    return {"fill_s": round(t_fill["s"], 3), "find_duplicates_s": round(t_find["s"], 3), "pairs": report["n_pairs"],
            "groups": len(sizes), "largest_group": max(sizes, default=0), "peak_rss_bytes": mem.peak}


def exact_check(x, i, j, args, n) -> dict:
    """Pair recall / precision of (i, j) against exact pairs: all rows, or a row sample."""
    found = _keys(i, j, n)
    if n <= args.exact_max:
        with C.RssSampler() as mem, C.timer() as t:
            ei, ej, _ = ops.exact_pairs(x, args.tau)
        exact = _keys(ei, ej, n)
        return {"method": "ops.exact_pairs on all rows", "rows_checked": n, "exact_pairs": len(exact),
                "exact_s": round(t["s"], 3), "exact_peak_rss_delta_bytes": mem.peak - mem.start,
                "pair_recall": round(_recall(exact, found), 5), "pair_precision": round(_recall(found, exact), 5)}
    rows = np.sort(np.random.default_rng(args.seed + 3).choice(n, min(args.sample, n), replace=False))
    with C.timer() as t:
        ei, ej = exact_pairs_of_rows(x, rows, args.tau)
    exact = _keys(ei, ej, n)
    touch = np.isin(i, rows) | np.isin(j, rows)
    found_s = _keys(i[touch], j[touch], n)
    share = 1 - (1 - len(rows) / n) ** 2  # chance that a pair has an end in the sample
    return {"method": f"exact pairs of {len(rows):,} random rows against all {n:,} (ops.exact_range, "
                      "blockwise); found pairs restricted to those rows",
            "rows_checked": len(rows), "exact_pairs_touching_sample": len(exact),
            "exact_pairs_estimated_total": round(len(exact) / share), "exact_s": round(t["s"], 3),
            "pair_recall": round(_recall(exact, found_s), 5), "pair_precision": round(_recall(found_s, exact), 5)}


def exact_pairs_of_rows(x: np.ndarray, rows: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact pairs (i < j, d <= tau) with an end in ``rows``: ops.exact_range per base chunk."""
    qs, ns = [], []
    for s in range(0, len(x), _EXACT_CHUNK):
        lims, _, I = ops.exact_range(x[s : s + _EXACT_CHUNK], tau + _SLACK, xq=x[rows])
        qs.append(np.repeat(rows, np.diff(lims)))
        ns.append(I + s)
    q, nb = np.concatenate(qs), np.concatenate(ns)
    q, nb = q[q != nb], nb[q != nb]
    keep = ops.pair_distances(x, q, nb) <= tau  # direct differences, as range_pairs cuts
    return np.minimum(q, nb)[keep], np.maximum(q, nb)[keep]


def _keys(i, j, n) -> np.ndarray:
    return np.unique(np.asarray(i, np.int64) * n + np.asarray(j, np.int64))


def _recall(want: np.ndarray, got: np.ndarray) -> float:
    """Fraction of ``want`` in ``got`` (both sorted unique keys); 1.0 when ``want`` is empty."""
    return float(np.isin(want, got, assume_unique=True).mean()) if len(want) else 1.0


def _groups_whole(comps: list[list[int]], data: Planted) -> float:
    """Fraction of planted groups whose members all fall in one found component."""
    comp = np.full(len(data.x), -1, np.int64)
    for c, members in enumerate(comps):
        comp[members] = c
    a, b = data.pairs[:, 0], data.pairs[:, 1]
    split = np.unique(data.group[a][(comp[a] < 0) | (comp[a] != comp[b])])
    n_groups = data.group.max() + 1
    return 1 - len(split) / n_groups if n_groups > 0 else 1.0


# --- GPU ----------------------------------------------------------------------------------


def bench_gpu(args) -> dict:
    """range_pairs on a GPU flat index at the largest size, when FAISS sees a GPU."""
    if not ops.gpu_available():
        return {"skipped": "no GPU: this FAISS build has no CUDA or sees no device (faiss-cpu)"}
    n = max(args.sizes)
    data = planted_faces(n, args.seed)
    ids = np.arange(n, dtype=np.int64)
    index = ops.build_index(data.x, ids, "flat")
    # The CPU index with gpu=True: ops copies it (timed here) and keeps the CPU one for exact fallbacks.
    with C.timer() as t:
        i, j, _ = ops.range_pairs(index, args.tau, xb=data.x, ids=ids, gpu=True)
    return {"n": n, "index": "flat (GPU, copy included)", "pairs_s": round(t["s"], 3),
            "pairs": len(i), "exact": exact_check(data.x, i, j, args, n)}


# --- targets and tables -------------------------------------------------------------------


def targets(results: dict) -> list[dict]:
    """Dedupe targets, judged at 1M when measured (else at the largest size, marked)."""
    if not results["sizes"]:
        return []
    n = max(results["sizes"], key=int)
    r = results["sizes"][n]
    at = f"n={int(n):,}" + ("" if int(n) == 1_000_000 else " (not 1M: indicative only)")
    out = [C.target(f"dedupe time, range_pairs on the built index ({at})", r["fast"]["pairs_s"], 300, "lower", "s"),
           C.target(f"dedupe time incl. index build ({at})", r["fast"]["build_s"] + r["fast"]["pairs_s"], 300,
                    "lower", "s"),
           C.target(f"pair recall ({at})", r["exact"]["pair_recall"], 0.95, "higher"),
           C.target(f"peak RSS, whole process ({at})", round(r["fast"]["peak_rss_bytes"] / 2**30, 3), 4.0,
                    "lower", "GiB")]
    if "product" in r:
        out.append(C.target(f"find_duplicates end to end, the product path ({at})", r["product"]["find_duplicates_s"],
                            300, "lower", "s"))
        out.append(C.target(f"find_duplicates peak RSS ({at})", round(r["product"]["peak_rss_bytes"] / 2**30, 3), 4.0,
                            "lower", "GiB"))
    gpu = results.get("gpu", {})
    if "pairs_s" in gpu:
        out.append(C.target(f"GPU dedupe (n={gpu['n']:,})", gpu["pairs_s"], 30, "lower", "s"))
    for t in out:
        t["n"] = int(n)
    return out


def print_tables(results: dict) -> None:
    cols = ["n", "index", "build s", "pairs s", "total s", "peak RSS GiB", "pairs", "exact pairs",
            "exact s", "recall", "precision", "planted recall", "groups whole", "exact/fast time"]
    rows = []
    for n, r in results["sizes"].items():
        f, e = r["fast"], r["exact"]
        n_exact = e.get("exact_pairs", e.get("exact_pairs_touching_sample"))
        sampled = "" if "exact_pairs" in e else f" (sample {e['rows_checked']:,})"
        rows.append([int(n), f["resolved"], f["build_s"], f["pairs_s"], f["total_s"],
                     round(f["peak_rss_bytes"] / 2**30, 3), f["pairs"], f"{n_exact:,}{sampled}", e["exact_s"],
                     e["pair_recall"], e["pair_precision"], f["planted_pair_recall"], f["planted_groups_whole"],
                     round(e["exact_s"] / f["total_s"], 2) if "exact_pairs" in e else None])
    C.print_table(f"dedupe at tau={results['params']['tau']}", cols, rows)
    gpu = results["gpu"]
    print(f"GPU: skipped ({gpu['skipped']})" if "skipped" in gpu else f"GPU: {gpu}")
    C.print_table("targets", ["target", "status"], [[t["target"], C.verdict(t)] for t in results["targets"]])


if __name__ == "__main__":
    raise SystemExit(main())
