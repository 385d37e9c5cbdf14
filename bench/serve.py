"""``facesearch serve``: warm query latency against a cold CLI query, and throughput under load.

The index holds 10,000 faces: their vectors are synthetic face-like unit vectors in the shipped
model's space (``_common.face_embeddings``), written straight into a real index (SQLite + FAISS),
so the search cost is that of a 10k-face collection without indexing 10k photos first. The query
is a real one-face photo from ``dev/pins_celebs``: every request decodes, detects, aligns and
embeds it with the shipped model, then searches. The server is ``python -m facesearch serve`` in
its own process on loopback; clients are threads with one ``httpx.Client`` each.

- warm: ``--requests`` sequential ``POST /api/query`` after a warm-up, p50/p95; then the same
  against a server on the torch inference path (``FACESEARCH_RUNTIME=torch``, as before issue 28),
  side by side in the same run;
- cold: ``python -m facesearch query PHOTO --json`` as a new process (what a script pays today),
  median of 3, and the ratio cold / warm p50;
- load: 1, 4 and 16 concurrent clients for ``--seconds`` each (60 for 16, the issue's test):
  requests/s, p50/p95 and errors (any non-200 or exception).

    python bench/serve.py            # ~3 minutes
    python bench/serve.py --quick    # 1,000 faces, 10 s of load, 20 requests

Prints tables and writes ``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from facesearch.store.face_index import FaceIndex, FileUpdate  # noqa: E402
from facesearch.models.weights_meta import read_meta, resolve_weights  # noqa: E402

DATA = C.REPO.parent / "shared" / "data"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--faces", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0, help="load per client count (16 clients: max(this, 60))")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=C.RESULTS / "serve.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.faces, args.requests, args.seconds = 1_000, 20, 10.0
    return args


def build_index(folder: Path, n: int) -> None:
    """A real index of ``n`` faces with synthetic vectors in the shipped model's space, 500 of them labelled."""
    meta = read_meta(resolve_weights(None))
    dim = meta["config"]["embedding_dim"]
    faces = C.face_embeddings(n, d=dim, seed=0)
    with FaceIndex.create(folder, meta["model_id"], meta["config"], dim) as store:
        for a in range(0, n, 2000):
            store.write_batch([FileUpdate(f"/synthetic/p{k:06d}.jpg", 1, 1, faces=[{"box": (0, 0, 100, 100)}],
                                          embeddings=faces.x[k:k + 1], label=f"id{faces.identity[k]}" if k < 500 else None)
                               for k in range(a, min(n, a + 2000))])


def probe_photo() -> Path:
    person = sorted((DATA / "dev" / "pins_celebs").iterdir())[0]
    return sorted(person.iterdir())[0]


def start_server(index: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "facesearch", "serve", "--index", str(index), "--port", str(port),
                             "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 120:
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped: {proc.stderr.read()[-2000:]}")
    raise SystemExit("the server did not come up in 120 s")


def one_query(client, url: str, photo: bytes) -> float:
    t = time.perf_counter()
    r = client.post(url + "/api/query", files={"image": ("probe.jpg", photo, "image/jpeg")})
    if r.status_code != 200 or len(r.json()["faces"]) != 1:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
    return time.perf_counter() - t


def warm(url: str, photo: bytes, n: int) -> dict:
    import httpx

    with httpx.Client(timeout=60) as client:
        for _ in range(3):
            one_query(client, url, photo)
        times = [one_query(client, url, photo) for _ in range(n)]
    return {"requests": n, "p50_ms": C.percentile_ms(times, 50), "p95_ms": C.percentile_ms(times, 95)}


def cold(index: Path, photo: Path) -> dict:
    times = []
    for _ in range(3):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "facesearch", "query", str(photo), "--index", str(index), "--json"],
                              capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"cold query failed: {proc.stderr[-1000:]}")
    return {"runs": 3, "median_ms": round(1000 * statistics.median(times), 1)}


def load(url: str, photo: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads querying as fast as answers come, for ``seconds``."""
    import httpx

    times, errors, lock = [], [], threading.Lock()
    stop = time.perf_counter() + seconds

    def client_loop() -> None:
        with httpx.Client(timeout=120) as client:
            while time.perf_counter() < stop:
                try:
                    dt = one_query(client, url, photo)
                    with lock:
                        times.append(dt)
                except Exception as e:  # counted, not fatal: the target is zero of them
                    with lock:
                        errors.append(str(e)[:200])

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(times), "errors": len(errors),
            "error_examples": errors[:3], "requests_per_s": round(len(times) / wall, 2),
            "p50_ms": C.percentile_ms(times, 50) if times else None, "p95_ms": C.percentile_ms(times, 95) if times else None}


def main(argv=None) -> dict:
    args = parse_args(argv)
    photo = probe_photo()
    with tempfile.TemporaryDirectory(prefix="facesearch-bench-serve-") as tmp:
        index = Path(tmp) / "index"
        build_index(index, args.faces)
        proc, url = start_server(index)
        try:
            data = photo.read_bytes()
            results = {"benchmark": "serve", "machine": C.machine(), "faces": args.faces, "photo": photo.name,
                       "warm": warm(url, data, args.requests)}
            results["load"] = [load(url, data, n, max(args.seconds, 60.0) if n == 16 and not args.quick
                                    else args.seconds) for n in (1, 4, 16)]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        proc, url = start_server(index, {"FACESEARCH_RUNTIME": "torch"})
        try:
            results["warm_torch_path"] = warm(url, data, args.requests)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        results["cold"] = cold(index, photo)
    results["cold_over_warm"] = round(results["cold"]["median_ms"] / results["warm"]["p50_ms"], 1)
    sixteen = results["load"][-1]
    results["targets"] = [C.target(f"warm POST /api/query p50 ({args.faces:,} faces)", results["warm"]["p50_ms"], 150,
                                   "lower", "ms"),
                          C.target("warm POST /api/query p50 (issue 28)", results["warm"]["p50_ms"], 50, "lower", "ms"),
                          C.target("warm POST /api/query p50 (issue 38)", results["warm"]["p50_ms"], 25, "lower", "ms"),
                          C.target(f"errors, 16 clients for {sixteen['seconds']} s", sixteen["errors"], 0, "lower")]
    C.print_table("warm vs cold query", ["warm p50 ms", "warm p95 ms", "torch path p50 ms", "cold CLI ms",
                                         "cold / warm"],
                  [[results["warm"]["p50_ms"], results["warm"]["p95_ms"], results["warm_torch_path"]["p50_ms"],
                    results["cold"]["median_ms"], results["cold_over_warm"]]])
    cols = ["clients", "seconds", "requests", "errors", "requests_per_s", "p50_ms", "p95_ms"]
    C.print_table("load", cols, [[r[c] for c in cols] for r in results["load"]])
    for t in results["targets"]:
        print(f"{t['target']}: {C.verdict(t)}")
    C.write_results(args.out, results)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
