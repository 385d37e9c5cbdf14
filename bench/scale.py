"""Scaling facesearch: the indexing engines on the same real photos.

* ``engines``: ``index_collection`` with ``--engine local`` (a process pool) and
  ``--engine ray`` (Ray Data stages on a Ray runtime the engine starts on this
  machine, or the cluster at ``--address``) on the same ``--photos`` real photos
  from ``../shared/data/dev`` (evenly spread over its sets; default 1,000), each into
  a fresh index in a temporary folder outside the repo (the photos are read where
  they are, never copied). Both runs are timed in this process from the call to the
  summary: Ray's start-up, model loads, detection, embedding and writing included.
  The two indexes are then compared: the same files with the same statuses, the
  same faces (boxes), and the cosine of each face's two embeddings (its minimum).

    python bench/scale.py                # 1,000 photos, a few minutes on 2 busy cores
    python bench/scale.py --photos 300
    python bench/scale.py --quick        # 40 photos

* ``backends``: the FAISS vector store, Milvus Lite (embedded) and, with ``--milvus``,
  a Milvus server, through facesearch's own seam, on synthetic 256-d face-like vectors
  at ``--sizes`` (default 100k and 1M): insert, index build, recall@10, query p50/p95,
  dedupe time (bench/_scale_vectors.py). ``--milvus start`` starts a server on
  127.0.0.1 for the run (tests/servers.py, the PyPI package ``milvus``); ``--sweep``
  also times the server's dedupe pass at several queries per request.

    python bench/scale.py --skip-engines --sizes 100k,1M             # the backends only
    python bench/scale.py --skip-engines --sizes 100k --milvus start --sweep
    python bench/scale.py --skip-backends                            # the engines only
    python bench/scale.py --skip-backends --address start            # ray on a 2-node loopback cluster

``--address start`` starts a two-node Ray cluster on 127.0.0.1 for the run (a head node
with ``--workers`` CPUs, default 2, and a worker node with 1), so the ray engine joins a
cluster by address as on real machines; the local engine is measured beside it.

Prints tables and writes the keys ``engines`` and ``backends`` of
``bench/results/scale.json`` (a part not run keeps its previous result).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from _scale_vectors import STORES, bench_backends, print_backends  # noqa: E402
from embed import out_path  # noqa: E402

DEV = C.REPO.parent / "shared" / "data" / "dev"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = _read_json(args.out)
    results.update({"benchmark": "scale", "machine": C.machine()})
    if not args.skip_backends:
        with _milvus(args.milvus, args.tmp) as milvus:
            stores = tuple(args.stores.split(","))
            previous = results.get("backends") if set(stores) != set(STORES) else None
            results["backends"] = bench_backends(args.sizes, _dedupe_tau(), work=args.tmp, milvus=milvus,
                                                 sweep=args.sweep, stores=stores, previous=previous)
        print_backends(results["backends"])
    if not args.skip_engines:
        with _cluster(args) as address:
            results["engines"] = _engines(args, address)
    C.write_results(args.out, results)
    return 0


@contextmanager
def _milvus(spec: str | None, tmp: str | None):
    """The Milvus server to measure: ``spec``, or one started on 127.0.0.1 for ``start``."""
    if spec != "start":
        yield spec
        return
    servers = _servers()
    with tempfile.TemporaryDirectory(prefix="facesearch-bench-milvus-", dir=tmp) as base:
        handle = servers.start_milvus(Path(base))
        try:
            yield handle.uri
        finally:
            from facesearch.store.vectors.milvus_server import close_clients

            close_clients()
            handle.stop()


@contextmanager
def _cluster(args: argparse.Namespace):
    """The Ray address for the ray engine: ``--address``, or a loopback cluster for ``start``."""
    if args.address != "start":
        yield args.address
        return
    cluster = _servers().start_ray_cluster(head_cpus=args.workers or 2)
    try:
        cluster.add_worker(num_cpus=1)
        yield cluster.address
    finally:
        cluster.stop()


def _servers():
    """tests/servers.py: the loopback Milvus server and Ray cluster the tests use too."""
    if str(C.REPO) not in sys.path:
        sys.path.insert(0, str(C.REPO))
    from tests import servers

    return servers


def _engines(args: argparse.Namespace, address: str | None) -> dict:
    photos = dev_photos(args.photos)
    if not photos:
        print(f"shared face data not found at {DEV}")
        return {"skipped": f"shared face data not found at {DEV}"}
    work = Path(tempfile.mkdtemp(prefix="facesearch-bench-scale-", dir=args.tmp))
    try:
        res = bench_engines(photos, work, workers=args.workers, address=address)
        res["cluster"] = "two nodes on 127.0.0.1 (started for the run)" if args.address == "start" else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_engines(res)
    return res


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 photos (under a minute)")
    ap.add_argument("--photos", type=int, default=None, help="real dev photos to index (default 1000; quick 40)")
    ap.add_argument("--workers", type=int, default=None, help="detection workers / Ray CPUs (default: all cores)")
    ap.add_argument("--address", default=None,
                    help="Ray cluster for the ray engine; 'start': a 2-node cluster on 127.0.0.1 (default: a local runtime)")
    ap.add_argument("--tmp", default=None, help="where the indexes go (default: the system temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON, or a folder for scale.json")
    ap.add_argument("--sizes", type=C._sizes, default=None, help="vector counts for the backends (default 100k,1M)")
    ap.add_argument("--skip-engines", action="store_true", help="only the vector-store comparison")
    ap.add_argument("--milvus", default=None,
                    help="a Milvus server to measure beside Lite, milvus://HOST:PORT, or 'start' (one on 127.0.0.1)")
    ap.add_argument("--sweep", action="store_true", help="the server's dedupe pass at several queries per request")
    ap.add_argument("--stores", default=",".join(STORES),
                    help="which stores to measure (others keep their earlier rows): " + ",".join(STORES))
    ap.add_argument("--skip-backends", action="store_true", help="only the engine comparison")
    args = ap.parse_args(argv)
    args.sizes = args.sizes or ([20_000] if args.quick else [100_000, 1_000_000])
    args.photos = args.photos or (40 if args.quick else 1000)
    args.out = out_path(args.out, "scale")
    if args.tmp and Path(args.tmp).resolve().is_relative_to(C.REPO):
        ap.error("--tmp must be outside the repository")
    return args


def _dedupe_tau() -> float:
    """The τ `facesearch dedupe` uses by default with the shipped model."""
    from facesearch.eval.tau import TauPolicy
    from facesearch.models.weights_meta import read_meta, resolve_weights

    return TauPolicy.from_config(read_meta(resolve_weights(None))["config"]).duplicates()[0]


def dev_photos(n: int) -> list[Path]:
    """``n`` photos evenly spread over the sorted dev files (every set, most people)."""
    files = sorted(p for p in DEV.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if DEV.is_dir() else []
    if n >= len(files):
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, num=n).round().astype(int)]


# --- engines ---------------------------------------------------------------------------------


def bench_engines(photos: list[Path], work: Path, workers: int | None = None, address: str | None = None) -> dict:
    """Index ``photos`` with each engine into ``work``; timings, and how far the two indexes agree."""
    runs = {"local": index_run(photos, work / "index-local", "local", workers),
            "ray": index_run(photos, work / "index-ray", "ray", workers, address)}
    out = {"photos": len(photos), "sets": sorted({p.relative_to(DEV).parts[0] for p in photos if DEV in p.parents}),
           "workers": workers, "address": address, "runs": runs,
           "same_results": compare_indexes(work / "index-local", work / "index-ray")}
    out["ray_over_local_seconds"] = round(runs["ray"]["seconds"] / runs["local"]["seconds"], 2)
    return out


def index_run(photos: list[Path], index: Path, engine: str, workers: int | None, address: str | None = None) -> dict:
    """One fresh index of ``photos`` with ``engine``: wall seconds and the summary's counts."""
    from facesearch.indexing.run import IndexOptions, index_collection

    opts = IndexOptions(paths=[str(p) for p in photos], index=index, workers=workers, engine=engine, address=address)
    t0 = time.perf_counter()
    s = index_collection(opts)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "photos_per_s": round(s.scanned / seconds, 2), "files": s.scanned,
            "faces": s.faces, "noface": s.noface, "bad": s.bad, "failed": s.failed}


