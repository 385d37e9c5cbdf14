"""Groups from pair edges: connected components and chain-free near-duplicate groups (numpy only)."""

from __future__ import annotations

import numpy as np


def connected_components(ids, i, j, min_size: int = 1) -> list[list[int]]:
    """Groups of ``ids`` linked by the edges ``(i[e], j[e])`` (ids, not positions).

    Vectorised union-find: hook each edge's larger root under its smaller one,
    then pointer-jump until every node points at its root; repeat until no edge
    crosses two components. Each component is sorted; components come largest
    first, then by smallest id. ``min_size=2`` drops singletons.
    """
    uniq = np.unique(np.asarray(ids, dtype=np.int64))
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    pi, pj = np.searchsorted(uniq, i), np.searchsorted(uniq, j)
    if len(i) and (pi.max() >= len(uniq) or pj.max() >= len(uniq)
                   or not (np.array_equal(uniq[pi], i) and np.array_equal(uniq[pj], j))):
        raise ValueError("edges name ids that are not in `ids`")
    parent = np.arange(len(uniq), dtype=np.int64)
    while True:
        ri, rj = parent[pi], parent[pj]
        cross = ri != rj
        if not cross.any():
            break
        lo, hi = np.minimum(ri[cross], rj[cross]), np.maximum(ri[cross], rj[cross])
        np.minimum.at(parent, hi, lo)  # roots only: parent[x] <= x, so no cycles
        while True:  # pointer jumping: O(log depth) passes
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return _group(uniq, parent, min_size)


def _group(uniq: np.ndarray, root: np.ndarray, min_size: int) -> list[list[int]]:
    order = np.lexsort((uniq, root))
    bounds = np.flatnonzero(np.diff(root[order])) + 1
    comps = [c.tolist() for c in np.split(uniq[order], bounds) if len(c) >= min_size] if len(uniq) else []
    comps.sort(key=lambda c: (-len(c), c[0]))
    return comps


def keeper_groups(i, j, rank, min_size: int = 2) -> list[list[int]]:
    """Near-duplicate groups without chaining: complete linkage over the edges ``(i[e], j[e])``.

    The edges are the pairs within τ. In each connected component the best-ranked
    id not yet grouped (``rank[id]``: lower is better, the would-be keeper) seeds a
    group; its neighbours join nearest-ranked first, each only if it has an edge to
    *every* member already in, so every member is within τ of every other (diameter
    ≤ τ) instead of a chain of look-alikes. Repeat until the component is used up.
    Groups are keeper first; smaller than ``min_size`` are dropped.
    """
    adj: dict[int, set[int]] = {}
    for a, b in zip(np.asarray(i, np.int64).tolist(), np.asarray(j, np.int64).tolist()):
        if a != b:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
    groups = []
    for comp in connected_components(list(adj), i, j, min_size=2) if adj else []:
        left = sorted(comp, key=lambda x: (rank[x], x))
        while left:
            group = _grow(left[0], left, adj, rank)
            if len(group) >= min_size:
                groups.append(group)
            left = [x for x in left if x not in set(group)]
    return groups


def _grow(seed: int, left: list[int], adj: dict[int, set[int]], rank) -> list[int]:
    group, members = [seed], {seed}
    common = adj[seed] & set(left)  # ids linked to every member so far
    for x in sorted(common, key=lambda y: (rank[y], y)):
        if x in common:
            group.append(x)
            members.add(x)
            common &= adj[x]
    return group
