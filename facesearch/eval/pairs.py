"""The verification protocol's pairs: which photo pairs are scored (their distances: ``store.vectors.exact.pair_distances``).

Every caller (training's validation, ``evaluate``, calibration, the benchmarks)
draws pairs here, so their numbers are comparable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def make_pairs(labels: Sequence | np.ndarray, n_pairs: int | None = None, seed: int = 0,
               max_impostors: int = 50_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The verification protocol: all genuine pairs plus a seeded sample of impostor pairs.

    Returns index arrays ``i < j`` and a bool ``same``; genuine pairs come first.
    ``n_pairs`` caps the genuine pairs (a seeded sample; None keeps all, which is
    sum C(n_person, 2)); ``max_impostors`` caps the impostor pairs (all of them
    when there are fewer). Impostors are sampled uniformly without replacement.
    Vectorised: never builds the N x N pair matrix.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    end = np.repeat(starts + counts, counts)  # end of each sorted sample's person block
    pos = np.arange(len(labels))
    # Pairs (s, t) in sorted order with s < t: genuine partners of s are s+1..end-1,
    # impostor partners are end..N-1 (later people), so every pair is counted once.
    gi, gj = _enumerate_pairs(end - pos - 1, pos + 1, n_pairs, rng)
    ii, ij = _enumerate_pairs(len(labels) - end, end, max_impostors, rng)
    i = order[np.concatenate([gi, ii])]
    j = order[np.concatenate([gj, ij])]
    i, j = np.minimum(i, j), np.maximum(i, j)
    same = np.zeros(len(i), dtype=bool)
    same[: len(gi)] = True
    return i.astype(np.int64), j.astype(np.int64), same


def _enumerate_pairs(n_partners: np.ndarray, first_partner: np.ndarray, cap: int | None,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(s, first_partner[s] + o)`` for o < n_partners[s]; a uniform sample of ``cap`` if more."""
    cum = np.concatenate([[0], np.cumsum(n_partners)])
    total = int(cum[-1])
    if cap is None or cap >= total:
        ks = np.arange(total, dtype=np.int64)
    else:
        ks = np.sort(rng.choice(total, size=max(0, int(cap)), replace=False))
    s = np.searchsorted(cum, ks, side="right") - 1
    return s, first_partner[s] + (ks - cum[s])

