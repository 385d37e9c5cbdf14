"""``index --engine ray --address``: a real two-node Ray cluster on 127.0.0.1.

The cluster (tests/servers.py) is a head node and a worker node, each its own raylet and
object store, joined by address: the same protocol as a cluster of machines. The CLI runs as
a separate process, a driver that joins it as a user's would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from facesearch.indexing import ray_engine  # noqa: E402
from facesearch.indexing.run import IndexOptions, index_collection  # noqa: E402
from facesearch.photos.synthetic import make_identity_folder  # noqa: E402
from tests import servers  # noqa: E402
from tests.conftest import one_at_a_time  # noqa: E402
from tests.test_ray_engine import assert_same_index, snapshot  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 420  # seconds for one CLI run on the cluster (2 busy cores)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node (1 CPU) and a worker node (1 CPU) on loopback, stopped after the module; never beside
    the local runtime of tests/test_ray_engine.py on another pytest worker."""
    with one_at_a_time("ray", tmp_path_factory):
        try:
            c = servers.start_ray_cluster(head_cpus=1)
        except RuntimeError as e:
            pytest.skip(f"no Ray cluster: {e}")
        try:
            c.add_worker(num_cpus=1)
            c.opened_off_loopback = servers.off_loopback(c.proc.pid)
            yield c
        finally:
            c.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_identity_folder(tmp_path_factory.mktemp("cluster") / "photos", n_people=3, per_person=3, seed=11)


def cli(*args: str, timeout: float = RUN_TIMEOUT, **popen) -> subprocess.CompletedProcess:
    return python("-m", "facesearch", *args, timeout=timeout, **popen)


def python(*args: str, timeout: float = RUN_TIMEOUT, **popen) -> subprocess.CompletedProcess:
    """A new interpreter, as a user's command is, that finds the cluster only by the address it is given."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **popen)


def local_index(photos: Path, idx: Path, detector: str) -> Path:
    index_collection(IndexOptions(paths=[str(photos)], index=idx, engine="local", workers=1, detector=detector))
    return idx


def test_the_cluster_listens_on_loopback_only(cluster):
    assert cluster.address.startswith("127.0.0.1:")
    assert cluster.opened_off_loopback == []
    assert len(servers.listeners(servers.descendants(cluster.proc.pid))) >= 4  # GCS, raylets...: all looked at


def test_index_on_the_cluster_finds_the_same_faces_and_embeddings_as_local(cluster, photos, tmp_path):
    r = cli("index", str(photos), "--index", str(tmp_path / "ray"), "--engine", "ray", "--address", cluster.address,
            "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert (summary["new"], summary["bad"], summary["failed"]) == (9, 0, 0) and summary["faces"] >= 8
    assert_same_index(local_index(photos, tmp_path / "local", "auto"), tmp_path / "ray")


def test_an_unreachable_cluster_is_one_line(photos, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again when the with ends: nothing listens there
    t0 = time.monotonic()
    r = cli("index", str(photos), "--index", str(tmp_path / "i"), "--engine", "ray", "--address", f"127.0.0.1:{port}",
            timeout=120)
    assert r.returncode == 1 and time.monotonic() - t0 < 60
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in r.stderr
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_worker_node_killed_mid_run_and_the_run_resumed_from_its_shards(cluster, tmp_path):
    # 144 files: three embedding batches (ray_engine.EMBED_BATCH 64), so the first shard is written while
    # two batches are still to come. With 48 files (one batch, one shard) the run could commit and end
    # within one poll of the shard appearing, once detection no longer waited on dlib's CNN (issue 38).
    photos = make_identity_folder(tmp_path / "photos", n_people=6, per_person=24, seed=12)
    total = 144
    assert total > 2 * ray_engine.EMBED_BATCH
    idx = tmp_path / "ray"
    lost = cluster.add_worker(num_cpus=1)
    proc = subprocess.Popen([sys.executable, "-m", "facesearch", "index", str(photos), "--index", str(idx),
                             "--engine", "ray", "--address", cluster.address, "--json"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        first = _first_shard(idx, proc, timeout=RUN_TIMEOUT)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver lost mid-run: only its shards remain...
        cluster.kill_worker(lost)  # ...and a machine with it
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    cluster.settle()  # the head counts the machine as gone, as it has when a user runs the command again
    # What the run said, when it ended without a shard: a run that failed (a cluster refusing work on a
    # loaded machine) is not one that finished too fast.
    assert first is not None, f"the run ended before writing a shard: rc {proc.returncode}, {proc.stderr.read()[-2000:]}"
    saved = len(_shard_files(idx))
    # Re-run as a user would, in a new process: this one may have run Ray's local runtime for an earlier
    # test, and after that the cluster's embedder actor was cancelled before it started (reproduced with
    # tests/test_bench.py's Ray test first; a CLI command is always a new process).
    r = python("-c", RESUME, str(photos), str(idx), cluster.address)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    computed = s["computed"]
    assert s["new"] + s["unchanged"] == total and s["failed"] == 0
    assert len(computed) < total and saved >= 1  # the files of the shards were committed, not recomputed
    assert not (idx / ray_engine.SHARDS).exists() and len(snapshot(idx)) == total
    assert_same_index(local_index(photos, tmp_path / "local", "auto"), idx)


# The resumed run, reporting which files it sent to the cluster (the rest came from the saved shards).
RESUME = """
import json, sys
from facesearch.indexing import ray_engine
from facesearch.indexing.run import IndexOptions, index_collection
computed, real = [], ray_engine._results_stream
def stream(todo, *args):
    computed.extend(w.path for w in todo)
    return real(todo, *args)