def compare_indexes(a: Path, b: Path) -> dict:
    """Same files, statuses and faces? The largest box difference and the smallest embedding cosine."""
    fa, fb = _faces_by_file(a), _faces_by_file(b)
    same_files = fa.keys() == fb.keys()
    common = [p for p in fa if p in fb]
    same_faces = all(len(fa[p][1]) == len(fb[p][1]) for p in common)
    box_diff, cosines = 0.0, []
    for p in (p for p in common if len(fa[p][1]) == len(fb[p][1])):
        for (box_a, xa), (box_b, xb) in zip(fa[p][1], fb[p][1]):
            box_diff = max(box_diff, float(np.max(np.abs(np.subtract(box_a, box_b)))))
            cosines.append(float(xa @ xb))
    return {"same_files": same_files, "same_statuses": all(fa[p][0] == fb[p][0] for p in common),
            "same_face_counts": same_faces, "faces": sum(len(v[1]) for v in fa.values()),
            "max_box_diff_px": round(box_diff, 6), "min_cosine": round(min(cosines), 6) if cosines else None}


def _faces_by_file(index: Path) -> dict[str, tuple[str, list]]:
    from facesearch.store.face_index import FaceIndex

    with FaceIndex.open(index, readonly=True) as store:
        return store.faces_by_file()


# --- report ----------------------------------------------------------------------------------


def print_engines(res: dict) -> None:
    cols = ["engine", "files", "seconds", "photos_per_s", "faces", "noface", "bad", "failed"]
    rows = [[name] + [r.get(c) for c in cols[1:]] for name, r in res["runs"].items()]
    C.print_table(f"indexing {res['photos']} real dev photos, fresh index each", cols, rows)
    print("same results:", res["same_results"])
    print("ray / local seconds:", res["ray_over_local_seconds"])


def _read_json(path: Path) -> dict:
    """The results file so far: other parts of this benchmark keep their keys."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


if __name__ == "__main__":
    raise SystemExit(main())
