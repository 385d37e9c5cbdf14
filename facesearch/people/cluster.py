"""Clustering face embeddings into persons: plain functions over arrays (layer 1).

Every method works on the same sparse graph: each face linked to its ``k`` nearest
faces within a distance ``tau`` (:func:`knn_graph`, FAISS, so 1M faces stay cheap),
as ``i, j, d`` arrays of undirected edges. A method returns one label per face,
``-1`` for a face left unassigned (noise, or a cluster below ``min_size``):

- :func:`connected_components` — single linkage at ``tau`` (chains look-alikes);
- :func:`chinese_whispers` — dlib's label propagation (``dlib.chinese_whispers``);
- :func:`dbscan` — core faces have ``min_samples`` neighbours within ``tau``
  (immich: 0.5 cosine distance, 3 faces);
- :func:`average_linkage` — agglomerative, exact (root mean squared) average linkage,
  with **cannot-link**: two faces of one photo never end in one cluster, nor people
  the user keeps apart.

Which method and settings the product uses is chosen on dev (``bench/people.py``).
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy import sparse

from facesearch.store.vectors import ops


def knn_graph(x: np.ndarray, k: int, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges ``(i, j, d)``, ``i < j``, between each face and its ``k`` nearest within ``tau``."""
    x = ops.as_matrix(x)
    n = len(x)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    D, I = ops.search(ops.graph_index(x), x, min(k + 1, n))  # +1: a face is its own nearest
    rows = np.repeat(np.arange(n), I.shape[1])
    cols, dist = I.reshape(-1), D.reshape(-1)
    keep = (cols >= 0) & (cols != rows) & (dist <= tau)
    return _undirected(rows[keep], cols[keep], dist[keep])


