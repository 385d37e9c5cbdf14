"""Verification report for a model on identity folders (or an explicit pairs file).

The protocol is :mod:`facesearch.eval.protocol`'s: all genuine pairs plus a seeded sample
of impostor pairs; at τ (given, or the one cross-validated over folds for
balanced accuracy) it reports accuracy, precision, recall, F1, ROC AUC, EER,
TAR at FAR 1e-2 / 1e-3 and the pair counts. Rendering (ROC plot, HTML) is the
report layer's, from what :func:`evaluate` returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from facesearch.models.embed import open_engine
from facesearch.core.errors import DataError, FacesearchError
from facesearch.eval.embedding import embed_files
from facesearch.photos.folders import IdentityFolder
from facesearch.eval.pairs import make_pairs
from facesearch.store.vectors.exact import pair_distances
from facesearch.eval.protocol import verification_report


@dataclass
class EvalOptions:
    data: list[str]
    weights: str | None = None
    pairs_file: str | None = None
    tau: float | None = None
    detector: str = "auto"
    device: str = "auto"
    batch_size: int = 64
    max_impostors: int = 50_000
    folds: int = 10
    seed: int = 0


@dataclass
class Evaluation:
    """The JSON-ready ``report``, and the scored pairs a report renders from."""

    report: dict
    dist: np.ndarray = field(repr=False)
    same: np.ndarray = field(repr=False)
    pairs: list[tuple[str, str]] = field(repr=False)


def evaluate(opts: EvalOptions, on_progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Embed every image once, score the pairs, and return the verification report."""
    # open_engine: the default weights run from their ONNX exports, so evaluate needs no torch
    engine = open_engine(opts.weights, device=opts.device, batch_size=opts.batch_size)
    paths, i, j, same = _pairs(opts)
    emb, ok, bad, _ = embed_files(paths, engine, opts.detector, on_progress)
    keep = ok[i] & ok[j]
    i, j, same = i[keep], j[keep], same[keep]
    if same.all() or not same.any():
        raise DataError("need both genuine and impostor pairs to evaluate",
                        hint="use folders of at least two people with two or more photos each")
    dist = pair_distances(emb, i, j, dtype=np.float64)
    report = verification_report(dist, same, tau=opts.tau, folds=opts.folds, seed=opts.seed)
    report.update({"model_id": engine.model_id, "n_images": len(paths), "bad_files": bad,
                   "data": [str(d) for d in opts.data], "detector": opts.detector})
    return Evaluation(report, dist, same, [(paths[a], paths[b]) for a, b in zip(i, j)])


def _pairs(opts: EvalOptions) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    if opts.pairs_file:
        return read_pairs_file(opts.pairs_file)
    ds = IdentityFolder.from_roots(opts.data) if len(opts.data) > 1 else IdentityFolder(opts.data[0])
    i, j, same = make_pairs(ds.labels, seed=opts.seed, max_impostors=opts.max_impostors)
    return [str(p) for p, _ in ds.samples], i, j, same


def read_pairs_file(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``path1 path2 same(0/1)`` lines (relative paths are relative to the file)."""
    base = Path(path).parent
    index: dict[str, int] = {}
    i, j, same = [], [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 3 or parts[2] not in ("0", "1"):
            raise FacesearchError(f"{path}:{n}: expected 'path1 path2 same(0/1)'", hint="one pair per line")
        a, b = (str(base / p) if not os.path.isabs(p) else p for p in parts[:2])
        i.append(index.setdefault(a, len(index)))
        j.append(index.setdefault(b, len(index)))
        same.append(parts[2] == "1")
    return list(index), np.array(i, np.int64), np.array(j, np.int64), np.array(same, bool)
