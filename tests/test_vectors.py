"""The vector-store seam: FAISS, Milvus Lite (embedded) and a Milvus server against numpy's exact answers.

SQLite holds the truth; each backend must answer k-NN and range queries as an
exact search over the catalogue's vectors would, stay in step through adds and
removals, and never answer from a stale copy. The server is a real Milvus
standalone on 127.0.0.1, started once per test run (the ``milvus_server``
fixture, tests/servers.py); its tests skip with the reason when it cannot start.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app
from facesearch.core.errors import FacesearchError
from facesearch.store.vectors import ops
from facesearch.store.face_index import FaceIndex, FileUpdate
from facesearch.store.vectors.base import check_backend

pytest.importorskip("pymilvus")  # a third-party package: .ci/run installs it with the test extras

DIM = 16
BACKENDS = ["faiss", "milvus://", "milvus-server"]  # the last: milvus://127.0.0.1:PORT of the fixture
MILVUS = ["milvus://", "milvus-server"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def spec(request) -> str:
    """The backend spec of the test's ``backend`` parameter (the session's server for milvus-server)."""
    name = request.param
    return request.getfixturevalue("milvus_server").uri if name == "milvus-server" else name


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n: int, seed: int) -> np.ndarray:
    """Near-duplicate pairs among random faces, so range queries have answers."""
    x = unit(n, seed)
    x[1::2] = x[0::2] + 0.05 * unit(n // 2, seed + 1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def updates(x: np.ndarray, start: int = 0) -> list[FileUpdate]:
    return [FileUpdate(f"/photos/p{start + k:04d}.jpg", 1, 1, faces=[{"box": (0.0, 0.0, 9.0, 9.0)}],
                       embeddings=x[k:k + 1]) for k in range(len(x))]


def folder_name(backend: str) -> str:
    return "server" if backend[-1:].isdigit() else backend.strip(":/")


def build(tmp_path: Path, backend: str, x: np.ndarray) -> Path:
    with FaceIndex.create(tmp_path / folder_name(backend), "m", {}, DIM, vectors=backend) as store:
        store.write_batch(updates(x))
    return tmp_path / folder_name(backend)


def assert_exact(store: FaceIndex, xq: np.ndarray, k: int) -> None:
    """k-NN and range pairs equal numpy's exact search over what SQLite holds."""
    ids, X = store.all_embeddings()
    matches = store.search(xq, k)
    D, I = ops.exact_knn(xq, X, k)
    for row, drow, irow in zip(matches, D, I):
        assert [m.face_id for m in row] == ids[irow].tolist()
        assert np.allclose([m.distance for m in row], drow, atol=1e-3)  # sqrt of float32 rounding near 0
    i, j, d = store.range_pairs(0.3)
    pi, pj, pd = ops.exact_pairs(X, 0.3)
    assert np.array_equal(i, ids[pi]) and np.array_equal(j, ids[pj]) and np.allclose(d, pd, atol=1e-5)
    assert len(i) >= len(ids) // 3  # the planted near-duplicate pairs are there to be found


@pytest.mark.parametrize("spec", BACKENDS, indirect=True)
def test_search_and_range_match_exact_search_through_adds_and_removals(tmp_path, spec):
    backend = spec
    x = clustered(120, seed=0)
    idx = build(tmp_path, backend, x[:100])
    with FaceIndex.open(idx) as store:
        assert_exact(store, x[100:], 10)
        store.write_batch(updates(x[100:], start=100))  # adds
        store.remove_paths([f"/photos/p{k:04d}.jpg" for k in range(0, 20)])  # removals
        assert_exact(store, x[:30], 10)
        assert store.verify()["faiss_ok"]
    with FaceIndex.open(idx, readonly=True) as store:  # what was persisted answers the same
        assert_exact(store, x[:30], 10)
        assert store.rebuilt_reason is None and store.stats()["vectors"] == backend


@pytest.mark.parametrize("spec", MILVUS, indirect=True)
def test_a_stale_milvus_copy_is_never_searched(tmp_path, spec):
    x = clustered(60, seed=1)
    idx = build(tmp_path, spec, x[:40])
    stamp = json.loads((idx / "milvus.json").read_text())
    with FaceIndex.open(idx) as store:
        store.write_batch(updates(x[40:], start=40))
    # As if the writer died between its SQLite commit and the Milvus mirror:
    (idx / "milvus.json").write_text(json.dumps(stamp))
    with FaceIndex.open(idx, readonly=True) as store:
        assert_exact(store, x[40:], 5)  # the new faces are found: answers come from SQLite's vectors
        assert store.rebuilt_reason == "stale"
        assert not store.verify()["faiss_cache_current"]
    with FaceIndex.open(idx) as store:  # a writer reloads the collection when it opens it
        report = store.verify()
        assert report["faiss_ok"] and report["faiss_cache_current"] and store.rebuilt_reason == "stale"
    with FaceIndex.open(idx, readonly=True) as store:
        assert_exact(store, x[40:], 5)
        assert store.rebuilt_reason is None


