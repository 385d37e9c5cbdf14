"""Distances between embeddings, shared by miners, losses and evaluation.

Every distance here is "smaller = more similar", so miners and losses can swap
one for another without caring which it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Squared distances below this are treated as exactly zero. sqrt'(0) is infinite,
# so without the clamp two identical embeddings would give NaN gradients.
EPS = 1e-12


class BaseDistance:
    """A distance between rows of two embedding matrices."""

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) x (M, D) -> (N, M) matrix of distances; ``y=None`` means ``y = x``."""
        raise NotImplementedError

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N, D) x (N, D) -> (N,) distances between matching rows."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.pairwise(x, y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def safe_sqrt(sq: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """sqrt with a finite gradient everywhere: values <= eps map to exactly 0, gradient 0."""
    root = torch.sqrt(sq.clamp_min(eps))
    return torch.where(sq > eps, root, torch.zeros_like(root))


class LpDistance(BaseDistance):
    """Euclidean (L2) distance. On unit vectors it lies in [0, 2]; the default everywhere."""

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        same = y is None
        y = x if same else y
        # |x|^2 + |y|^2 - 2 x.y is one matmul instead of an (N, M, D) tensor of differences.
        sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
        if same:
            # The expansion leaves ~1e-7 of rounding on the diagonal; it is exactly 0.
            sq = sq.masked_fill(torch.eye(len(x), dtype=torch.bool, device=x.device), 0.0)
        return safe_sqrt(sq.clamp_min(0.0))

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return safe_sqrt(((x - y) ** 2).sum(-1))


class CosineDistance(BaseDistance):
    """``1 - cos(x, y)``, in [0, 2]. Normalises its inputs, so scale does not matter."""

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        xn = F.normalize(x, dim=-1)
        yn = xn if y is None else F.normalize(y, dim=-1)
        return 1.0 - xn @ yn.T

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)
