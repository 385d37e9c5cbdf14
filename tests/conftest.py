"""Shared fixtures: synthetic face collections and the real-data location."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

import pytest

from facesearch.photos.synthetic import make_identity_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@contextmanager
def one_at_a_time(name: str, tmp_path_factory):
    """Hold ``name``'s lock for the block, across the run's pytest workers (their temp folders share a
    parent). Ray runtimes are the reason: a local runtime and a two-node cluster started together by two
    workers of a 2-core machine left the cluster unstarted (its tests skipped), so they take turns."""
    lock = tmp_path_factory.getbasetemp().parent / f"{name}.lock"
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED


@pytest.fixture()
def collection(tmp_path) -> Path:
    """4 synthetic people × 4 face photos (150 px PNG): tmp/photos/person_NN/i.png."""
    return make_identity_folder(tmp_path / "photos", n_people=4, per_person=4, seed=1)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A Milvus standalone server for the whole run, on 127.0.0.1 only (tests/servers.py says how);
    skips with the reason when it cannot start here."""
    import subprocess

    from tests import servers

    try:
        handle = servers.start_milvus(tmp_path_factory.mktemp("milvus-server"))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"no Milvus server: {e}")
    handle.opened_off_loopback = servers.off_loopback(handle.proc.pid)
    yield handle
    from facesearch.store.vectors.milvus_server import close_clients

    close_clients()
    handle.stop()
