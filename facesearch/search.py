"""One-shot identification: every face in a query photo gets its nearest indexed faces.

The predicted identity is the label of the nearest *labelled* face within τ,
else unknown. The margin is how much closer that identity is than the best
different identity (larger = more confident).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from facesearch.detect import create_detector
from facesearch.errors import BadImageError, FacesearchError, NoFaceError
from facesearch.faces import extract_faces
from facesearch.imageio import load_array
from facesearch.index.store import FaceIndex
from facesearch.models.config import EmbedderConfig
from facesearch.models.weights_meta import read_meta, resolve_weights

IDENTIFY_K = 50  # neighbours scanned for the nearest labelled faces


@dataclass
class QueryOptions:
    index: os.PathLike
    weights: str | None = None
    top: int = 5
    tau: float | None = None
    detector: str = "auto"
    device: str = "auto"


def default_tau(store: FaceIndex, config: EmbedderConfig, kind: str = "tau") -> float:
    """A default threshold: ``tau`` (identity) or ``tau_dedupe`` (near-duplicate).

    Taken from the model's calibration in its weights JSON (the live file when it
    is the same model as the index's, so a later calibration applies), else the
    index manifest, else a conservative constant.
    """
    fallback = {"tau": 0.6, "tau_dedupe": 0.3}[kind]
    return getattr(config, kind, None) or store.manifest.get("model_config", {}).get(kind) or fallback


def index_model_config(store: FaceIndex, weights: str | None = None) -> EmbedderConfig:
    """The index's model config, refreshed from the weights JSON when it names the same model."""
    config = EmbedderConfig.from_dict(store.manifest["model_config"])
    try:
        meta = read_meta(resolve_weights(weights))
    except FacesearchError:
        return config
    return EmbedderConfig.from_dict(meta["config"]) if meta.get("model_id") == store.manifest.get("model_id") else config


def query(images: list[str], opts: QueryOptions) -> list[dict]:
    """Search the index for every face in each image; JSON-ready results, one per image."""
    from facesearch.embed import EmbeddingEngine  # torch loads only for commands that embed
    from facesearch.models.weights import load_weights

    store = FaceIndex.open(opts.index, readonly=True)
    model = load_weights(opts.weights, expect=EmbedderConfig.from_dict(store.manifest["model_config"]))
    store.check_model(model.model_id)
    tau = opts.tau if opts.tau is not None else default_tau(store, model.config)
    engine = EmbeddingEngine(model, device=opts.device)
    detector = create_detector(opts.detector)
    with store:
        return [_query_safe(p, store, engine, detector, tau, opts.top, single=len(images) == 1) for p in images]


def _query_safe(path: str, store, engine, detector, tau: float, top: int, single: bool) -> dict:
    """One image's result; with several images a bad one is reported in place, not fatal."""
    try:
        return _query_one(path, store, engine, detector, tau, top)
    except (BadImageError, NoFaceError) as e:
        if single:
            raise
        return {"query": path, "faces": [], "error": e.message}


def _query_one(path: str, store: FaceIndex, engine, detector, tau: float, top: int) -> dict:
    crops = extract_faces(load_array(path), detector, engine.config.align)
    if not crops:
        raise NoFaceError(f"no face found in {path}", hint="try --detector none if the image is a face crop")
    emb = engine.embed([c.chip for c in crops])
    k = min(max(top, IDENTIFY_K), max(store.count(), 1))
    results = store.search(emb, k)
    faces = []
    for crop, matches in zip(crops, results):
        ident, margin = identify(matches, tau)
        faces.append({
            "box": [round(float(v), 1) for v in crop.face.box],
            "score": round(float(crop.face.score), 4),
            "identity": ident, "margin": margin, "tau": tau,
            "matches": [_match_dict(m) for m in matches[:top]],
        })
    return {"query": path, "faces": faces}


def identify(matches, tau: float) -> tuple[str | None, float | None]:
    """Label of the nearest labelled match within τ, and its margin to the best other label."""
    best: dict[str, float] = {}
    for m in matches:
        if m.label is not None and m.label not in best:
            best[m.label] = m.distance
    if not best:
        return None, None
    ranked = sorted(best.items(), key=lambda kv: kv[1])
    label, d = ranked[0]
    margin = round(ranked[1][1] - d, 4) if len(ranked) > 1 else None
    return (label if d <= tau else None), margin


def _match_dict(m) -> dict:
    return {
        "path": m.path, "box": [round(float(v), 1) for v in m.box],
        "distance": round(float(m.distance), 4), "similarity": round(float(m.similarity), 4),
        "label": m.label, "face_id": int(m.face_id),
    }

