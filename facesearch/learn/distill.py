"""Fine-tune the last blocks of a pretrained embedder, held to its own original outputs.

The shipped model is a port of a strong pretrained network; fine-tuning all of
it on ~500 people on a CPU would be slow and would drift (batch-hard triplets
alone lowered dev AUC). So the early blocks stay frozen, their output is
computed once per augmented view and cached (a *feature bank*), and only the
tail is trained, with three terms:

* an identity loss (triplet / contrastive, any miner) on labelled faces;
* teacher matching, ``1 − cos(student, original)`` for every face, labelled or not;
* a relational term keeping the batch's pair distances near the original's.

The teacher is the untouched model itself: its embedding of each view is stored
in the bank, so training never runs the full network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from facesearch.learn.losses import RelationalDistanceLoss, TeacherMatchLoss, make_loss
from facesearch.models.factory import Embedder
from facesearch.models.preprocess import preprocess
from facesearch.learn.augment import make_augment


class TailNet(nn.Module):
    """Blocks ``cut:`` of an embedder's trunk plus its head, on cached block inputs.

    Works for trunks that expose ``forward_stem``, a ``blocks`` Sequential and
    ``forward_head`` (``dlib_resnet29``). The modules are shared with ``model``,
    so training the tail trains the model.
    """

    def __init__(self, model: Embedder, cut: int):
        super().__init__()
        trunk = model.trunk
        if not all(hasattr(trunk, a) for a in ("forward_stem", "blocks", "forward_head")):
            raise ValueError(f"{model.config.backbone} has no stem/blocks/head split to fine-tune")
        if not 0 <= cut < len(trunk.blocks):
            raise ValueError(f"cut must be in [0, {len(trunk.blocks)}), got {cut}")
        self.model, self.cut = model, cut
        self.tail = trunk.blocks[cut:]

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part: normalised pixels -> input of block ``cut``."""
        trunk = self.model.trunk
        return trunk.blocks[: self.cut](trunk.forward_stem(x))

    def forward_raw(self, feats: torch.Tensor) -> torch.Tensor:
        """The embedding before L2 normalisation (dlib compares these raw descriptors)."""
        return self.model.head(self.model.trunk.forward_head(self.tail(feats))).float()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_raw(feats), dim=1)

    def trainable(self) -> list[nn.Parameter]:
        return list(self.tail.parameters()) + list(self.model.trunk.fc.parameters()) \
            + list(self.model.head.parameters())


@dataclass
class FeatureBank:
    """Cached block inputs (``feats``: views x N x C x H x W, float16) and the
    teacher's raw (unnormalised) embeddings of the same views (``teacher``: views x N x D)."""

    feats: torch.Tensor
    teacher: torch.Tensor

    @property
    def views(self) -> int:
        return self.feats.shape[0]


def view_augmenter(view: int, size: int, seed: int) -> Callable[[Image.Image], Image.Image] | None:
    """None for view 0 (the chips as they are); a seeded training augmentation otherwise.
    One augmenter serves a whole view, so the view does not depend on the batch size."""
    return None if view == 0 else make_augment(size, seed=seed * 1000 + view)


@torch.no_grad()
def build_bank(tail: TailNet, chips: np.ndarray, views: int = 1, seed: int = 0, batch: int = 128) -> FeatureBank:
    """Run the frozen prefix once per view of every chip; the teacher is the
    (still untouched) tail on the same stored float16 features."""
    feats = torch.stack([prefix_features(tail, chips, view_augmenter(v, chips.shape[1], seed), batch)
                         for v in range(views)])
    return FeatureBank(feats, teacher_outputs(tail, feats))


@torch.no_grad()
def mirrored_teacher(tail: TailNet, chips: np.ndarray, batch: int = 128) -> torch.Tensor:
    """Raw teacher embeddings of the left-right mirrored chips (N x D), for a flip-ensemble
    target: averaging a face with its mirror image is a classic test-time boost, and
    distilling it into the student gets the gain at the cost of one pass."""
    return teacher_outputs(tail, prefix_features(tail, chips[:, :, ::-1], None, batch)[None])[0]


@torch.no_grad()
def prefix_features(tail: TailNet, chips: np.ndarray, aug: Callable | None, batch: int = 128) -> torch.Tensor:
    """Block-``cut`` inputs (N x C x H x W, float16) of ``chips``, each augmented by ``aug`` if given."""
    tail.model.eval()
    out = []
    for s in range(0, len(chips), batch):
        images = [Image.fromarray(np.ascontiguousarray(c)) for c in chips[s:s + batch]]
        x = preprocess([aug(im) for im in images] if aug else images, tail.model.config)
        out.append(tail.prefix(x).half())
    return torch.cat(out)


