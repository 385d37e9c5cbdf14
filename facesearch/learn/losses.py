"""Metric-learning losses built from swappable parts, like pytorch-metric-learning.

A loss = a distance (:mod:`facesearch.learn.distances`) + a reducer (below) + optionally
a miner (:mod:`facesearch.learn.miners`) that picks which pairs/triplets it sees.

Two ways to call a loss:

- ``loss(embeddings, labels, indices_tuple=None)``: a labelled batch. Without
  ``indices_tuple`` it uses ``loss.miner`` if set, else all pairs / all triplets.
- ``loss.forward_pairs(e1, e2, y)``: the classic Siamese twin setting, explicit
  pairs with ``y = 1`` for the same person (pair losses only).

Label convention everywhere: **y = 1 means same person, y = 0 different.** Some
tutorials (and Hadsell et al. 2006) flip it for the contrastive loss; we do not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facesearch.learn.distances import BaseDistance, LpDistance
from facesearch.core.errors import FacesearchError
from facesearch.learn.miners import (
    AllPairsMiner,
    AllTripletsMiner,
    BalancedPairMiner,
    BaseMiner,
    BatchHardMiner,
    SemiHardMiner,
    all_pairs,
    all_triplets,
    check_batch,
)

# --------------------------------------------------------------------- reducers


class BaseReducer:
    """Turns a vector of per-pair / per-triplet losses into one scalar.

    An empty vector (a miner found nothing) reduces to a 0 that is still part of
    the autograd graph, so ``backward()`` works and changes nothing.
    """

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        if losses.numel() == 0:
            return losses.sum()
        return self.reduce(losses)

    def reduce(self, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MeanReducer(BaseReducer):
    """Mean over all terms."""

    def reduce(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.mean()


class SumReducer(BaseReducer):
    """Sum over all terms."""

    def reduce(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.sum()


class AvgNonZeroReducer(BaseReducer):
    """Mean over the terms > 0 only. Satisfied triplets (loss 0) would otherwise
    dilute the gradient more and more as training succeeds."""

    def reduce(self, losses: torch.Tensor) -> torch.Tensor:
        active = losses > 0
        if not bool(active.any()):
            return losses.sum() * 0.0
        return losses[active].mean()


# ----------------------------------------------------------------------- losses


class MetricLoss(nn.Module):
    """Shared plumbing: distance, reducer, optional miner, input checks."""

    def __init__(self, distance: BaseDistance | None, reducer: BaseReducer | None, miner: BaseMiner | None):
        super().__init__()
        self.distance = distance or LpDistance()
        self.reducer = reducer or MeanReducer()
        self.miner = miner

    def indices(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple):
        """The given indices, else the loss's miner, else ``None`` (= use everything)."""
        if indices_tuple is not None:
            return indices_tuple
        if self.miner is not None:
            return self.miner(embeddings, labels)
        return None