ray_engine._results_stream = stream
s = index_collection(IndexOptions(paths=[sys.argv[1]], index=sys.argv[2], engine="ray", address=sys.argv[3],
                                  detector="auto"))
print(json.dumps({"new": s.new, "unchanged": s.unchanged, "failed": s.failed, "computed": computed}))
"""


def _shard_files(idx: Path) -> list[Path]:
    return list((idx / ray_engine.SHARDS).glob("*/*.parquet"))


def _first_shard(idx: Path, proc: subprocess.Popen, timeout: float) -> Path | None:
    """The first shard as soon as it is written. Detection fills the cluster first, so the three shards
    come within ~70 ms at the end of the run and are committed and removed ~0.3 s later (measured):
    polled every 0.2 s, a run was missed whole 1 time in 6."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        files = _shard_files(idx)
        if files:
            return files[0]
        time.sleep(0.01)
    return None



def test_a_local_runtime_leaves_no_ray_settings_in_the_environment():
    """ray.init writes RAY_AUTH_MODE=token (and more) into os.environ; a process started after a local
    run inherited it and could not then use a cluster without token auth."""
    import ray

    from facesearch.indexing import ray_cluster

    if ray.is_initialized():
        pytest.skip("a Ray runtime is already up in this process")
    before = {k: v for k, v in os.environ.items() if k.startswith("RAY_")}
    with ray_cluster.ray_runtime(None, 1):
        pass
    assert {k: v for k, v in os.environ.items() if k.startswith("RAY_")} == before



def _ray_failing_to_start(monkeypatch, times: int) -> tuple[list, list]:
    """ray.init fails ``times`` times as Ray does when a raylet is slow to register; returns the
    (init calls, shutdown calls) seen."""
    import ray

    calls, shutdowns = [], []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) <= times:
            raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(1))
    return calls, shutdowns


def test_a_local_runtime_slow_to_start_is_started_again(monkeypatch):
    from facesearch.indexing import ray_cluster

    calls, shutdowns = _ray_failing_to_start(monkeypatch, 1)
    ray_cluster.start_local(3)
    assert len(calls) == 2 and calls[-1]["num_cpus"] == 3 and len(shutdowns) == 1  # the failed start cleaned up


def test_a_local_runtime_that_never_starts_is_one_line(monkeypatch):
    from facesearch.core.errors import FacesearchError
    from facesearch.indexing import ray_cluster

    calls, _ = _ray_failing_to_start(monkeypatch, 5)
    with pytest.raises(FacesearchError) as e:
        ray_cluster.start_local(2)
    assert len(calls) == 3 and "did not start" in str(e.value) and "\n" not in str(e.value)  # three tries
    assert "--engine local" in e.value.hint
