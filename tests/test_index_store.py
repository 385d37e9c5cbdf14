"""FaceIndex: SQLite + FAISS consistency, incremental updates, lock, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from facesearch.core.errors import FacesearchError, IndexMissingError, ModelMismatchError
from facesearch.store.vectors import build, ops
from facesearch.store.vectors.faiss_store import FAISS_FILE, STAMP
from facesearch.store.face_index import FaceIndex, FaceRecord, FileUpdate

REPO = Path(__file__).resolve().parents[1]
DIM = 16


def unit(n: int, seed: int, d: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def boxes(n: int) -> list[FaceRecord]:
    return [FaceRecord((10.0 * k, 0.0, 10.0 * k + 8, 8.0), 0.9, [[1.0, 2.0]] * 5) for k in range(n)]


def photo(folder: Path, name: str, content: bytes = b"jpeg") -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)
    return p


def add(store: FaceIndex, path: Path, n: int, seed: int, **kw) -> list[int]:
    st = path.stat()
    return store.upsert_file(str(path), st.st_size, st.st_mtime_ns, f"h{seed}", "ok", None, boxes(n),
                             unit(n, seed), **kw)


def create(tmp_path: Path, **kw) -> FaceIndex:
    return FaceIndex.create(tmp_path / "idx", model_id="m1", model_config={"embedding_dim": DIM}, dim=DIM, **kw)


# --- create / open ------------------------------------------------------------------------


def test_create_open_and_manifest(tmp_path):
    assert not FaceIndex.exists(tmp_path / "idx")
    create(tmp_path).close()
    assert FaceIndex.exists(tmp_path / "idx")
    with FaceIndex.open(tmp_path / "idx", model_id="m1") as store:
        m = store.manifest
        assert (m["model_id"], m["metric"], m["dim"], m["index_type"]) == ("m1", "l2", DIM, "auto")
        assert m["model_config"] == {"embedding_dim": DIM}  # with its τ calibration, when it has one
        assert m["model_config"] == {"embedding_dim": DIM} and "created" in m and "facesearch_version" in m
    with pytest.raises(FacesearchError, match="already exists"):
        create(tmp_path)
    create(tmp_path, overwrite=True).close()


def test_open_missing_and_model_mismatch(tmp_path):
    with pytest.raises(IndexMissingError) as e:
        FaceIndex.open(tmp_path / "nope")
    assert "facesearch index" in e.value.hint
    create(tmp_path).close()
    with pytest.raises(ModelMismatchError) as e:
        FaceIndex.open(tmp_path / "idx", model_id="m2")
    assert "rebuild --weights" in e.value.hint
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:
        store.check_model("m1")
        with pytest.raises(ModelMismatchError):
            store.check_model("other")


# --- writes -------------------------------------------------------------------------------


def test_upsert_replace_remove_prune_counts(tmp_path):
    photos = tmp_path / "photos"
    a, b, c = photo(photos, "a.jpg"), photo(photos, "sub/b.jpg"), photo(photos, "sub/c.jpg")
    with create(tmp_path) as store:
        ids_a = add(store, a, 2, 1)
        assert add(store, b, 0, 2) == []
        ids_c = add(store, c, 3, 3)
        assert store.count() == 5
        assert store.lookup_file(str(b)).status == "noface"  # ok with no faces
        rec = store.lookup_file(str(a))
        assert (rec.status, rec.n_faces, rec.size, rec.hash) == ("ok", 2, a.stat().st_size, "h1")
        # Re-indexing a file replaces its faces; ids are never reused.
        new_a = add(store, a, 1, 4)
        assert store.count() == 4 and new_a[0] > max(ids_c) and not set(new_a) & set(ids_a)
        store.mark_bad(str(c), 1, 2, "truncated")
        assert store.lookup_file(str(c)).status == "bad" and store.count() == 1
        assert store.stats()["files_by_status"] == {"ok": 1, "noface": 1, "bad": 1}
        assert store.remove_paths([str(photos / "sub")]) == 2  # a folder: everything under it
        assert store.file_paths() == [str(a)]
        photo(photos, "sub/d.jpg")
        add(store, photos / "sub" / "d.jpg", 2, 5)
        a.unlink()
        assert store.prune_missing() == [str(a)]
        assert store.file_paths() == [str(photos / "sub" / "d.jpg")] and store.count() == 2
        report = store.verify()
        assert report["faiss_ok"] and report["ok"], report


def test_write_batch_accepts_dicts_and_face_objects(tmp_path):
    @dataclass
    class Face:  # like facesearch.faces.detect.Face
        box: tuple
        score: float
        landmarks: np.ndarray | None

    p1, p2 = photo(tmp_path, "1.jpg"), photo(tmp_path, "2.jpg")
    with create(tmp_path) as store:
        ids = store.write_batch([
            dict(path=str(p1), size=4, mtime_ns=1, hash="x", status="ok", error=None,
                 faces=[Face((0, 0, 5, 5), 0.8, np.ones((5, 2)))], embeddings=unit(1, 1), label="ann"),
            FileUpdate(str(p2), 4, 1, "x", "bad", "cannot decode"),
        ])
        assert ids == [[1], []]
        row = store.faces([1])[0]
        # The photo's name is stored on the photo; which face carries it is placement's (people.labels).
        assert row.path == str(p1) and row.box == (0, 0, 5, 5) and store.file_info(p1)["label"] == "ann"
        assert row.label is None
        assert row.landmarks == [[1.0, 1.0]] * 5
        assert store.exact_duplicate_files() == [[str(p1), str(p2)]]
        with pytest.raises(ValueError):  # embeddings must match faces
            store.write_batch([FileUpdate(str(p1), 4, 1, faces=boxes(2), embeddings=unit(1, 2))])
        with pytest.raises(KeyError):
            store.faces([999])


def test_labels_by_path_by_id_and_carried_over_on_reindex(tmp_path):
    a, b = photo(tmp_path / "p", "a.jpg"), photo(tmp_path / "p", "b.jpg")
    with create(tmp_path) as store:
        ids_a = add(store, a, 2, 1)
        ids_b = add(store, b, 1, 2)
        assert store.set_label(str(a), "alice") == 2
        assert store.set_label([ids_b[0]], "bob") == 1
        assert store.set_label(str(tmp_path / "nothing"), "x") == 0
        assert [r.label for r in store.faces(ids_a + ids_b)] == ["alice", "alice", "bob"]
        assert store.labels_by_path() == {str(a): "alice", str(b): "bob"}
        assert store.count_faces_under(str(tmp_path / "p")) == 3
        # Same boxes re-detected (new weights, touched file): the labels stay.
        new_b = add(store, b, 1, 3)
        assert store.faces(new_b)[0].label == "bob"
        s = store.stats()
        assert (s["labelled_faces"], s["labels"]) == (3, 2)
        assert store.set_label(ids_a, None) == 2
        # The photo keeps its name, but no face takes it from the photo: a name is one face's (issue 36).
        assert store.faces(ids_a)[0].label is None and store.file_info(a)["label"] == "alice"


def test_readonly_refuses_writes(tmp_path):
    create(tmp_path).close()
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:
        with pytest.raises(FacesearchError, match="read-only"):
            store.set_label([1], "x")


# --- search -------------------------------------------------------------------------------


@pytest.mark.parametrize("index_type", ["auto", "hnsw", "ivf"])
def test_search_and_range_pairs_equal_exact_search(tmp_path, index_type):
    rng = np.random.default_rng(0)
    with create(tmp_path, index_type=index_type) as store:
        for f in range(60):
            add(store, photo(tmp_path / "p", f"{f}.jpg"), int(rng.integers(1, 8)), f)
        removed = add(store, tmp_path / "p" / "3.jpg", 2, 100)  # a replace: HNSW must rebuild
        store.remove_paths([str(tmp_path / "p" / "7.jpg")])
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:
        ids, X = store.all_embeddings()
        assert (np.diff(ids) > 0).all() and set(removed) <= set(ids.tolist())
        xq = unit(25, 999)
        res = store.search(xq, 10)
        De, Ie = ops.exact_knn(xq, X, 10)
        if index_type == "auto":  # flat: exact
            assert [[m.face_id for m in r] for r in res] == ids[Ie].tolist()
            np.testing.assert_allclose([[m.distance for m in r] for r in res], De, atol=1e-5)
        else:  # small n: the approximate indexes are exact here too, up to recall
            hits = np.mean([len({m.face_id for m in r} & set(ids[Ie[q]].tolist())) / 10 for q, r in enumerate(res)])
            assert hits >= 0.95
        m = res[0][0]
        assert m.path == store.faces([m.face_id])[0].path and abs(m.similarity - (1 - m.distance**2 / 2)) < 1e-9
        i, j, d = store.range_pairs(1.0)
        ei, ej, ed = ops.exact_pairs(X, 1.0)
        assert set(zip(i.tolist(), j.tolist())) == set(zip(ids[ei].tolist(), ids[ej].tolist()))
        assert store.verify()["faiss_ok"]


def test_auto_type_switches_at_flush(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "AUTO_FLAT_MAX", 20)
    with create(tmp_path) as store:
        for f in range(10):
            add(store, photo(tmp_path / "p", f"{f}.jpg"), 3, f)
    stamp = json.loads((tmp_path / "idx" / STAMP).read_text())
    assert stamp["index_type"] == "hnsw" and stamp["ntotal"] == 30
    with FaceIndex.open(tmp_path / "idx") as store:
        assert store.rebuilt_reason is None
        assert store.rebuild_vectors(index_type="flat")["index_type"] == "flat"
        assert store.manifest["index_type"] == "flat"


# --- lock ---------------------------------------------------------------------------------


def test_second_writer_is_refused(tmp_path):
    store = create(tmp_path)
    with pytest.raises(FacesearchError, match=rf"locked by another facesearch process \(pid {os.getpid()}\)"):
        FaceIndex.open(tmp_path / "idx")
    with FaceIndex.open(tmp_path / "idx", readonly=True) as reader:  # readers need no lock
        assert reader.count() == 0
    store.close()
    FaceIndex.open(tmp_path / "idx").close()


def test_writer_lock_held_by_another_process(tmp_path):
    create(tmp_path).close()
    code = textwrap.dedent(f"""
        import sys, time
        from facesearch.store.face_index import FaceIndex
        s = FaceIndex.open({str(tmp_path / 'idx')!r})
        print("locked", flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(FacesearchError, match=f"pid {proc.pid}"):
            FaceIndex.open(tmp_path / "idx")
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    FaceIndex.open(tmp_path / "idx").close()


# --- crash safety -------------------------------------------------------------------------


def test_killed_before_flush_rebuilds_faiss_from_sqlite(tmp_path):
    photos = [photo(tmp_path / "p", f"{k}.jpg", b"x" * (k + 1)) for k in range(12)]
    with create(tmp_path) as store:  # a flushed baseline: files 0-3
        for k in range(4):
            add(store, photos[k], 2, k)
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from test_index_store import add
        from facesearch.store.face_index import FaceIndex
        from pathlib import Path
        s = FaceIndex.open({str(tmp_path / 'idx')!r})
        add(s, Path({str(photos[0])!r}), 1, 50)  # a replace of a flushed file
        for k in range(4, 12):
            add(s, Path({str(tmp_path / 'p')!r}) / f"{{k}}.jpg", 3, k)
        os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with FaceIndex.open(tmp_path / "idx") as store:  # the dead writer's lock is gone with it
        assert store.count() == 1 + 3 * 2 + 8 * 3
        report = store.verify()
        assert report["ok"] and report["faiss_ok"], report
        assert store.rebuilt_reason == "stale"
        ids, X = store.all_embeddings()
        res = store.search(X, 1)
        assert [r[0].face_id for r in res] == ids.tolist()
        np.testing.assert_allclose([r[0].distance for r in res], 0.0, atol=1e-3)
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:  # closing wrote a current cache
        store.search(unit(1, 0), 1)
        assert store.rebuilt_reason is None and store.verify()["faiss_cache_current"]


@pytest.mark.parametrize("damage", ["truncate", "delete_stamp", "foreign"])
def test_damaged_faiss_cache_is_rebuilt_on_open(tmp_path, damage):
    with create(tmp_path) as store:
        for k in range(5):
            add(store, photo(tmp_path / "p", f"{k}.jpg"), 2, k)
    faiss_file = tmp_path / "idx" / FAISS_FILE
    if damage == "truncate":
        faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    elif damage == "delete_stamp":
        (tmp_path / "idx" / STAMP).unlink()
    else:  # a current-looking stamp over an index of other vectors
        ops_index = ops.build_index(unit(3, 7), [1, 2, 3], "flat")
        import faiss
        faiss.write_index(ops_index, str(faiss_file))
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:
        report = store.verify()
        assert report["ok"] and not report["faiss_cache_current"], report
        assert store.rebuilt_reason is not None
        ids, X = store.all_embeddings()
        assert [r[0].face_id for r in store.search(X, 1)] == ids.tolist()
    with FaceIndex.open(tmp_path / "idx") as store:
        assert store.verify(fix=True)["fixed"]
    with FaceIndex.open(tmp_path / "idx", readonly=True) as store:
        assert store.verify()["faiss_cache_current"] and store.rebuilt_reason is None


def test_verify_reports_vanished_and_changed_files(tmp_path):
    a, b = photo(tmp_path, "a.jpg"), photo(tmp_path, "b.jpg")
    with create(tmp_path) as store:
        add(store, a, 1, 1)
        add(store, b, 1, 2)
        a.unlink()
        b.write_bytes(b"changed content")
        report = store.verify()
        assert report["faiss_ok"] and not report["ok"]
        assert report["files_missing"] == [str(a)] and report["files_changed"] == [str(b)]


def test_runs_and_stats(tmp_path):
    with create(tmp_path) as store:
        run = store.begin_run({"paths": ["x"]})
        add(store, photo(tmp_path, "a.jpg"), 2, 1)
        store.end_run(run, {"faces": 2})
        assert store.lookup_file(str(tmp_path / "a.jpg")).run_id == run
        s = store.stats()
        assert s["faces"] == 2 and s["files"] == 1 and s["index_type"] == "flat"
        assert s["last_run"]["summary"] == {"faces": 2} and s["last_run"]["args"] == {"paths": ["x"]}
        assert s["bytes_on_disk"] > 0


def test_same_path_twice_in_one_batch(tmp_path):
    p = photo(tmp_path, "a.jpg")
    with create(tmp_path) as store:
        first, second = store.write_batch([FileUpdate(str(p), 4, 1, faces=boxes(2), embeddings=unit(2, 1)),
                                           FileUpdate(str(p), 4, 2, faces=boxes(1), embeddings=unit(1, 2))])
        assert store.count() == 1 and store.verify()["faiss_ok"]
        assert [m.face_id for m in store.search(unit(1, 2), 5)[0]] == second


def test_reader_sees_a_consistent_snapshot_while_a_writer_commits(tmp_path):
    writer = create(tmp_path)
    add(writer, photo(tmp_path, "a.jpg"), 3, 1)
    writer.flush()
    with FaceIndex.open(tmp_path / "idx", readonly=True) as reader:
        reader.search(unit(1, 0), 1)  # loads the index at this generation
        add(writer, photo(tmp_path, "b.jpg"), 2, 2)  # committed, not flushed
        i, j, d = reader.range_pairs(2.0)
        assert len(i) == 5 * 4 // 2 and reader.verify()["faiss_ok"]
    writer.close()


def test_a_replaced_faiss_file_is_rebuilt_not_trusted(tmp_path):
    """Same count and ids but other vectors: queries must still answer from SQLite's embeddings."""
    store = create(tmp_path)
    for k in range(12):
        add(store, photo(tmp_path / "p", f"{k}.jpg", bytes([k])), 3, seed=k)
    store.close()
    with FaceIndex.open(tmp_path / "idx", readonly=True) as s:
        ids, X = s.all_embeddings()
    forged = ops.build_index(unit(len(ids), 999), ids, "flat")
    ops_bytes = __import__("faiss").serialize_index(forged)
    ops_bytes.tofile(tmp_path / "idx" / FAISS_FILE)
    q = unit(5, 123)
    with FaceIndex.open(tmp_path / "idx", readonly=True) as s:
        got = [[m.face_id for m in row] for row in s.search(q, 4)]
        assert "altered" in (s.rebuilt_reason or "")
    want = ids[np.argsort(((q[:, None, :] - X[None]) ** 2).sum(-1), axis=1)[:, :4]]
    assert got == want.tolist()


def test_readers_share_the_loaded_faiss_index_until_the_index_changes(tmp_path, monkeypatch):
    """A service opens the index read-only per query: the second open reuses the first's loaded
    index (no re-read), and a writer's commit, or a changed cache file, makes readers load anew."""
    from facesearch.store.vectors import faiss_store

    with create(tmp_path) as store:
        for k in range(3):
            add(store, photo(tmp_path / "p", f"{k}.jpg"), 2, k)
    loads = []
    real = faiss_store.FaissVectors._load_or_rebuild_uncached
    monkeypatch.setattr(faiss_store.FaissVectors, "_load_or_rebuild_uncached",
                        lambda self: (loads.append(self.source.readonly), real(self))[1])

    def search_all() -> list[int]:
        with FaceIndex.open(tmp_path / "idx", readonly=True) as reader:
            ids, X = reader.all_embeddings()
            assert [r[0].face_id for r in reader.search(X, 1)] == ids.tolist()  # the oracle: each finds itself
            return ids.tolist()

    first = search_all()
    assert search_all() == first and loads.count(True) == 1
    with FaceIndex.open(tmp_path / "idx") as writer:
        add(writer, photo(tmp_path / "p", "new.jpg"), 1, 9)
    assert len(search_all()) == len(first) + 1 and loads.count(True) == 2
    (tmp_path / "idx" / STAMP).unlink()  # the cache's files changed at the same generation
    search_all()
    assert loads.count(True) == 3


def test_the_named_faces_are_counted_from_an_index_not_the_whole_table(tmp_path):
    """Every query counts the named faces; the count agrees with a scan of the rows and SQLite answers
    it from the faces_labelled index, which an index made without it gets at its next writer."""
    import sqlite3

    photos = tmp_path / "photos"
    with create(tmp_path) as store:
        ids = [add(store, photo(photos, f"{k}.jpg", bytes([k])), 2, k) for k in range(6)]
        for k in (1, 3, 4):
            store.set_label(ids[k][:1], f"p{k}")
        rows = store.faces(range(1, 13))
        assert store.count_labelled() == sum(r.label is not None for r in rows) > 0
    db_path = tmp_path / "idx" / "meta.sqlite"
    plan = "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM faces WHERE label IS NOT NULL"
    with sqlite3.connect(db_path) as db:
        assert "faces_labelled" in str(db.execute(plan).fetchall())
        db.execute("DROP INDEX faces_labelled")  # an index from before it
    with FaceIndex.open(tmp_path / "idx", model_id="m1") as store:
        assert store.count_labelled() == sum(r.label is not None for r in rows)
    with sqlite3.connect(db_path) as db:
        assert "faces_labelled" in str(db.execute(plan).fetchall())
