"""Calibrate a model's default thresholds on dev sets and store them in its weights JSON.

- ``tau``: the identity threshold at the EER of all dev pairs pooled (query/evaluate default);
- ``tau_far1e3``: the stricter threshold at FAR = 1e-3;
- ``tau_dedupe``: the near-duplicate threshold (dedupe default): the 99th percentile of the distance
  between a dev photo and a re-encoded, resized, slightly shifted copy of itself, capped below
  the 1st percentile of genuine (same person, different photo) distances.

Per-set metrics go to ``metrics.dev``. Only ``dev/`` is read: thresholds are chosen on dev, never train.

    python tools/calibrate.py --weights weights/default --data ../shared/data/dev
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from facesearch.atomic import atomic_write_json
from facesearch.detect import create_detector
from facesearch.embed import EmbeddingEngine
from facesearch.evaluate import embed_files
from facesearch.faces import largest_face
from facesearch.imageio import load_image
from facesearch.metrics import eer, tar_at_far, verification_report
from facesearch.models.weights import load_weights, resolve_weights
from facesearch.train.data import IdentityFolder, make_pairs


def set_distances(root: Path, engine: EmbeddingEngine, detector: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ds = IdentityFolder(root)
    paths = [str(p) for p, _ in ds.samples]
    labels = np.array([lab for _, lab in ds.samples])
    emb, ok, _ = embed_files(paths, engine, detector)
    i, j, same = make_pairs(labels, seed=0, max_impostors=50_000)
    keep = ok[i] & ok[j]
    return np.linalg.norm(emb[i[keep]] - emb[j[keep]], axis=1), same[keep], paths


def near_duplicate_distances(paths: list[str], engine: EmbeddingEngine, detector: str, n: int = 200) -> np.ndarray:
    """Distance between a photo and a degraded copy (JPEG q60, 80% size, 2-px shift)."""
    det = create_detector(detector)
    rng = np.random.default_rng(0)
    chips_a, chips_b = [], []
    for p in rng.choice(paths, min(n, len(paths)), replace=False):
        img = load_image(p)
        w, h = img.size
        copy = img.crop((2, 2, w, h)).resize((max(1, int(w * 0.8)), max(1, int(h * 0.8))))
        buf = io.BytesIO()
        copy.save(buf, "JPEG", quality=60)
        a = largest_face(np.asarray(img), det, engine.config.align)
        b = largest_face(np.asarray(Image.open(buf).convert("RGB")), det, engine.config.align)
        chips_a.append(a.chip)
        chips_b.append(b.chip)
    ea, eb = engine.embed(chips_a), engine.embed(chips_b)
    return np.linalg.norm(ea - eb, axis=1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"))
    ap.add_argument("--detector", default="auto")
    args = ap.parse_args(argv)
    model = load_weights(args.weights)
    engine = EmbeddingEngine(model, device="auto")
    dists, sames, per_set, all_paths = [], [], {}, []
    for root in sorted(p for p in Path(args.data).iterdir() if p.is_dir()):
        d, s, paths = set_distances(root, engine, args.detector)
        rep = verification_report(d, s)
        per_set[root.name] = {k: rep[k] for k in ("roc_auc", "eer", "tau_eer", "cv_accuracy", "tar@far1e-3")}
        print(root.name, json.dumps(per_set[root.name]))
        dists.append(d), sames.append(s), all_paths.extend(paths)
    d, s = np.concatenate(dists), np.concatenate(sames)
    _, tau = eer(d, s)
    _, tau3 = tar_at_far(d, s, 1e-3)
    dup = near_duplicate_distances(all_paths, engine, args.detector)
    tau_dup = float(min(np.percentile(dup, 99), np.percentile(d[s], 1)))
    js = resolve_weights(args.weights)
    meta = json.loads(js.read_text())
    meta["config"].update(tau=round(float(tau), 4), tau_far1e3=round(float(tau3), 4), tau_dedupe=round(tau_dup, 4))
    meta["config"]["metrics"] = {**meta["config"].get("metrics", {}), "dev": per_set,
                                 "near_duplicate_distance_p50_p99": [round(float(np.percentile(dup, q)), 4) for q in (50, 99)],
                                 "calibration": {"data": "dev (all sets pooled)", "detector": args.detector}}
    atomic_write_json(js, meta)
    print(json.dumps({k: meta["config"][k] for k in ("tau", "tau_far1e3", "tau_dedupe")}))


if __name__ == "__main__":
    main()
