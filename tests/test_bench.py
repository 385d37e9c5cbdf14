"""The index benchmarks run end to end in --quick mode and report correct (not timed) facts.

Timing values are never asserted: only that the JSON is well-formed and that
recall is measured against exact search (flat == 1.0, exact pair counts present).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    """Import ``bench/<name>.py`` as a module (bench/ is scripts, not a package)."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def common():
    return load("_common")


@pytest.fixture(scope="module")
def search_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert load("search").main(["--quick", "--out", str(out), "--single", "20", "--batch", "100"]) == 0
    return json.loads((out / "search.json").read_text())


@pytest.fixture(scope="module")
def dedupe_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert load("dedupe").main(["--quick", "--out", str(out)]) == 0
    return json.loads((out / "dedupe.json").read_text())


def check_machine(m: dict) -> None:
    for key in ("cpu", "cores", "ram_gib", "python", "numpy", "faiss", "date", "loadavg_start", "loadavg_end"):
        assert key in m, key
    assert m["cores"] >= 1


# --- search -------------------------------------------------------------------------------


def test_search_json_is_complete(search_json):
    check_machine(search_json["machine"])
    assert search_json["quick"] is True
    res = search_json["sizes"]["5000"]
    assert set(res["types"]) == {"flat", "hnsw", "ivf", "ivfpq", "auto"}
    for kind, r in res["types"].items():
        for key in ("build_s", "build_rate_vps", "add_rate_vps", "bytes_per_vector", "single_p50_ms",
                    "single_p99_ms", "batch_qps", "recall_at_10"):
            assert r[key] is not None and r[key] >= 0, (kind, key)
        assert 0.0 <= r["recall_at_10"] <= 1.0
    assert "skipped" in search_json["gpu"] or "types" in search_json["gpu"]
    assert {t["target"].split(" (")[0] for t in search_json["targets"]} >= {"auto query p50", "auto recall@10"}


def test_search_recall_is_against_exact(search_json):
    types = search_json["sizes"]["5000"]["types"]
    assert types["flat"]["recall_at_10"] == 1.0  # flat is exact, so the oracle must agree exactly
    assert types["auto"]["resolved"] == "flat" and types["auto"]["recall_at_10"] == 1.0
    assert types["ivfpq"]["resolved"] == "ivf"  # too few vectors to train PQ: the fallback is reported
    assert types["hnsw"]["recall_at_10"] > 0.9  # approximate, but not broken


def test_search_bytes_per_vector_is_plausible(search_json):
    # flat stores 4 B x 128 dims + an 8 B id per vector
    assert 520 <= search_json["sizes"]["5000"]["types"]["flat"]["bytes_per_vector"] < 600


def test_exact_knn_blockwise_matches_one_block():
    search = load("search")
    from facesearch.store.vectors import ops

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((40_000, 16)).astype(np.float32)
    xq = rng.standard_normal((30, 16)).astype(np.float32)
    D, I = search.exact_knn_blockwise(xq, xb, 5)  # spans 3 base chunks
    D0, I0 = ops.exact_knn(xq, xb, 5)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_allclose(D, D0, rtol=1e-6)


def test_recall_counts_ties_and_misses():
    search = load("search")
    xb = np.eye(4, dtype=np.float32)
    xq = np.zeros((1, 4), np.float32)  # every base vector is at distance 1: all tie
    exact_D, exact_I = np.ones((1, 2), np.float32), np.array([[0, 1]])
    assert search.recall_at_k(xq, xb, np.array([[2, 3]]), exact_D, exact_I) == 1.0
    assert search.recall_at_k(xq, xb, np.array([[0, -1]]), exact_D, exact_I) == 0.5


# --- dedupe -------------------------------------------------------------------------------


def test_dedupe_json_is_complete(dedupe_json):
    check_machine(dedupe_json["machine"])
    r = dedupe_json["sizes"]["5000"]
    assert r["fast"]["resolved"] == "flat"
    assert r["fast"]["peak_rss_bytes"] > 0
    assert r["exact"]["method"].startswith("ops.exact_pairs")
    assert r["exact"]["exact_pairs"] >= r["planted_pairs"] > 0  # every planted pair is a true pair
    assert {t["target"].split(" (")[0] for t in dedupe_json["targets"]} >= {"pair recall", "peak RSS, whole process"}


def test_dedupe_flat_is_exact(dedupe_json):
    r = dedupe_json["sizes"]["5000"]
    assert r["fast"]["pairs"] == r["exact"]["exact_pairs"]
    assert r["exact"]["pair_recall"] == 1.0 and r["exact"]["pair_precision"] == 1.0
    assert r["fast"]["planted_pair_recall"] == 1.0