def test_reader_searches_while_another_process_holds_milvus_lite(tmp_path):
    """Milvus Lite admits one process: others answer from SQLite's vectors, and a writer still commits."""
    x = clustered(40, seed=2)
    idx = build(tmp_path, "milvus://", x)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from facesearch.store.face_index import FaceIndex
        store = FaceIndex.open({str(idx)!r}, readonly=True)  # e.g. a `serve` request in flight
        store.vectors.load()
        print("ready", flush=True)
        sys.stdin.readline()
        store.close()
    """)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    more = clustered(20, seed=3)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with FaceIndex.open(idx, readonly=True) as store:
            assert_exact(store, x[:10], 5)
            assert store.rebuilt_reason.startswith("unavailable")
        with FaceIndex.open(idx) as store:  # a writer cannot mirror into it either: it still writes SQLite
            store.write_batch(updates(more, start=100))
            assert_exact(store, more, 5)
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    with FaceIndex.open(idx, readonly=True) as store:  # the copy missed that commit: never searched
        assert_exact(store, more, 5)
        assert store.rebuilt_reason == "stale"
    with FaceIndex.open(idx) as store:
        assert store.verify()["faiss_ok"] and store.rebuilt_reason == "stale"  # reloaded on open


def test_a_reader_closing_leaves_milvus_lite_running_for_a_writer_in_the_same_process(tmp_path):
    """``serve`` searches while its own index job writes: Milvus Lite's server is one per file and
    process, so only the last store to close it may stop it."""
    x = clustered(60, seed=4)
    idx = build(tmp_path, "milvus://", x[:40])
    with FaceIndex.open(idx) as writer:
        writer.search(x[:2], 3)  # connected
        with FaceIndex.open(idx, readonly=True) as reader:
            assert_exact(reader, x[:10], 5)
        writer.write_batch(updates(x[40:], start=40))  # mirrored through the same server
        assert_exact(writer, x[40:], 5)
        assert writer.verify()["faiss_ok"] and writer.rebuilt_reason is None


def test_backend_names_are_checked():
    assert check_backend(None) == "faiss" and check_backend("milvus://host:19530") == "milvus://host:19530"
    with pytest.raises(FacesearchError, match="unknown vector backend"):
        check_backend("qdrant://x")


def cli_answers(collection: Path, idx: Path, backend: str, probe: Path) -> list[dict]:
    """``index`` then ``query``, ``dedupe`` and ``people`` through the CLI, their JSON answers."""
    runner = CliRunner()
    r = runner.invoke(app, ["index", str(collection), "--index", str(idx), "--detector", "none", "--workers", "0",
                            "--label-from-folder", "--backend", backend, "--json"])
    assert r.exit_code == 0, r.output
    return [json.loads(runner.invoke(app, [*cmd, "--index", str(idx), "--json"]).stdout)
            for cmd in (["query", str(probe), "--detector", "none", "--top", "5"],
                        ["dedupe", "--tau", "0.05"], ["people"])]


def assert_same_answers(a: list[dict], b: list[dict], copies: list[str]) -> None:
    qa, qb = a[0]["faces"][0], b[0]["faces"][0]
    assert qa["identity"] == qb["identity"] == "person_02"
    assert [m["path"] for m in qa["matches"]] == [m["path"] for m in qb["matches"]]
    groups = [[sorted(m["path"] for m in g["members"]) for g in x[1]["groups"]] for x in (a, b)]
    assert groups[0] == groups[1] and sorted(copies) in groups[1]
    people = [sorted(sorted(f["path"] for f in p["faces"]) for p in x[2]["people"]) for x in (a, b)]
    assert people[0] == people[1]


@pytest.mark.parametrize("spec", MILVUS, indirect=True)
def test_cli_index_query_dedupe_people_agree_across_backends(collection, tmp_path, spec):
    src = sorted((collection / "person_01").iterdir())[0]
    (collection / "copy.png").write_bytes(src.read_bytes())
    probe = sorted((collection / "person_02").iterdir())[0]
    faiss = cli_answers(collection, tmp_path / "faiss", "faiss", probe)
    milvus = cli_answers(collection, tmp_path / "milvus", spec, probe)
    assert_same_answers(faiss, milvus, [str(src), str(collection / "copy.png")])


def test_cli_backend_errors(tmp_path, collection):
    runner = CliRunner()
    r = runner.invoke(app, ["index", str(collection), "--index", str(tmp_path / "i"), "--backend", "qdrant://x"])
    assert r.exit_code == 2 and "unknown vector backend" in r.output
    args = ["index", str(collection / "person_00"), "--index", str(tmp_path / "j"), "--detector", "none",
            "--workers", "0", "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, [*args, "--backend", "milvus://"])
    assert r.exit_code == 1 and "keeps its vectors in faiss" in r.output
