"""Verification report for a model on identity folders (or an explicit pairs file).

All genuine pairs plus a seeded sample of impostor pairs; at τ (given, or the
one cross-validated over folds) it reports accuracy, precision, recall, F1,
ROC AUC, EER, TAR at FAR 1e-2 / 1e-3 and the pair counts, and can draw the ROC.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from facesearch.detect import create_detector
from facesearch.embed import EmbeddingEngine
from facesearch.errors import BadImageError, DataError, FacesearchError
from facesearch.faces import largest_face
from facesearch.imageio import load_array
from facesearch.metrics import plot_roc, verification_report
from facesearch.models.weights import load_weights
from facesearch.train.data import IdentityFolder, make_pairs

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    data: list[str]
    weights: str | None = None
    pairs_file: str | None = None
    tau: float | None = None
    plot: str | None = None
    html: str | None = None
    detector: str = "auto"
    device: str = "auto"
    batch_size: int = 64
    max_impostors: int = 50_000
    folds: int = 10
    seed: int = 0


def evaluate(opts: EvalOptions, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Embed every image once, score the pairs, and return the verification report."""
    model = load_weights(opts.weights)
    paths, i, j, same = _pairs(opts)
    engine = EmbeddingEngine(model, device=opts.device, batch_size=opts.batch_size)
    emb, ok, bad = embed_files(paths, engine, opts.detector, on_progress)
    keep = ok[i] & ok[j]
    i, j, same = i[keep], j[keep], same[keep]
    if same.all() or not same.any():
        raise DataError("need both genuine and impostor pairs to evaluate",
                        hint="use folders of at least two people with two or more photos each")
    dist = np.linalg.norm(emb[i] - emb[j], axis=1)
    tau = opts.tau if opts.tau is not None else None
    report = verification_report(dist, same, tau=tau, folds=opts.folds, seed=opts.seed)
    report.update({"model_id": model.model_id, "n_images": len(paths), "bad_files": bad,
                   "data": [str(d) for d in opts.data], "detector": opts.detector})
    if opts.plot:
        plot_roc(dist, same, opts.plot, tau=report["tau"], title=f"{Path(opts.data[0]).name} · {model.model_id}")
        report["plot"] = str(opts.plot)
    if opts.html:
        from facesearch.report import render_evaluate_html

        report["html"] = str(opts.html)
        render_evaluate_html(report, dist, same, opts.html, pairs=[(paths[a], paths[b]) for a, b in zip(i, j)])
    return report


def embed_files(paths: list[str], engine: EmbeddingEngine, detector: str,
                on_progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Embed the largest face of each photo (whole image if none); bad files are skipped and listed."""
    det = create_detector(detector)
    chips, ok, bad = [], np.zeros(len(paths), bool), []
    for n, p in enumerate(paths):
        try:
            crop = largest_face(load_array(p), det, engine.config.align)
            chips.append(crop.chip)
            ok[n] = True
        except BadImageError as e:
            bad.append({"path": p, "error": e.message})
        if on_progress:
            on_progress(n + 1, len(paths))
    emb = np.zeros((len(paths), engine.config.embedding_dim), np.float32)
    if chips:
        emb[ok] = engine.embed(chips)
    return emb, ok, bad


def _pairs(opts: EvalOptions) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    if opts.pairs_file:
        return read_pairs_file(opts.pairs_file)
    ds = IdentityFolder.from_roots(opts.data) if len(opts.data) > 1 else IdentityFolder(opts.data[0])
    labels = np.array([lab for _, lab in ds.samples])
    i, j, same = make_pairs(labels, seed=opts.seed, max_impostors=opts.max_impostors)
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