def test_planted_groups_are_near_duplicates():
    dedupe = load("dedupe")
    data = dedupe.planted_faces(3000, seed=1)
    assert np.allclose(np.linalg.norm(data.x, axis=1), 1, atol=1e-5)
    d = np.linalg.norm(data.x[data.pairs[:, 0]] - data.x[data.pairs[:, 1]], axis=1)
    assert d.max() < 0.35 < dedupe.TAU  # "well under tau"
    sizes = np.bincount(data.group[data.group >= 0])
    assert sizes.min() >= 2 and sizes.max() <= 5
    assert len(data.pairs) == int((sizes * (sizes - 1) // 2).sum())


@pytest.mark.slow
def test_sampled_exact_pairs_match_full(common):
    """The >100k oracle (row sample vs whole base) agrees with exact_pairs restricted to the sample."""
    dedupe = load("dedupe")
    from facesearch.store.vectors import ops

    data = dedupe.planted_faces(20_000, seed=2)
    rows = np.sort(np.random.default_rng(0).choice(len(data.x), 500, replace=False))
    i, j = dedupe.exact_pairs_of_rows(data.x, rows, 0.5)
    ei, ej, _ = ops.exact_pairs(data.x, 0.5)
    touch = np.isin(ei, rows) | np.isin(ej, rows)
    assert set(zip(i.tolist(), j.tolist())) == set(zip(ei[touch].tolist(), ej[touch].tolist()))


# --- shared helpers -----------------------------------------------------------------------


def test_synthetic_faces_look_like_embeddings(common):
    faces = common.face_embeddings(20_000, seed=0)
    prof = common.distance_profile(faces)
    same, diff = prof["same_identity_p5_p50_p95"], prof["different_identity_p5_p50_p95"]
    assert 0.5 <= same[0] and same[2] <= 0.85
    assert 1.25 <= diff[1] <= 1.45
    assert faces.x.dtype == np.float32 and faces.x.shape == (20_000, 128)


def test_target_verdicts(common):
    assert common.target("p50", 1.5, 2.0, "lower")["met"] is True
    assert common.target("recall", 0.9, 0.95, "higher")["met"] is False
    t = common.target("rate", 25_000, 50_000, "higher", "vectors/s")
    assert t["met"] is False and t["ratio"] == 0.5
    assert common.target("x", None, 1.0, "lower")["met"] is None


def test_sizes_option(common):
    assert common._sizes("10k,100K,1M,2500") == [10_000, 100_000, 1_000_000, 2_500]


@pytest.mark.parametrize("seed", range(40))
def test_face_embeddings_has_exactly_n_rows(common, seed):
    faces = common.face_embeddings(997, per_identity=8, seed=seed)
    assert faces.x.shape == (997, 128) and faces.identity.shape == (997,)


@pytest.mark.slow
def test_scale_bench_engines_agree_on_synthetic_photos(tmp_path, tmp_path_factory):
    """bench/scale.py's engine comparison, on a few synthetic photos (its own Ray runtime: slow; never
    beside another test's Ray runtime on another pytest worker)."""
    pytest.importorskip("ray")
    from facesearch.photos.synthetic import make_identity_folder
    from tests.conftest import one_at_a_time

    photos = sorted(make_identity_folder(tmp_path / "photos", n_people=2, per_person=3, seed=4).rglob("*.png"))
    with one_at_a_time("ray", tmp_path_factory):
        res = load("scale").bench_engines(photos, tmp_path / "work", workers=1)
    assert res["photos"] == 6 and res["runs"]["ray"]["faces"] == res["runs"]["local"]["faces"] > 0
    same = res["same_results"]
    assert same["same_files"] and same["same_statuses"] and same["same_face_counts"]
    assert same["min_cosine"] >= 0.9999 and same["max_box_diff_px"] < 1e-3
    assert res["ray_over_local_seconds"] > 0


def test_scale_bench_backends_find_the_planted_pairs_on_both_stores(tmp_path):
    """bench/scale.py's vector-store comparison at a toy size: both stores exact, pairs found."""
    pytest.importorskip("pymilvus")
    res = load("scale").bench_backends([2_000], tau=0.35, work=tmp_path)
    rows = {r["backend"]: r for r in res["rows"]}
    assert set(rows) == {"faiss", "milvus"}
    for r in rows.values():
        assert r["recall@10"] == 1.0 and r["pair_recall"] == 1.0 and r["dedupe_pairs"] >= 10
    assert set(res["ratios"]["2000"]) == {"insert_s", "query_p50_ms", "dedupe_s"}
