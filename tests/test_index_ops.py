"""facesearch.store.vectors.ops against numpy brute force: k-NN, range pairs, recall, components."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from facesearch.store.vectors import ops, ranges


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n: int, d: int, n_clusters: int, noise: float, seed: int) -> np.ndarray:
    """Unit vectors around ``n_clusters`` random centres: a stand-in for face embeddings."""
    rng = np.random.default_rng(seed)
    centres = unit(n_clusters, d, seed + 1)
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def naive_dists(xq, xb) -> np.ndarray:
    """All distances in float64 (accurate to ~1e-8 even for duplicates)."""
    xq, xb = xq.astype(np.float64), xb.astype(np.float64)
    d2 = (xq * xq).sum(1)[:, None] + (xb * xb).sum(1)[None, :] - 2 * xq @ xb.T
    return np.sqrt(np.maximum(d2, 0))


def brute_pairs(x, tau, ids=None) -> set[tuple[int, int]]:
    ids = np.arange(len(x)) if ids is None else np.asarray(ids)
    dm = naive_dists(x, x)
    a, b = np.nonzero(np.triu(dm <= tau, k=1))
    return {(min(int(ids[p]), int(ids[q])), max(int(ids[p]), int(ids[q]))) for p, q in zip(a, b)}


def assert_pairs_equal_up_to_boundary(got: set, want: set, x, ids, tau) -> None:
    """Pair sets may differ only by pairs whose distance is within float rounding of tau."""
    pos = {int(i): p for p, i in enumerate(ids)}
    for a, b in got ^ want:
        d = float(np.linalg.norm(x[pos[a]].astype(np.float64) - x[pos[b]]))
        assert abs(d - tau) < 1e-5, (a, b, d)


# --- exact numpy search (the oracle) ------------------------------------------------------


def test_exact_knn_matches_naive_distances():
    xb, xq = unit(300, 16, 0), unit(20, 16, 1)
    D, I = ops.exact_knn(xq, xb, 7)
    dm = naive_dists(xq, xb)
    want = np.argsort(dm, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(I, want)
    np.testing.assert_allclose(D, np.take_along_axis(dm, want, axis=1), atol=1e-5)
    assert (np.diff(D, axis=1) >= 0).all()


def test_exact_knn_pads_when_k_exceeds_n():
    D, I = ops.exact_knn(unit(2, 8, 0), unit(3, 8, 1), 5)
    assert (I[:, 3:] == -1).all() and np.isinf(D[:, 3:]).all()
    assert set(I[0, :3]) == {0, 1, 2}


def test_exact_range_matches_naive():
    xb, xq = unit(200, 8, 2), unit(15, 8, 3)
    lims, D, I = ops.exact_range(xb, 1.0, xq)
    dm = naive_dists(xq, xb)
    for q in range(len(xq)):
        np.testing.assert_array_equal(I[lims[q]:lims[q + 1]], np.flatnonzero(dm[q] <= 1.0))
        np.testing.assert_allclose(D[lims[q]:lims[q + 1]], dm[q][dm[q] <= 1.0], atol=1e-5)


def test_exact_pairs_matches_naive_and_handles_duplicates():
    x = unit(150, 8, 4)
    x = np.concatenate([x, x[:10]])  # exact duplicates: distance 0, no cancellation error
    i, j, d = ops.exact_pairs(x, 0.8)
    got = set(zip(i.tolist(), j.tolist()))
    assert_pairs_equal_up_to_boundary(got, brute_pairs(x, 0.8), x, np.arange(len(x)), 0.8)
    assert all(d[(i == k) & (j == 150 + k)][0] == 0.0 for k in range(10))
    assert (i < j).all()


def test_as_matrix_rejects_bad_input():
    with pytest.raises(ValueError):
        ops.as_matrix(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError):
        ops.as_matrix(np.zeros((2, 3)), d=4)
    assert ops.as_matrix(np.zeros(4)).shape == (1, 4)


# --- index construction -------------------------------------------------------------------


def test_choose_and_resolve_index_type():
    assert ops.choose_index_type(0) == "flat"
    assert ops.choose_index_type(ops.AUTO_FLAT_MAX) == "flat"
    assert ops.choose_index_type(ops.AUTO_FLAT_MAX + 1) == "hnsw"
    assert ops.choose_index_type(ops.AUTO_HNSW_MAX + 1) == "ivf"
    assert ops.resolve_index_type("ivfpq", 100) == "ivf"  # too few vectors to train PQ
    assert ops.resolve_index_type("ivf", 0) == "flat"
    assert ops.resolve_index_type("hnsw", 0) == "hnsw"
    with pytest.raises(ValueError):
        ops.resolve_index_type("lsh", 10)


def test_build_index_rejects_duplicate_ids():
    with pytest.raises(ValueError):
        ops.build_index(unit(3, 4, 0), [1, 1, 2])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
def test_index_ids_and_vectors_round_trip(kind):
    n = ops.IVFPQ_MIN_TRAIN if kind == "ivfpq" else 500
    x, ids = unit(n, 16, 5), np.arange(n, dtype=np.int64) * 7 + 3
    index = ops.build_index(x, ids, kind)
    assert ops.index_type_of(index) == kind
    got_ids, got_x = ops.index_vectors(index)
    order = np.argsort(got_ids)
    np.testing.assert_array_equal(got_ids[order], ids)
    if kind != "ivfpq":  # PQ decoding is lossy
        np.testing.assert_allclose(got_x[order], x, atol=1e-6)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_remove_ids_keeps_other_ids_correct(kind):
    # Regression: IDMap2 over IVF corrupts ids after remove_ids (faiss #2409); our IVF uses native ids.
    x, ids = unit(800, 16, 6), np.arange(800, dtype=np.int64) + 1000
    index = ops.build_index(x, ids, kind)
    assert ops.remove_ids(index, ids[::3])
    assert index.ntotal == 800 - len(ids[::3])
    keep = np.setdiff1d(np.arange(800), np.arange(800)[::3])
    index.add_with_ids(x[::3][:5], ids[::3][:5])  # re-add some after removal
    D, I = ops.search(index, x[keep], 1)
    np.testing.assert_array_equal(I[:, 0], ids[keep])
    np.testing.assert_allclose(D[:, 0], 0.0, atol=1e-3)


def test_hnsw_cannot_remove():
    index = ops.build_index(unit(50, 8, 7), np.arange(50), "hnsw")
    assert ops.remove_ids(index, [1, 2]) is False
    assert index.ntotal == 50


# --- flat search is exact -----------------------------------------------------------------


def test_flat_knn_equals_exact_search():
    xb, xq = unit(3000, 64, 8), unit(100, 64, 9)
    ids = np.random.default_rng(0).permutation(10_000)[:3000].astype(np.int64)
    index = ops.build_index(xb, ids, "flat")
    D, I = ops.search(index, xq, 10)
    De, Ie = ops.exact_knn(xq, xb, 10)
    np.testing.assert_array_equal(I, ids[Ie])
    np.testing.assert_allclose(D, De, atol=1e-5)


def test_search_pads_missing_neighbours():
    index = ops.build_index(unit(3, 8, 10), [5, 6, 7], "flat")
    D, I = ops.search(index, unit(2, 8, 11), 5)
    assert (I[:, 3:] == -1).all() and np.isinf(D[:, 3:]).all()
    empty = ops.build_index(np.zeros((0, 8), np.float32), [], "flat")
    D, I = ops.search(empty, unit(2, 8, 11), 3)
    assert I.shape == (2, 3) and (I == -1).all()


def test_flat_range_pairs_equal_exact_pairs():
    x = clustered(2500, 32, 200, 0.6, 12)
    x = np.concatenate([x, x[:20] + 1e-4])  # near-duplicates
    ids = (np.arange(len(x), dtype=np.int64) * 13) % 100_003
    tau = 0.7
    i, j, d = ops.range_pairs(x, tau, ids=ids, block=512)  # several query blocks
    ei, ej, ed = ops.exact_pairs(x, tau)
    want = {(min(ids[a], ids[b]), max(ids[a], ids[b])) for a, b in zip(ei, ej)}
    got = set(zip(i.tolist(), j.tolist()))
    assert got == want and len(got) == len(i)  # same tau cut: distances recomputed the same way
    assert (i < j).all() and (d <= tau).all()
    assert_pairs_equal_up_to_boundary(got, brute_pairs(x, tau, ids), x, ids, tau)
    # Passing the FAISS index itself gives the same answer.
    i2, j2, d2 = ops.range_pairs(ops.build_index(x, ids, "flat"), tau)
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_array_equal(j2, j)
    np.testing.assert_allclose(d2, d, atol=1e-6)


def test_range_pairs_tiny_inputs():
    assert all(len(a) == 0 for a in ops.range_pairs(unit(1, 8, 0), 2.0))
    i, j, d = ops.range_pairs(unit(2, 8, 0), 2.0)
    assert (i.tolist(), j.tolist()) == ([0], [1])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_range_pairs_are_exact_pairs_with_high_recall(kind):
    x = clustered(3000, 32, 300, 0.6, 13)
    ids = np.arange(len(x), dtype=np.int64) + 50
    tau = 0.6
    index = ops.build_index(x, ids, kind)
    i, j, d = ops.range_pairs(index, tau, xb=x, ids=ids)
    got = set(zip(i.tolist(), j.tolist()))
    want = brute_pairs(x, tau, ids)
    assert len(want) > 1000
    wrong = got - want
    assert_pairs_equal_up_to_boundary(wrong, set(), x, ids, tau)  # never a pair beyond tau
    assert len(got & want) / len(want) >= 0.95
    np.testing.assert_allclose(d, [np.linalg.norm(x[a - 50] - x[b - 50]) for a, b in zip(i, j)], atol=1e-5)


def test_knn_range_grows_k_for_big_duplicate_groups():
    # 120 near-copies of one face: every query saturates k_cap=8, k must grow to find all 7140 pairs.
    base = unit(1, 32, 14)
    burst = base + 1e-3 * unit(120, 32, 15)
    x = np.concatenate([burst / np.linalg.norm(burst, axis=1, keepdims=True), unit(300, 32, 16)])
    index = ops.build_index(x, np.arange(len(x)), "hnsw")
    i, j, _ = ops.range_pairs(index, 0.1, k_cap=8)
    assert set(zip(i.tolist(), j.tolist())) == brute_pairs(x, 0.1)


# --- approximate k-NN recall at default settings ------------------------------------------


@pytest.fixture(scope="module")
def recall_data():
    x = clustered(20_200, 128, 2000, 0.6, 17)
    xb, xq = x[:20_000], x[20_000:]
    _, Ie = ops.exact_knn(xq, xb, 10)
    return xb, xq, Ie


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_recall_at_10_default_settings(recall_data, kind):
    xb, xq, Ie = recall_data
    ids = np.arange(len(xb), dtype=np.int64) * 2 + 1
    index = ops.build_index(xb, ids, kind)
    _, I = ops.search(index, xq, 10)
    recall = np.mean([len(set(I[r]) & set(ids[Ie[r]])) / 10 for r in range(len(xq))])
    assert recall >= 0.95, recall


# --- connected components -----------------------------------------------------------------


def bfs_components(ids, edges) -> list[list[int]]:
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen, comps = set(), []
    for s in ids:
        if s in seen:
            continue
        comp, stack = [], [s]
        seen.add(s)
        while stack:
            u = stack.pop()
            comp.append(u)
            for v in adj[u] - seen:
                seen.add(v)
                stack.append(v)
        comps.append(sorted(comp))
    return sorted(comps, key=lambda c: (-len(c), c[0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_components_match_bfs(seed):
    rng = np.random.default_rng(seed)
    ids = rng.choice(1_000_000, 600, replace=False).astype(np.int64)
    e = rng.integers(0, 600, (450, 2))
    i, j = ids[e[:, 0]], ids[e[:, 1]]
    got = ops.connected_components(ids, i, j)
    assert got == bfs_components(ids.tolist(), zip(i.tolist(), j.tolist()))
    assert ops.connected_components(ids, i, j, min_size=2) == [c for c in got if len(c) >= 2]


def test_connected_components_long_chain_and_empty():
    n = 5000
    ids = np.arange(n)[::-1] * 3
    comps = ops.connected_components(ids, ids[:-1], ids[1:])
    assert comps == [sorted(ids.tolist())]
    assert ops.connected_components([], [], []) == []
    assert ops.connected_components([4, 2], [], []) == [[2], [4]]
    with pytest.raises(ValueError):
        ops.connected_components([1, 2], [1], [3])


# --- GPU ----------------------------------------------------------------------------------


def test_gpu_available_is_a_bool_without_warnings(recwarn):
    assert isinstance(ops.gpu_available(), bool)
    assert not [w for w in recwarn if "gpu" in str(w.message).lower()]


@pytest.mark.gpu
@pytest.mark.skipif(not ops.gpu_available(), reason="needs faiss with CUDA and a GPU")
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_search_matches_cpu(kind):
    xb, xq = clustered(5000, 64, 500, 0.6, 18), clustered(50, 64, 500, 0.6, 19)
    index = ops.build_index(xb, np.arange(5000) + 9, kind)
    gpu = ops.to_gpu(index)
    Dc, Ic = ops.search(index, xq, 10, gpu=False)
    Dg, Ig = ops.search(gpu, xq, 10)
    assert (Ig == Ic).mean() > 0.99
    np.testing.assert_allclose(Dg, Dc, atol=1e-3)
    i, j, _ = ops.range_pairs(index, 0.5, xb=xb, ids=np.arange(5000) + 9, gpu=True)
    ci, cj, _ = ops.range_pairs(index, 0.5, xb=xb, ids=np.arange(5000) + 9, gpu=False)
    if kind == "flat":
        assert set(zip(i, j)) == set(zip(ci, cj))


def test_knn_range_keeps_k_max_nearest_when_groups_exceed_it(monkeypatch, caplog):
    monkeypatch.setattr(ranges, "RANGE_K_MAX", 16)
    x = np.concatenate([np.repeat(unit(1, 8, 20), 40, axis=0) + 1e-4 * unit(40, 8, 21), unit(50, 8, 22)])
    i, j, _ = ops.range_pairs(ops.build_index(x, np.arange(len(x)), "hnsw"), 0.05, k_cap=4)
    assert ops.connected_components(np.arange(len(x)), i, j, min_size=2) == [list(range(40))]
    assert "more than 16 neighbours" in caplog.text
