"""Siamese training: P×K batches, a miner and a loss; validation on held-out people.

The classic recipe is the default (Adam, lr 1e-3, batch 32, 20 epochs). Each
epoch is validated on identities never seen in training (ROC AUC and best τ);
the best epoch is kept as weights (atomically), and a resume checkpoint after
every epoch lets ``--resume`` continue an interrupted run.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from PIL import Image
from torch.utils.data import DataLoader

from facesearch.faces.detect import create_detector
from facesearch.models.embed import select_device
from facesearch.core.errors import DataError
from facesearch.faces.chips import largest_face
from facesearch.learn.losses import make_loss
from facesearch.eval.protocol import protocol_distances
from facesearch.eval.tau import calibrate
from facesearch.eval.metrics import roc_auc
from facesearch.models.factory import Embedder, create_embedder
from facesearch.models.preprocess import preprocess_one
from facesearch.models.weights import load_weights, save_weights
from facesearch.learn.augment import make_augment
from facesearch.learn.checkpoint import load_checkpoint, save_checkpoint
from facesearch.photos.folders import IdentityFolder, split_by_identity
from facesearch.learn.data import ImageDataset, PKSampler

log = logging.getLogger(__name__)
EventFn = Callable[[str, dict], None]


@dataclass
class TrainOptions:
    data: list[str]
    out: str = "weights/model"
    backbone: str = "mobilenetv3_small_100"
    loss: str = "contrastive"
    margin: float | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    embedding_dim: int = 128
    input_size: int = 112
    val_fraction: float = 0.2
    seed: int = 0
    resume: bool = False
    steps_per_epoch: int | None = None
    device: str = "auto"
    init: str | None = None
    k: int = 4  # images per person in a batch
    max_val_images: int = 1000
    workers: int = 0
    detector: str = "none"  # "auto" aligns training faces exactly as indexing does (cached per image)


def train(opts: TrainOptions, on_event: EventFn | None = None) -> dict:
    """Train and return a JSON-ready summary (history, best epoch, weights path)."""
    emit = on_event or (lambda e, d: None)
    seed_everything(opts.seed)
    ds = IdentityFolder.from_roots(opts.data) if len(opts.data) > 1 else IdentityFolder(opts.data[0])
    train_idx, val_idx = _split(ds, opts)
    device = select_device(opts.device)
    model = _build_model(opts)
    align = ChipAligner(opts.detector, model.config.align)
    loss, _ = make_loss(opts.loss, opts.margin, miner=None if opts.loss == "triplet" else "balanced")
    both = nn.ModuleDict({"model": model, "loss": loss}).to(device)
    optim = torch.optim.Adam(both.parameters(), lr=opts.lr)
    stem = Path(opts.out)
    state = load_checkpoint(stem, both, optim) if opts.resume else None
    history, best_auc, start = (state["history"], state["best_auc"], state["epoch"] + 1) if state else ([], -1.0, 0)
    for epoch in range(start, opts.epochs):
        t0 = time.perf_counter()
        seed_everything(opts.seed + epoch)  # per-epoch seeds keep resumed runs identical to unbroken ones
        train_tf = _train_transform(model, opts.seed + epoch, align)
        mean_loss = _train_epoch(both, optim, ds, train_idx, train_tf, opts, epoch, device, emit)
        auc, cal = validate(model, ds, val_idx, device, opts.max_val_images, opts.seed, align)
        is_best = auc > best_auc
        row = {"epoch": epoch + 1, "loss": mean_loss, "val_auc": auc, "val_tau": cal.get("tau"), "best": is_best,
               "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        if is_best:
            best_auc = auc
            _save_best(model, stem, opts, ds, row, cal)
        save_checkpoint(stem, both, optim, {"epoch": epoch, "history": history, "best_auc": best_auc})
        emit("epoch_end", {**row, "epochs": opts.epochs})
    best = max(history, key=lambda r: r["val_auc"]) if history else None
    return {"weights": str(stem) + ".json", "best_epoch": best and best["epoch"], "best_val_auc": best_auc,
            "history": history, "n_train_people": _n_people(ds, train_idx), "n_val_people": _n_people(ds, val_idx),
            "n_images": len(ds.samples), "bad_files": ds.bad_files, "options": asdict(opts)}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _split(ds: IdentityFolder, opts: TrainOptions) -> tuple[np.ndarray, np.ndarray]:
    train_idx, val_idx = split_by_identity(ds, opts.val_fraction, opts.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise DataError("not enough people to hold some out for validation",
                        hint="use at least 3 people with 2+ photos each, or lower --val-fraction")
    return np.asarray(train_idx), np.asarray(val_idx)


def _build_model(opts: TrainOptions) -> Embedder:
    if opts.init:
        return load_weights(opts.init).train()
    return create_embedder(opts.backbone, opts.embedding_dim, opts.input_size)


class ChipAligner:
    """PIL photo → the aligned face chip indexing would embed (identity when detector is "none").

    Detection is the slow part, so each distinct image is aligned once and cached.
    """

    def __init__(self, detector: str, align: str):
        self.detector = None if detector == "none" else create_detector(detector, align=align)
        self.align = align
        self.cache: dict[bytes, Image.Image] = {}

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.detector is None:
            return img
        key = hashlib.blake2b(img.tobytes(), digest_size=16).digest()
        if key not in self.cache:
            self.cache[key] = Image.fromarray(largest_face(np.asarray(img), self.detector, self.align).chip)
        return self.cache[key]


def _train_transform(model: Embedder, seed: int, align: ChipAligner):
    augment = make_augment(model.config.input_size, seed=seed)
    config = model.config
    return lambda img: preprocess_one(augment(align(img)), config)


def _train_epoch(both, optim, ds, train_idx, transform, opts, epoch, device, emit) -> float:
    model, loss_fn = both["model"], both["loss"]
    labels = np.array([ds.samples[i][1] for i in train_idx])
    sampler = PKSampler(labels, p=max(2, opts.batch_size // opts.k), k=opts.k, seed=opts.seed + epoch)
    steps = len(sampler) if opts.steps_per_epoch is None else min(len(sampler), opts.steps_per_epoch)
    loader = DataLoader(ImageDataset([ds.samples[i] for i in train_idx], transform, bad=ds.bad),
                        batch_sampler=sampler, num_workers=opts.workers)
    emit("epoch_start", {"epoch": epoch + 1, "epochs": opts.epochs, "steps": steps})
    both.train()
    losses = []
    for step, (x, y) in enumerate(loader, 1):
        loss = loss_fn(model(x.to(device)), y.to(device))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
        emit("step", {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses))})
        if step >= steps:
            break
    return round(float(np.mean(losses)), 5) if losses else float("nan")


@torch.inference_mode()
def validate(model: Embedder, ds: IdentityFolder, val_idx: np.ndarray, device, max_images: int, seed: int,
             align: ChipAligner | None = None):
    """ROC AUC, and the τ policy's calibration (:func:`facesearch.eval.tau.calibrate`), over the
    verification protocol's pairs (:mod:`facesearch.eval.protocol`) of held-out people."""
    rng = np.random.default_rng(seed)
    idx = val_idx if len(val_idx) <= max_images else np.sort(rng.choice(val_idx, max_images, replace=False))
    align = align or ChipAligner("none", model.config.align)
    data = ImageDataset([ds.samples[i] for i in idx], lambda img: preprocess_one(align(img), model.config), bad=ds.bad)
    model.eval()
    embs, labels = [], []
    for x, y in DataLoader(data, batch_size=64):
        embs.append(model(x.to(device)).cpu().numpy())
        labels.append(y.numpy())
    emb, lab = np.concatenate(embs), np.concatenate(labels)
    dist, same = protocol_distances(emb, lab, seed=seed, max_impostors=20_000)
    if same.all() or not same.any():
        return float("nan"), {}
    return round(roc_auc(dist, same), 5), calibrate(dist, same, emb=emb, labels=lab)


def _save_best(model: Embedder, stem: Path, opts: TrainOptions, ds: IdentityFolder, row: dict, cal: dict) -> None:
    # Held-out people's pairs set the τ policy (EER τ, FAR curve); tools/calibrate.py refines it on dev.
    for key, value in cal.items():
        setattr(model.config, key, value)
    model.config.recipe = {k: v for k, v in asdict(opts).items() if k not in ("resume", "device", "workers")}
    model.config.metrics = {"val_auc": row["val_auc"], "val_tau": row["val_tau"], "epoch": row["epoch"],
                            "n_images": len(ds.samples)}
    save_weights(model, stem)


def _n_people(ds: IdentityFolder, idx: np.ndarray) -> int:
    return len({ds.samples[i][1] for i in idx})