def _undirected(i: np.ndarray, j: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.minimum(i, j), np.maximum(i, j)
    key = a.astype(np.int64) * (int(max(b.max(initial=0), 0)) + 1) + b
    _, first = np.unique(key, return_index=True)
    return a[first].astype(np.int64), b[first].astype(np.int64), d[first].astype(np.float32)


def _adjacency(n: int, i: np.ndarray, j: np.ndarray) -> sparse.csr_matrix:
    w = np.ones(len(i), np.float32)
    return sparse.coo_matrix((np.r_[w, w], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Labels renumbered 0.. by cluster size (largest first); clusters under ``min_size`` become -1."""
    labels = np.asarray(labels)
    out = np.full(len(labels), -1, np.int64)
    ok = labels >= 0
    uniq, inv, counts = np.unique(labels[ok], return_inverse=True, return_counts=True)
    big = counts >= min_size
    order = np.argsort(-counts[big], kind="stable")
    new = np.full(len(uniq), -1, np.int64)
    new[np.flatnonzero(big)[order]] = np.arange(big.sum())
    out[ok] = new[inv]
    return out


def connected_components(n: int, i: np.ndarray, j: np.ndarray, min_size: int = 2) -> np.ndarray:
    """Single linkage: faces joined by any chain of edges are one person (``ops.connected_components``)."""
    labels = np.full(n, -1, np.int64)
    for k, members in enumerate(ops.connected_components(np.arange(n), i, j, min_size)):
        labels[members] = k
    return labels


def chinese_whispers(n: int, i: np.ndarray, j: np.ndarray, iterations: int = 100, seed: int = 0,
                     min_size: int = 2, groups: np.ndarray | None = None, pinned: np.ndarray | None = None,
                     forbid: list | None = None, apart: list | None = None) -> np.ndarray:
    """dlib's Chinese Whispers: each face in turn takes the label most of its neighbours have.

    Constraints, all cannot-link: a face never takes a label another face of its ``groups``
    (photo) has; faces ``pinned`` to a person (-1: none) keep that person's label, and a
    cluster reached from them is kept whatever its size; a face never takes the label of a
    person in its ``forbid`` set; the two of each ``apart`` pair never share a label (two tracks of a
    clip on screen at once).
    """
    adj = _adjacency(n, i, j)
    ptr, nbr = adj.indptr, adj.indices
    pinned = np.full(n, -1) if pinned is None else np.asarray(pinned)
    labels = np.where(pinned >= 0, n + pinned, np.arange(n))  # a person's faces share one label
    rules = _CWRules(n, groups, forbid, apart)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for v in rng.permutation(n):
            ns = nbr[ptr[v]:ptr[v + 1]]
            if pinned[v] >= 0 or not len(ns):
                continue
            vals, counts = np.unique(labels[ns], return_counts=True)
            for k in np.argsort(-counts, kind="stable"):
                if vals[k] == labels[v] or rules.allowed(v, int(vals[k]), labels):
                    changed += vals[k] != labels[v]
                    labels[v] = vals[k]
                    break
        if not changed:
            break
    kept = np.isin(labels, labels[pinned >= 0])
    out = drop_small(np.where(kept, -1, labels), min_size)
    return _with_pinned(out, labels, kept)


class _CWRules:
    """Which labels a face may take: none shared with another face of its photo, none it is "not"."""

    def __init__(self, n: int, groups, forbid, apart=None):
        self.same_photo: dict[int, list[int]] = {}
        if groups is not None:
            by_group: dict[int, list[int]] = {}
            for v, g in enumerate(np.asarray(groups).tolist()):
                by_group.setdefault(g, []).append(v)
            self.same_photo = {v: [u for u in vs if u != v] for vs in by_group.values() if len(vs) > 1 for v in vs}
        for a, b in apart or ():
            self.same_photo.setdefault(int(a), []).append(int(b))
            self.same_photo.setdefault(int(b), []).append(int(a))
        self.not_labels = [set()] * n if forbid is None else [{n + p for p in f or ()} for f in forbid]

    def allowed(self, v: int, label: int, labels: np.ndarray) -> bool:
        if label in self.not_labels[v]:
            return False
        return all(labels[u] != label for u in self.same_photo.get(v, ()))


def _with_pinned(out: np.ndarray, labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Give each pinned person's cluster its own label after the others, whatever its size."""
    base = out.max(initial=-1) + 1
    _, idx = np.unique(labels[kept], return_inverse=True)
    out[kept] = base + idx
    return out


def dbscan(n: int, i: np.ndarray, j: np.ndarray, d: np.ndarray, min_samples: int = 3) -> np.ndarray:
    """DBSCAN on the graph's edges (the neighbourhood radius is the graph's ``tau``).

    Core faces (``min_samples`` faces within the radius, itself included) joined by edges
    form clusters; a border face joins its nearest core neighbour's; the rest is noise.
    """
    degree = np.bincount(np.r_[i, j], minlength=n) + 1
    core = degree >= min_samples
    both = core[i] & core[j]
    _, comp = sparse.csgraph.connected_components(_adjacency(n, i[both], j[both]), directed=False)
    labels = np.where(core, comp, -1)
    # Border faces: nearest core neighbour first, so each takes the closest cluster.
    for a, b, _ in sorted(zip(np.r_[i, j], np.r_[j, i], np.r_[d, d]), key=lambda e: e[2]):
        if not core[a] and labels[a] < 0 and core[b]:
            labels[a] = comp[b]
    return drop_small(labels, 1)


def average_linkage(x: np.ndarray, i: np.ndarray, j: np.ndarray, tau: float, groups: np.ndarray | None = None,
                    min_size: int = 2, pinned: np.ndarray | None = None, forbid: list | None = None) -> np.ndarray:
    """Agglomerative clustering of unit vectors ``x``: merge the closest pair of clusters while their
    average linkage is within ``tau``.

    The linkage is the root mean squared distance over *every* face pair of the two clusters,
    exact from the clusters' mean vectors (for unit vectors the mean of ``|a - b|²`` is
    ``2 - 2·mean(A)·mean(B)``), so a kNN graph that lists only some pairs does not bias it; the
    graph's edges ``(i, j)`` only say which clusters are worth comparing. Constraints, all
    cannot-link:

    - ``groups`` (e.g. the photo of each face): clusters that share a group never merge;
    - ``pinned`` (a person id per face, -1 for none): clusters pinned to different people never
      merge, and a pinned face's cluster is kept whatever its size;
    - ``forbid`` (per face, person ids it is "not"): its cluster never joins those people's.
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    means = x.copy()
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for a, b in zip(i.tolist(), j.tolist()):
        nbrs[a].add(b)
        nbrs[b].add(a)
    state = _Clusters(n, groups, pinned, forbid)
    heap = [(_rms(means[a], means[b]), a, b) for a, b in zip(i.tolist(), j.tolist())]
    heapq.heapify(heap)
    while heap:
        link, a, b = heapq.heappop(heap)
        if link > tau:
            break
        if state.members[a] is None or state.members[b] is None or b not in nbrs[a]:
            continue
        if abs(_rms(means[a], means[b]) - link) > 1e-12:
            continue  # stale: a cluster grew after this pair was pushed
        if not state.compatible(a, b):
            continue
        a, b = (a, b) if state.size[a] >= state.size[b] else (b, a)
        means[a] = (state.size[a] * means[a] + state.size[b] * means[b]) / (state.size[a] + state.size[b])
        for c in nbrs[b]:
            nbrs[c].discard(b)
            if c != a:
                nbrs[c].add(a)
                nbrs[a].add(c)
        nbrs[a].discard(b)
        nbrs[b] = set()
        state.merge(a, b)
        for c in nbrs[a]:
            heapq.heappush(heap, (_rms(means[a], means[c]), min(a, c), max(a, c)))
    return state.labels(min_size)


def _rms(ma: np.ndarray, mb: np.ndarray) -> float:
    """Root mean squared distance between two clusters of unit vectors, from their means."""
    return float(np.sqrt(max(0.0, 2.0 - 2.0 * float(ma @ mb))))


class _Clusters:
    """Members and constraint tokens of each live cluster (indexed by a root face)."""

    def __init__(self, n: int, groups, pinned, forbid):
        self.size = np.ones(n, np.int64)
        self.members: list[list[int] | None] = [[v] for v in range(n)]
        self.groups = None if groups is None else [{g} for g in np.asarray(groups).tolist()]
        self.person = np.full(n, -1, np.int64) if pinned is None else np.asarray(pinned, np.int64).copy()
        self.forbid = [set(f or ()) for f in forbid] if forbid is not None else None

    def compatible(self, a: int, b: int) -> bool:
        if self.groups is not None and self.groups[a] & self.groups[b]:
            return False
        pa, pb = self.person[a], self.person[b]
        if pa >= 0 and pb >= 0 and pa != pb:
            return False
        return self.forbid is None or (pa not in self.forbid[b] and pb not in self.forbid[a])

    def merge(self, a: int, b: int) -> None:
        self.size[a] += self.size[b]
        self.members[a] += self.members[b]
        self.members[b] = None
        self.person[a] = max(self.person[a], self.person[b])
        if self.groups is not None:
            self.groups[a] |= self.groups[b]
        if self.forbid is not None:
            self.forbid[a] |= self.forbid[b]

    def labels(self, min_size: int) -> np.ndarray:
        out = np.full(len(self.size), -1, np.int64)
        for root, faces in enumerate(self.members):
            if faces is not None and (len(faces) >= min_size or self.person[root] >= 0):
                out[faces] = root
        return drop_small(out, 1)


# --- how good a clustering is -------------------------------------------------------------


def cluster_scores(truth, pred) -> dict:
    """Pairwise and BCubed precision/recall/F of ``pred`` against ``truth`` labels, and the assigned share.

    An unassigned face (``pred == -1``) is its own cluster: right for a one-photo person, a
    miss for anyone else. ``assigned`` is the share of faces of people with two or more faces
    that are in a cluster (one-photo people should stay unassigned).
    """
    t, p = np.asarray(truth), np.asarray(pred).copy()
    alone = p < 0
    p[alone] = p.max(initial=-1) + 1 + np.arange(alone.sum())  # each unassigned face a cluster of one
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    cells = sparse.coo_matrix((np.ones(len(t)), (pi, ti))).tocsr()
    n_cell, n_pred, n_true = cells.data, np.bincount(pi).astype(float), np.bincount(ti).astype(float)
    rows, cols = cells.nonzero()
    bp = float(np.sum(n_cell ** 2 / n_pred[rows]) / len(t))
    br = float(np.sum(n_cell ** 2 / n_true[cols]) / len(t))
    tp = float(np.sum(n_cell * (n_cell - 1)) / 2)
    pp, tt = float(np.sum(n_pred * (n_pred - 1)) / 2), float(np.sum(n_true * (n_true - 1)) / 2)
    precision, recall = (tp / pp if pp else 1.0), (tp / tt if tt else 1.0)
    multi = n_true[ti] >= 2
    return {"bcubed_precision": bp, "bcubed_recall": br, "bcubed_f": _f(bp, br),
            "pairwise_precision": precision, "pairwise_recall": recall, "pairwise_f": _f(precision, recall),
            "assigned": float((~alone[multi]).mean()) if multi.any() else 1.0,
            "clusters": int(len(np.unique(p[~alone])))}


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def people_tau(emb: np.ndarray, labels: np.ndarray, lo: float, hi: float, k: int, steps: int = 11) -> tuple[float, float]:
    """``(τ, BCubed F)``: the clustering τ, among ``steps`` values from ``lo`` to ``hi``, at which the
    product's people method (Chinese Whispers on each face's ``k`` nearest within τ) best groups
    labelled photos (``labels`` unique per person across every set pooled). Ties go to the
    strictest τ.

    The calibration (``tools/calibrate.py``) passes the FAR 1e-4 and 1e-3 τ as the range: never
    looser than the strict verification τ, because a clustering that merges strangers names them
    together. Which τ in that range suits a model depends on its distances (bench/people.py: the
    first fused default peaked at its FAR 1e-3 τ, the current one well below it). The result is
    stored as the τ policy's clustering τ (:meth:`facesearch.eval.tau.TauPolicy.people`).
    """
    best = (float(hi), -1.0)
    for tau in np.linspace(lo, hi, steps):
        i, j, _ = knn_graph(emb, k, float(tau))
        f = cluster_scores(labels, chinese_whispers(len(emb), i, j))["bcubed_f"]
        if f > best[1]:
            best = (float(tau), f)
    return round(best[0], 4), round(best[1], 4)
