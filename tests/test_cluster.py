"""Clustering faces into persons, each method against a brute-force oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facesearch.people import cluster as C


def people(n_people=12, per=6, dim=16, spread=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    labels = np.repeat(np.arange(n_people), per)
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def brute_edges(x, k, tau):
    d = np.sqrt(np.clip(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0, None))
    edges = {}
    for a in range(len(x)):
        order = [b for b in np.argsort(d[a], kind="stable") if b != a][:k]
        for b in order:
            if d[a, b] <= tau:
                edges[(min(a, b), max(a, b))] = d[a, b]
    return edges


def test_knn_graph_matches_brute_force():
    x, _ = people()
    i, j, d = C.knn_graph(x, k=5, tau=0.9)
    got = {(a, b): v for a, b, v in zip(i.tolist(), j.tolist(), d.tolist())}
    want = brute_edges(x, 5, 0.9)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-4)


def union_find_labels(n, edges):
    parent = list(range(n))

    def find(v):
        while parent[v] != v:
            v = parent[v]
        return v
    for a, b in edges:
        parent[find(a)] = find(b)
    return [find(v) for v in range(n)]


def same_partition(a, b) -> bool:
    """Equal up to renaming, with -1 (unassigned) kept as is."""
    a, b = np.asarray(a), np.asarray(b)
    if not np.array_equal(a < 0, b < 0):
        return False
    pairs = set(zip(a[a >= 0].tolist(), b[b >= 0].tolist()))
    return len(pairs) == len({p for p, _ in pairs}) == len({q for _, q in pairs})


def test_connected_components_and_min_size_match_union_find():
    x, _ = people(seed=1)
    i, j, _ = C.knn_graph(x, 4, 0.8)
    roots = np.array(union_find_labels(len(x), zip(i.tolist(), j.tolist())))
    sizes = {r: (roots == r).sum() for r in set(roots.tolist())}
    want = np.array([r if sizes[r] >= 3 else -1 for r in roots])
    assert same_partition(C.connected_components(len(x), i, j, min_size=3), want)


def naive_average_linkage(x, edges, tau, groups, pinned=None, forbid=None):
    """Every step: among clusters joined by an edge, merge the pair with the smallest root mean squared
    distance over all their face pairs, if within tau and allowed."""
    n = len(x)
    pinned = [-1] * n if pinned is None else list(pinned)
    forbid = [set()] * n if forbid is None else forbid

    def allowed(A, B):
        pa, pb = {pinned[u] for u in A} - {-1}, {pinned[v] for v in B} - {-1}
        if pa and pb and pa != pb:
            return False
        fa, fb = set().union(*(forbid[u] for u in A)), set().union(*(forbid[v] for v in B))
        return not (pa & fb or pb & fa)
    clusters = [{v} for v in range(n)]
    while True:
        best = None
        for a, b in itertools.combinations(range(len(clusters)), 2):
            A, B = clusters[a], clusters[b]
            if not any((min(u, v), max(u, v)) in edges for u in A for v in B):
                continue  # only clusters joined by an edge are candidates
            if {groups[u] for u in A} & {groups[v] for v in B} or not allowed(A, B):
                continue
            link = np.sqrt(np.mean([np.sum((x[u] - x[v]) ** 2) for u in A for v in B]))
            if link <= tau and (best is None or link < best[0] - 1e-12):
                best = (link, a, b)
        if best is None:
            break
        _, a, b = best
        clusters[a] |= clusters.pop(b)
    labels = np.full(n, -1)
    for k, c in enumerate(clusters):
        if len(c) >= 2 or any(pinned[v] >= 0 for v in c):
            labels[list(c)] = k
    return labels


def test_pinned_people_and_not_this_person_hold_like_the_naive_algorithm():
    """Faces the user put in different people never meet; a face told "not P" never joins P."""
    x, truth = people(n_people=4, per=6, spread=0.45, seed=7)
    n = len(x)
    pinned = np.full(n, -1)
    pinned[[0, 1]] = [100, 200]  # one person's faces, said by the user to be two people
    pinned[12] = 300
    forbid = [set() for _ in range(n)]
    forbid[2] = {100}
    i, j, d = C.knn_graph(x, 8, 1.1)
    got = C.average_linkage(x, i, j, tau=0.9, groups=np.arange(n), pinned=pinned, forbid=forbid)
    edges = dict(zip(zip(i.tolist(), j.tolist()), d.tolist()))
    want = naive_average_linkage(x, edges, 0.9, np.arange(n), pinned, forbid)
    assert same_partition(got, want)
    assert got[0] != got[1] and got[12] >= 0 and (got[2] < 0 or got[2] != got[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_linkage_with_cannot_link_matches_the_naive_algorithm(seed):
    x, _ = people(n_people=5, per=5, spread=0.5, seed=seed)
    groups = np.random.default_rng(seed).integers(0, 12, len(x))  # "photos": faces sharing one never merge
    i, j, d = C.knn_graph(x, 6, 1.0)
    got = C.average_linkage(x, i, j, tau=0.8, groups=groups)
    want = naive_average_linkage(x, dict(zip(zip(i.tolist(), j.tolist()), d.tolist())), 0.8, groups)
    assert same_partition(got, want)
    for k in set(got[got >= 0].tolist()):
        assert len(set(groups[got == k].tolist())) == (got == k).sum()  # cannot-link holds


def naive_dbscan(n, edges, min_samples):
    nbrs = {v: set() for v in range(n)}
    for (a, b), _ in edges.items():
        nbrs[a].add(b)
        nbrs[b].add(a)
    core = {v for v in range(n) if len(nbrs[v]) + 1 >= min_samples}
    roots = union_find_labels(n, [(a, b) for (a, b) in edges if a in core and b in core])
    labels = np.full(n, -1)
    for v in core:
        labels[v] = roots[v]
    for v in set(range(n)) - core:
        cores = [(edges[(min(v, c), max(v, c))], c) for c in nbrs[v] if c in core]
        if cores:
            labels[v] = roots[min(cores)[1]]
    return labels


def test_dbscan_matches_the_naive_algorithm():
    x, _ = people(n_people=8, per=4, spread=0.55, seed=3)
    i, j, d = C.knn_graph(x, 8, 0.85)
    edges = dict(zip(zip(i.tolist(), j.tolist()), d.tolist()))
    assert same_partition(C.dbscan(len(x), i, j, d, min_samples=3), naive_dbscan(len(x), edges, 3))


def naive_chinese_whispers(n, edges, seed, iterations=100):
    """Label propagation with explicit loops: the same visiting order, ties to the smallest label."""
    nbrs = {v: [] for v in range(n)}
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    labels = list(range(n))
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = False
        for v in rng.permutation(n):
            if not nbrs[v]:
                continue
            counts = {}
            for u in nbrs[v]:
                counts[labels[u]] = counts.get(labels[u], 0) + 1
            best = min(counts, key=lambda lab: (-counts[lab], lab))
            changed |= best != labels[v]
            labels[v] = best
        if not changed:
            break
    return np.array(labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_chinese_whispers_matches_explicit_label_propagation(seed):
    x, _ = people(n_people=6, per=6, spread=0.5, seed=seed)
    i, j, _ = C.knn_graph(x, 5, 0.9)
    want = naive_chinese_whispers(len(x), zip(i.tolist(), j.tolist()), seed=3)
    sizes = {lab: (want == lab).sum() for lab in set(want.tolist())}
    want = np.array([lab if sizes[lab] >= 2 else -1 for lab in want])
    assert same_partition(C.chinese_whispers(len(x), i, j, seed=3), want)


def test_chinese_whispers_keeps_photos_pins_and_not_this_person_apart():
    x, truth = people(n_people=3, per=8, spread=0.3, seed=8)
    n = len(x)
    groups = np.arange(n)
    groups[1] = groups[0]  # faces 0 and 1 (same person) are in one photo
    pinned = np.full(n, -1)
    pinned[[2, 3]] = [7, 8]  # the user split one person's faces 2 and 3 apart
    forbid = [set() for _ in range(n)]
    forbid[4] = {7}  # face 4 is "not person 7"
    i, j, _ = C.knn_graph(x, 10, 1.2)
    got = C.chinese_whispers(n, i, j, groups=groups, pinned=pinned, forbid=forbid)
    assert got[0] != got[1] or got[0] < 0
    assert got[2] >= 0 and got[3] >= 0 and got[2] != got[3]
    assert got[4] != got[2]
    free = C.chinese_whispers(n, i, j)
    assert free[0] == free[1] == free[2] == free[3] == free[4]  # without the constraints they are one


def test_chinese_whispers_separates_well_apart_people():
    x, truth = people(n_people=6, per=5, spread=0.1, seed=4)
    i, j, _ = C.knn_graph(x, 6, 0.6)
    assert same_partition(C.chinese_whispers(len(x), i, j), truth)


def test_cluster_scores_match_per_face_loops():
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 6, 40)
    pred = rng.integers(-1, 5, 40)
    s = C.cluster_scores(truth, pred)
    ids = [("u", k) if p < 0 else ("c", p) for k, p in enumerate(pred)]
    cl = [{b for b in range(40) if ids[b] == ids[a]} for a in range(40)]
    tl = [{b for b in range(40) if truth[b] == truth[a]} for a in range(40)]
    bp = np.mean([len(cl[a] & tl[a]) / len(cl[a]) for a in range(40)])
    br = np.mean([len(cl[a] & tl[a]) / len(tl[a]) for a in range(40)])
    assert s["bcubed_precision"] == pytest.approx(bp) and s["bcubed_recall"] == pytest.approx(br)
    pairs = list(itertools.combinations(range(40), 2))
    tp = sum(ids[a] == ids[b] and truth[a] == truth[b] for a, b in pairs)
    assert s["pairwise_precision"] == pytest.approx(tp / sum(ids[a] == ids[b] for a, b in pairs))
    assert s["pairwise_recall"] == pytest.approx(tp / sum(truth[a] == truth[b] for a, b in pairs))
    multi = np.array([len(tl[a]) >= 2 for a in range(40)])
    assert s["assigned"] == pytest.approx(np.mean(pred[multi] >= 0))
    assert C.cluster_scores([0, 1, 2], [-1, -1, -1])["bcubed_f"] == 1.0  # one-photo people left alone


@pytest.mark.slow
def test_knn_graph_of_a_large_collection_keeps_nearly_every_edge():
    """Past AUTO_FLAT_MAX the graph comes from IVF with few probes: compare with exact search on a sample."""
    from facesearch.store.vectors import ops

    x, _ = people(n_people=9000, per=7, dim=32, spread=0.3, seed=9)  # 63k faces
    i, j, d = C.knn_graph(x, 10, 0.7)
    rows = np.random.default_rng(0).choice(len(x), 200, replace=False)
    D, I = ops.exact_knn(x[rows], x, 11)
    want = {(min(r, c), max(r, c)) for q, r in enumerate(rows) for c, dist in zip(I[q], D[q]) if c != r and dist <= 0.7}
    got = set(zip(i.tolist(), j.tolist()))
    assert len(x) > ops.AUTO_FLAT_MAX and want and len(want & got) >= 0.95 * len(want)