class PairLoss(MetricLoss):
    """A loss over pairs: subclasses define ``per_pair(d, y)``."""

    def per_pair(self, d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple=None) -> torch.Tensor:
        """Loss over the pairs of a labelled batch. Triplet indices ``(a, p, n)`` are
        read as the pairs ``(a, p)`` and ``(a, n)``."""
        check_batch(embeddings, labels)
        idx = self.indices(embeddings, labels, indices_tuple)
        a1, p, a2, n = all_pairs(labels) if idx is None else to_pairs(idx)
        dist = self.distance.pairwise(embeddings)
        d = torch.cat([dist[a1, p], dist[a2, n]])
        y = torch.cat([torch.ones_like(a1), torch.zeros_like(a2)]).to(d.dtype)
        return self.reducer(self.per_pair(d, y))

    def forward_pairs(self, e1: torch.Tensor, e2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss over explicit pairs ``(e1[i], e2[i])``; ``y[i] = 1`` if same person."""
        check_pairs(e1, e2, y)
        d = self.distance.paired(e1, e2)
        return self.reducer(self.per_pair(d, y.to(d.dtype)))


class ContrastiveLoss(PairLoss):
    """``L = y·d² + (1 − y)·max(0, m − d)²`` with y = 1 for the same person.

    Genuine pairs are pulled together; impostor pairs are pushed apart until
    they are ``margin`` away, then ignored. With unit embeddings d ∈ [0, 2], so
    the default margin 1.0 asks impostors to be at least 60° apart.
    """

    def __init__(self, margin: float = 1.0, distance=None, reducer=None, miner=None):
        super().__init__(distance, reducer, miner)
        self.margin = float(margin)

    def per_pair(self, d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y * d.pow(2) + (1.0 - y) * F.relu(self.margin - d).pow(2)


class DistanceBCELoss(PairLoss):
    """Binary cross-entropy on a learned calibration of the distance.

    ``p_same = σ(w·d + b)`` with learnable scalars ``w`` and ``b``; BCE against
    y (1 = same). ``w`` starts negative so farther means less likely the same;
    the defaults put the 50 % point at ``d = -b/w = 1.0``. The trainer must give
    this module's parameters to the optimiser.
    """

    def __init__(self, init_w: float = -5.0, init_b: float = 5.0, distance=None, reducer=None, miner=None):
        super().__init__(distance, reducer, miner)
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def logits(self, d: torch.Tensor) -> torch.Tensor:
        return self.w.to(d.dtype) * d + self.b.to(d.dtype)

    def probability(self, d: torch.Tensor) -> torch.Tensor:
        """Calibrated probability that a pair at distance ``d`` is the same person."""
        return torch.sigmoid(self.logits(d))

    def threshold(self) -> float:
        """The distance where ``p_same = 0.5``."""
        return float((-self.b / self.w).detach())

    def per_pair(self, d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The logits form is the numerically stable BCE (no log(0) at saturation).
        return F.binary_cross_entropy_with_logits(self.logits(d), y, reduction="none")


class TripletMarginLoss(MetricLoss):
    """``max(0, d(a,p) − d(a,n) + margin)`` per triplet; default reducer averages
    the non-zero terms."""

    def __init__(self, margin: float = 0.2, distance=None, reducer=None, miner=None):
        super().__init__(distance, reducer or AvgNonZeroReducer(), miner)
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple=None) -> torch.Tensor:
        """Loss over the triplets of a labelled batch (all of them if nothing is mined)."""
        check_batch(embeddings, labels)
        idx = self.indices(embeddings, labels, indices_tuple)
        a, p, n = all_triplets(labels) if idx is None else idx_triplets(idx)
        dist = self.distance.pairwise(embeddings)
        return self.reducer(F.relu(dist[a, p] - dist[a, n] + self.margin))

    def forward_triplets(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Loss over explicit triplets given as three (N, D) tensors."""
        if anchor.dim() != 2 or not anchor.shape == positive.shape == negative.shape:
            raise ValueError(
                "anchor, positive and negative must all be (N, D), got "
                f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
            )
        d_ap = self.distance.paired(anchor, positive)
        d_an = self.distance.paired(anchor, negative)
        return self.reducer(F.relu(d_ap - d_an + self.margin))

    def forward_pairs(self, e1, e2, y):
        raise TypeError(
            "TripletMarginLoss needs triplets, not labelled pairs: use forward_triplets(a, p, n) "
            "or forward(embeddings, labels)"
        )


# ------------------------------------------------------------ distillation losses


class TeacherMatchLoss(nn.Module):
    """``1 − cos(s_i, t_i)`` per sample: the student's embedding points where the
    teacher's does (both are compared by direction, so norms do not matter)."""

    def __init__(self, reducer: BaseReducer | None = None):
        super().__init__()
        self.reducer = reducer or MeanReducer()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        check_pairs(student, teacher, torch.zeros(len(student)))
        return self.reducer(1.0 - F.cosine_similarity(student, teacher.to(student.dtype), dim=1))


class RelationalDistanceLoss(nn.Module):
    """``(d_s(i,j) − d_t(i,j))²`` over all pairs i < j of a batch: the student keeps
    the teacher's pair distances (relational knowledge distillation, Park et al. 2019),
    which is what verification thresholds and the index actually see."""

    def __init__(self, distance: BaseDistance | None = None, reducer: BaseReducer | None = None):
        super().__init__()
        self.distance = distance or LpDistance()
        self.reducer = reducer or MeanReducer()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        check_pairs(student, teacher, torch.zeros(len(student)))
        i, j = torch.triu_indices(len(student), len(student), offset=1, device=student.device)
        d_s = self.distance.pairwise(student)[i, j]
        d_t = self.distance.pairwise(teacher.to(student.dtype))[i, j].detach()
        return self.reducer((d_s - d_t) ** 2)


# ---------------------------------------------------------------------- helpers


def to_pairs(indices_tuple) -> tuple[torch.Tensor, ...]:
    """Pair indices ``(a1, p, a2, n)`` from pair or triplet indices."""
    if len(indices_tuple) == 4:
        return tuple(indices_tuple)
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        return a, p, a, n
    raise ValueError(f"indices_tuple must have 3 (triplets) or 4 (pairs) tensors, got {len(indices_tuple)}")


def idx_triplets(indices_tuple) -> tuple[torch.Tensor, ...]:
    if len(indices_tuple) != 3:
        raise ValueError(
            f"triplet loss needs triplet indices (a, p, n), got {len(indices_tuple)} tensors; "
            "use a triplet miner (BatchHardMiner, SemiHardMiner, AllTripletsMiner)"
        )
    return tuple(indices_tuple)


def check_pairs(e1: torch.Tensor, e2: torch.Tensor, y: torch.Tensor) -> None:
    if e1.dim() != 2 or e1.shape != e2.shape:
        raise ValueError(f"pair embeddings must both be (N, D), got {tuple(e1.shape)} and {tuple(e2.shape)}")
    if y.dim() != 1 or len(y) != len(e1):
        raise ValueError(f"y must be (N,) with N={len(e1)}, got shape {tuple(y.shape)}")


# ---------------------------------------------------------------------- factory

LOSSES = ("contrastive", "triplet", "bce")
MINERS = ("all_pairs", "balanced", "balanced_hard", "all_triplets", "batch_hard", "semihard")
DEFAULT_MINER = {"contrastive": "all_pairs", "triplet": "batch_hard", "bce": "balanced"}


def make_miner(name: str, margin: float = 0.2, distance: BaseDistance | None = None, seed: int = 0) -> BaseMiner:
    """A miner by name (one of ``MINERS``). ``margin`` is used by ``semihard`` only."""
    builders = {
        "all_pairs": lambda: AllPairsMiner(distance),
        "balanced": lambda: BalancedPairMiner(seed, "random", distance),
        "balanced_hard": lambda: BalancedPairMiner(seed, "hard", distance),
        "all_triplets": lambda: AllTripletsMiner(distance),
        "batch_hard": lambda: BatchHardMiner(distance),
        "semihard": lambda: SemiHardMiner(margin, "hard", distance),
    }
    if name not in builders:
        raise FacesearchError(f"unknown miner {name!r}", hint=f"choose one of: {', '.join(MINERS)}")
    return builders[name]()


def make_loss(name: str, margin: float | None = None, miner: str | BaseMiner | None = None):
    """Build ``(loss, miner)`` with sensible defaults for unit-length embeddings.

    - ``contrastive``: margin 1.0, all pairs;
    - ``triplet``: margin 0.2, batch-hard triplets, mean over non-zero terms;
    - ``bce``: learnable σ(w·d + b), all positives + as many random negatives.

    The miner is also set as ``loss.miner``, so ``loss(emb, labels)`` mines by
    itself; indices passed explicitly take precedence.
    """
    if name not in LOSSES:
        raise FacesearchError(f"unknown loss {name!r}", hint=f"choose one of: {', '.join(LOSSES)}")
    distance = LpDistance()
    if name == "contrastive":
        loss = ContrastiveLoss(1.0 if margin is None else margin, distance)
    elif name == "triplet":
        loss = TripletMarginLoss(0.2 if margin is None else margin, distance)
    else:
        loss = DistanceBCELoss(distance=distance)
    if not isinstance(miner, BaseMiner):
        miner = make_miner(miner or DEFAULT_MINER[name], getattr(loss, "margin", 0.2), distance)
    if isinstance(loss, TripletMarginLoss) and miner.kind != "triplets":
        raise FacesearchError(
            f"the triplet loss cannot use the pair miner {type(miner).__name__}",
            hint="use batch_hard, semihard or all_triplets",
        )
    loss.miner = miner
    return loss, miner