def flip_ensemble(teacher: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    """The target for every view of a face: the mean of its plain (view 0) and mirrored raw
    teacher embeddings (views x N x D)."""
    return ((teacher[0] + mirrored) / 2).expand_as(teacher).contiguous()


@torch.no_grad()
def teacher_outputs(tail: TailNet, feats: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Raw embeddings of every cached view (views x N x D), by the tail as it is now."""
    tail.eval()
    flat = feats.reshape(-1, *feats.shape[2:])
    out = torch.cat([tail.forward_raw(flat[s:s + batch].float()) for s in range(0, len(flat), batch)])
    return out.reshape(*feats.shape[:2], -1)


@dataclass
class DistillOptions:
    steps: int = 2000
    lr: float = 1e-4
    weight_decay: float = 1e-4
    p: int = 32  # identities per batch
    k: int = 4  # faces per identity
    unlabelled: int = 64  # extra unlabelled faces per batch (teacher terms only)
    id_power: float = 0.0  # draw people with probability ∝ photos**id_power (0 = uniform)
    loss: str = "triplet"
    margin: float | None = None
    miner: str | None = None
    w_identity: float = 1.0
    w_teacher: float = 1.0
    w_relational: float = 1.0
    relational: str = "unit"  # match the teacher's distances between unit ("unit") or raw ("raw") embeddings
    seed: int = 0
    eval_every: int = 250


class BatchSampler:
    """P identities x K faces from the labelled pool plus U unlabelled faces; a random view each."""

    def __init__(self, labels: np.ndarray, views: int, opts: DistillOptions):
        self.rng = np.random.default_rng(opts.seed)
        self.views, self.opts = views, opts
        ids, counts = np.unique(labels[labels >= 0], return_counts=True)
        self.ids = ids[counts >= 2]
        # Uniform draws let sets of many people with few tiny photos dominate; a power > 0
        # leans towards people with many (e.g. in-the-wild) photos.
        w = counts[counts >= 2].astype(float) ** opts.id_power
        self.p_ids = w / w.sum()
        self.members = {int(i): np.flatnonzero(labels == i) for i in self.ids}
        self.pool = np.flatnonzero(labels < 0)

    def __call__(self) -> tuple[np.ndarray, np.ndarray, int]:
        """``(rows, views, n_labelled)``; the labelled rows come first."""
        o = self.opts
        people = self.rng.choice(self.ids, size=min(o.p, len(self.ids)), replace=False, p=self.p_ids)
        rows = [self.rng.choice(self.members[int(i)], o.k, replace=len(self.members[int(i)]) < o.k) for i in people]
        rows = np.concatenate(rows)
        n_lab = len(rows)
        if len(self.pool) and o.unlabelled:
            rows = np.concatenate([rows, self.rng.choice(self.pool, o.unlabelled, replace=False)])
        return rows, self.rng.integers(0, self.views, len(rows)), n_lab


def distill(tail: TailNet, bank: FeatureBank, labels: np.ndarray, opts: DistillOptions,
            evaluate: Callable[[TailNet], dict] | None = None,
            on_event: Callable[[str, dict], None] | None = None) -> list[dict]:
    """Train ``tail`` on the bank; ``labels`` is -1 for unlabelled faces.

    Every ``eval_every`` steps ``evaluate(tail)`` (e.g. dev AUCs) is logged
    through ``on_event``. Returns the history rows.
    """
    torch.manual_seed(opts.seed)
    identity, _ = make_loss(opts.loss, opts.margin, opts.miner)
    teacher_match, relational = TeacherMatchLoss(), RelationalDistanceLoss()
    optim = torch.optim.AdamW(tail.trainable(), lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, opts.lr, total_steps=opts.steps, pct_start=0.1)
    sample = BatchSampler(labels, bank.views, opts)
    target = relational_target(bank, opts.relational)
    history, t0, run = [], time.perf_counter(), np.zeros(4)
    for step in range(1, opts.steps + 1):
        tail.train()
        rows, views, n_lab = sample()
        s = tail(bank.feats[views, rows].float())
        t = bank.teacher[views, rows]
        parts = torch.stack([identity(s[:n_lab], torch.as_tensor(labels[rows[:n_lab]])),
                             teacher_match(s, t), relational(s, target(t))])
        loss = opts.w_identity * parts[0] + opts.w_teacher * parts[1] + opts.w_relational * parts[2]
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        run += np.array([float(loss.detach()), *parts.detach().tolist()])
        if step % opts.eval_every == 0 or step == opts.steps:
            row = _row(step, run / opts.eval_every, t0, tail, evaluate)
            history.append(row)
            run[:] = 0
            if on_event:
                on_event("eval", row)
    return history


def relational_target(bank: FeatureBank, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the relational term's teacher distances are measured on.

    ``unit``: the teacher's unit embeddings. ``raw``: its raw descriptors divided by
    their mean norm over the bank, so their distances are on the unit sphere's scale;
    dlib compares raw descriptors, and their norms carry some of its accuracy.
    """
    if mode == "unit":
        return lambda t: F.normalize(t, dim=1)
    if mode == "raw":
        scale = float(bank.teacher.norm(dim=-1).mean())
        return lambda t: t / scale
    raise ValueError(f"relational must be 'unit' or 'raw', got {mode!r}")


def _row(step: int, means: np.ndarray, t0: float, tail: TailNet, evaluate) -> dict:
    row = {"step": step, "loss": means[0], "identity": means[1], "teacher": means[2], "relational": means[3],
           "seconds": round(time.perf_counter() - t0, 1)}
    if evaluate is not None:
        tail.eval()
        with torch.no_grad():
            row.update(evaluate(tail))
    return {k: (round(float(v), 6) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}


@torch.no_grad()
def embed_bank(tail: TailNet, feats: torch.Tensor, batch: int = 512) -> np.ndarray:
    """Unit embeddings of cached block inputs (one view: N x C x H x W)."""
    tail.eval()
    return torch.cat([tail(feats[s:s + batch].float()) for s in range(0, len(feats), batch)]).numpy()
