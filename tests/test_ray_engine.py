"""``facesearch index --engine ray``: the same index as the local engine, incremental and resumable."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from facesearch.indexing import ray_cluster, ray_engine  # noqa: E402
from tests.conftest import one_at_a_time  # noqa: E402
from facesearch.indexing import work  # noqa: E402
from facesearch.cli.main import app  # noqa: E402
from facesearch.store.face_index import FaceIndex  # noqa: E402
from facesearch.indexing.run import IndexOptions, index_collection  # noqa: E402
from facesearch.photos.synthetic import make_identity_folder  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_runtime(tmp_path_factory):
    """One Ray runtime for the module (ray.init costs seconds); the engine uses it and leaves it running.
    Never beside the cluster of tests/test_ray_cluster.py on another pytest worker."""
    with one_at_a_time("ray", tmp_path_factory):
        ray_cluster.start_local(2, log_to_driver=False, configure_logging=False)  # retries a raylet slow to register
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """3 synthetic people × 3 photos, and a file that is not an image."""
    root = make_identity_folder(tmp_path_factory.mktemp("ray") / "photos", n_people=3, per_person=3, seed=7)
    (root / "person_00" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def run(photos, index, engine, on_progress=None, **kw):
    kw.setdefault("detector", "auto")
    opts = IndexOptions(paths=[str(photos)], index=Path(index), engine=engine, workers=2, **kw)
    return index_collection(opts, on_progress)


def snapshot(index: Path) -> dict:
    """path -> (status, [(box, embedding)]) of every file in the index."""
    with FaceIndex.open(index, readonly=True) as store:
        return store.faces_by_file()


def assert_same_index(a: Path, b: Path) -> None:
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for path in sa:
        (status_a, faces_a), (status_b, faces_b) = sa[path], sb[path]
        assert (status_a, len(faces_a)) == (status_b, len(faces_b)), path
        np.testing.assert_allclose([f[0] for f in faces_a], [f[0] for f in faces_b], atol=1e-4, err_msg=path)
        for (_, xa), (_, xb) in zip(faces_a, faces_b):
            assert float(xa @ xb) >= 0.9999, path


@pytest.fixture(scope="module")
def both(photos, tmp_path_factory):
    """The collection indexed by each engine: (local index, local summary, ray index, ray summary)."""
    root = tmp_path_factory.mktemp("idx")
    local = run(photos, root / "local", "local")
    events: list[tuple[str, dict]] = []
    remote = run(photos, root / "ray", "ray", on_progress=lambda event, data: events.append((event, data)))
    remote.events = events
    return root / "local", local, root / "ray", remote


def test_same_files_statuses_faces_and_embeddings_as_local(both):
    local_idx, local, ray_idx, remote = both
    assert_same_index(local_idx, ray_idx)
    keys = ("scanned", "new", "updated", "unchanged", "bad", "noface", "faces", "failed")
    assert {k: getattr(remote, k) for k in keys} == {k: getattr(local, k) for k in keys}
    assert remote.faces >= 8  # the detector found the drawn faces: the comparison is not vacuous


def test_a_corrupt_file_is_reported_bad_and_the_rest_indexed(both):
    *_, ray_idx, remote = both
    assert [Path(b["path"]).name for b in remote.bad_files] == ["corrupt.jpg"]
    assert remote.bad == 1 and remote.new == 10
    assert not (ray_idx / ray_engine.SHARDS).exists()  # committed runs leave no shards


def test_progress_events_as_the_local_engine_sends(both):
    *_, remote = both
    assert remote.events[0] == ("start", {"total": 10, "todo": 10, "unchanged": 0})
    done = [data["done"] for event, data in remote.events if event == "file"]
    assert done == list(range(1, 11)) and remote.events[-1][1]["faces"] == remote.faces


def test_second_run_does_nothing(both, photos, monkeypatch):
    *_, ray_idx, _ = both
    monkeypatch.setattr(ray_engine, "_results_stream", _forbidden)
    s = run(photos, ray_idx, "ray")
    assert (s.unchanged, s.new, s.updated, s.faces, s.bad) == (10, 0, 0, 0, 0)


def _forbidden(*args, **kwargs):
    raise AssertionError("nothing should be computed")


def test_run_killed_between_shards_and_commit_is_finished_from_the_shards(photos, tmp_path, monkeypatch):
    photos = Path(shutil.copytree(photos, tmp_path / "photos"))
    idx = tmp_path / "idx"
    real_commit, real_stream = work.commit_results, ray_engine._results_stream

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # as if the driver were stopped after writing its shards

    monkeypatch.setattr(work, "commit_results", die)
    with pytest.raises(KeyboardInterrupt):
        run(photos, idx, "ray", detector="none")
    assert list((idx / ray_engine.SHARDS).glob("*/*.parquet"))
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.file_paths() == []

    changed = sorted((photos / "person_01").glob("*.png"))[0]
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # its shard row no longer describes it
    computed: list[list[str]] = []

    def stream(todo, *args):
        computed.append([w.path for w in todo])
        return real_stream(todo, *args)

    monkeypatch.setattr(work, "commit_results", real_commit)
    monkeypatch.setattr(ray_engine, "_results_stream", stream)
    s = run(photos, idx, "ray", detector="none")
    assert computed == [[str(changed)]]  # the other 9 files came from the shards
    assert (s.new, s.bad, s.faces) == (10, 1, 9)
    assert [Path(b["path"]).name for b in s.bad_files] == ["corrupt.jpg"]
    assert not (idx / ray_engine.SHARDS).exists()
    assert len(snapshot(idx)) == 10


def test_cli_engine_ray_json(photos, tmp_path):
    r = CliRunner().invoke(app, ["index", str(photos), "--index", str(tmp_path / "idx"), "--engine", "ray",
                                 "--detector", "none", "--workers", "2", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert (summary["new"], summary["bad"], summary["faces"]) == (10, 1, 9)
