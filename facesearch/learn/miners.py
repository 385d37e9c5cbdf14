"""Miners: pick which pairs or triplets of a labelled batch a loss should see.

A miner is called as ``miner(embeddings, labels)`` and returns index tensors
(like pytorch-metric-learning):

- pair miners return ``(a1, p, a2, n)``: positive pairs ``(a1[i], p[i])`` share a
  label, negative pairs ``(a2[j], n[j])`` do not;
- triplet miners return ``(a, p, n)``: ``a`` and ``p`` share a label, ``n`` does not.

Mining runs without gradients; the loss recomputes the distances it needs.
"""

from __future__ import annotations

import torch

from facesearch.learn.distances import BaseDistance, LpDistance

Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise ValueError unless ``embeddings`` is (N, D) and ``labels`` is (N,)."""
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or len(labels) != len(embeddings):
        raise ValueError(
            f"labels must be (N,) with N={len(embeddings)}, got shape {tuple(labels.shape)}"
        )


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, N) boolean masks: ``pos[i, j]`` same label and i != j; ``neg[i, j]`` different label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def all_pairs(labels: torch.Tensor) -> Pairs:
    """Every unordered pair once (i < j), split into positives and negatives."""
    pos, neg = label_masks(labels)
    upper = torch.ones_like(pos).triu(1)
    a1, p = torch.nonzero(pos & upper, as_tuple=True)
    a2, n = torch.nonzero(neg & upper, as_tuple=True)
    return a1, p, a2, n


def all_triplets(labels: torch.Tensor) -> Triplets:
    """Every (a, p, n) with label[a] == label[p], a != p, label[n] != label[a]."""
    pos, neg = label_masks(labels)
    a, p = torch.nonzero(pos, as_tuple=True)
    # One row per positive pair instead of an (N, N, N) mask: P*N, with P ~ N*(K-1).
    row, n = torch.nonzero(neg[a], as_tuple=True)
    return a[row], p[row], n


class BaseMiner:
    """Callable ``miner(embeddings, labels) -> indices``. Subclasses implement ``mine``."""

    #: "pairs" or "triplets": the shape of the indices it returns.
    kind = "pairs"

    def __init__(self, distance: BaseDistance | None = None):
        self.distance = distance or LpDistance()

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor):
        check_batch(embeddings, labels)
        with torch.no_grad():
            return self.mine(embeddings.detach(), labels)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(distance={self.distance!r})"


class AllPairsMiner(BaseMiner):
    """All positive and all negative pairs, each unordered pair once."""

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        return all_pairs(labels)


class BalancedPairMiner(BaseMiner):
    """All positive pairs plus as many negative pairs (or all negatives, if fewer).

    ``negatives="hard"`` keeps the closest negative pairs; ``"random"`` samples them
    without replacement from a generator seeded once, so a run is reproducible
    but each batch gets a fresh draw. Balancing matters for a probability-style
    loss (BCE): otherwise impostor pairs outnumber genuine ones ~K-to-1.
    """

    def __init__(self, seed: int = 0, negatives: str = "random", distance: BaseDistance | None = None):
        super().__init__(distance)
        if negatives not in ("hard", "random"):
            raise ValueError(f"negatives must be 'hard' or 'random', got {negatives!r}")
        self.negatives = negatives
        self.generator = torch.Generator().manual_seed(seed)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        a1, p, a2, n = all_pairs(labels)
        k = min(len(a1), len(a2))
        if self.negatives == "hard":
            d = self.distance.paired(embeddings[a2], embeddings[n])
            keep = torch.argsort(d, stable=True)[:k]
        else:
            keep = torch.randperm(len(a2), generator=self.generator)[:k].to(a2.device)
        return a1, p, a2[keep], n[keep]


class AllTripletsMiner(BaseMiner):
    """Every valid triplet: N·(K−1)·(N−K) of them for N images of K per identity."""

    kind = "triplets"

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        return all_triplets(labels)


class BatchHardMiner(BaseMiner):
    """Batch-hard (Hermans et al. 2017): per anchor, its farthest positive and nearest negative.

    Anchors with no positive or no negative in the batch are skipped. Ties go to
    the lowest index.
    """

    kind = "triplets"

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        pos, neg = label_masks(labels)
        d = self.distance.pairwise(embeddings)
        inf = torch.full_like(d, float("inf"))
        p = torch.where(pos, d, -inf).argmax(1)
        n = torch.where(neg, d, inf).argmin(1)
        a = torch.nonzero(pos.any(1) & neg.any(1), as_tuple=True)[0]
        return a, p[a], n[a]


class SemiHardMiner(BaseMiner):
    """Semi-hard triplets (FaceNet): ``d(a,p) < d(a,n) < d(a,p) + margin``.

    Returns every semi-hard triplet, for every ordered positive pair (a, p). A
    pair (a, p) with no semi-hard negative is handled by ``fallback``:

    - ``"hard"`` (default): use its *mildest hard* negative, the one with the
      largest ``d(a,n) <= d(a,p)`` (as TensorFlow's ``triplet_semihard_loss``).
      This keeps the training signal of violating pairs without the very
      hardest negatives, which FaceNet found collapse early training. If every
      negative is farther than ``d(a,p) + margin`` the pair is already satisfied
      (its loss would be 0), so it is skipped.
    - ``"skip"``: drop the pair.
    """

    kind = "triplets"

    def __init__(self, margin: float = 0.2, fallback: str = "hard", distance: BaseDistance | None = None):
        super().__init__(distance)
        if fallback not in ("hard", "skip"):
            raise ValueError(f"fallback must be 'hard' or 'skip', got {fallback!r}")
        self.margin = float(margin)
        self.fallback = fallback

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        pos, neg = label_masks(labels)
        d = self.distance.pairwise(embeddings)
        a, p = torch.nonzero(pos, as_tuple=True)  # one row per ordered positive pair
        d_ap, d_an, negs = d[a, p][:, None], d[a], neg[a]  # (P, 1), (P, N), (P, N)
        semi = negs & (d_an > d_ap) & (d_an < d_ap + self.margin)
        row, n = torch.nonzero(semi, as_tuple=True)
        found = (a[row], p[row], n)
        if self.fallback == "skip":
            return found
        hard = negs & (d_an <= d_ap)
        rows = torch.nonzero(hard.any(1) & ~semi.any(1), as_tuple=True)[0]
        mildest = torch.where(hard[rows], d_an[rows], torch.full_like(d_an[rows], -float("inf"))).argmax(1)
        return tuple(torch.cat([x, y]) for x, y in zip(found, (a[rows], p[rows], mildest)))
