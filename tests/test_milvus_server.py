"""What only a Milvus *server* does: loopback only, an index built at commit, one client per process.

The server is the session's ``milvus_server`` (tests/conftest.py, tests/servers.py); the
exact-answer tests that every backend passes are in tests/test_vectors.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("pymilvus")

from facesearch.cli.main import app  # noqa: E402
from facesearch.store.face_index import FaceIndex  # noqa: E402
from facesearch.store.vectors import milvus_server as server_side, ops  # noqa: E402
from tests import servers  # noqa: E402
from tests.test_vectors import DIM, build, unit, updates  # noqa: E402


def test_the_server_accepts_connections_on_loopback_only(milvus_server):
    assert milvus_server.opened_off_loopback == []  # every socket its processes opened here: 127.0.0.1
    assert servers.listeners(servers.descendants(milvus_server.proc.pid)) == {("127.0.0.1", milvus_server.port)}
    assert not [a for a in servers.listeners() if a[1] == milvus_server.port and a[0] != "127.0.0.1"]


def test_commit_builds_the_index_so_queries_never_scan(tmp_path, milvus_server):
    x = unit(3_000, seed=5)  # one segment above the server's 1,024-row threshold for indexing
    idx = build(tmp_path, milvus_server.uri, x)
    with FaceIndex.open(idx, readonly=True) as store:
        store.search(x[:1], 1)
        client, name = server_side.shared_client(http(milvus_server), ""), store.vectors.collection
        info = client.describe_index(name, "vector")
        assert info["index_type"] == milvus_server_index() and int(info["M"]) == 16
        assert int(info["total_rows"]) == int(info["indexed_rows"]) == 3_000
        ids, X = store.all_embeddings()
        _, I = ops.exact_knn(x[:200], X, 10)
        found = [[m.face_id for m in row] for row in store.search(x[:200], 10)]
        recall = np.mean([len(set(f) & set(ids[t].tolist())) / 10 for f, t in zip(found, I)])
        assert recall >= 0.98


def milvus_server_index() -> str:
    return server_side.INDEX["index_type"]


def http(handle) -> str:
    return f"http://127.0.0.1:{handle.port}"


def test_one_client_stays_open_for_every_store_of_the_process(tmp_path, milvus_server):
    """``serve`` opens the index for each request: each must not open a connection of its own."""
    x = unit(50, seed=6)
    idx = build(tmp_path, milvus_server.uri, x)
    for _ in range(5):
        with FaceIndex.open(idx, readonly=True) as store:
            assert [m.face_id for m in store.search(x[:1], 1)[0]] == [store.all_embeddings()[0][0]]
    assert server_side.open_clients() == 1
    assert _connections_to(milvus_server.port) == 1


def test_an_unreachable_server_is_one_line(tmp_path):
    x = unit(5, seed=7)
    with pytest.raises(Exception) as info:
        with FaceIndex.create(tmp_path / "i", "m", {}, DIM, vectors=f"milvus://127.0.0.1:{_closed_port()}") as store:
            store.write_batch(updates(x))
    assert "cannot open Milvus at http://127.0.0.1:" in str(info.value)
    r = CliRunner().invoke(app, ["index", str(tmp_path), "--index", str(tmp_path / "j"), "--detector", "none",
                                 "--workers", "0", "--backend", f"milvus://127.0.0.1:{_closed_port()}"])
    assert r.exit_code == 1 and "cannot open Milvus" in r.output and "Traceback" not in r.output


def _connections_to(port: int) -> int:
    """Established TCP connections from this process to ``port`` (/proc/net/tcp, this process's fds)."""
    mine = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}
    count = 0
    lines = [ln for name in ("tcp", "tcp6") for ln in Path(f"/proc/net/{name}").read_text().splitlines()[1:]]
    for line in lines:  # gRPC's sockets may be IPv6 ones, connected to 127.0.0.1 as ::ffff:127.0.0.1
        fields = line.split()
        remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
        count += remote_port == port and state == "01" and f"socket:[{inode}]" in mine
    return count


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]

