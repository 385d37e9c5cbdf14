"""Calibrate a model's τ policy on dev sets and store it in its weights JSON.

Writes the config fields of :func:`facesearch.eval.tau.calibrate` (the one τ policy):

- ``tau``: verification τ at the EER of all dev pairs pooled (``evaluate``'s operating point);
- ``tau_far1e3`` / ``tau_far1e4``: stricter verification τ;
- ``calibration.far_curve``: FAR as a function of τ, from **every** impostor pair of the
  in-the-wild dev sets (``--open-set-sets``, default pins_celebs: 2.4M pairs, so FAR 1e-5 is
  measured, not extrapolated);
- ``calibration.identification``: for 1 % and 0.1 % FPIR, the τ against galleries of 1 … 100,000
  faces, measured per photo: every photo of those sets as a stranger to every other person of
  its set (``query``'s default τ);
- ``calibration.quality_min`` (models that rate their faces): the quality gate, the 2nd percentile
  of the in-the-wild sets' face quality (``facesearch.eval.tau.quality_floor``);
- ``tau_dedupe``: the near-duplicate τ: the 99th percentile of the distance between a dev photo
  and a re-encoded, resized, slightly shifted copy of itself, capped below the 1st percentile of
  genuine (same person, different photo) distances.
- ``tau_people``: the τ at which the product's people clustering best groups every dev photo
  (all sets pooled, people kept apart by set; BCubed F), between ``tau_far1e4`` and ``tau_far1e3``
  (``facesearch.people.cluster.people_tau``).

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

from facesearch.core.atomic import atomic_write_json
from facesearch.faces.detect import create_detector
from facesearch.models.embed import EmbeddingEngine
from facesearch.eval.chips import resolved_detector
from facesearch.eval.embedding import EmbeddedFolder, embed_folder
from facesearch.photos.folders import IdentityFolder
from facesearch.eval.protocol import protocol_distances, verification_report
from facesearch.eval.tau import calibrate
from facesearch.faces.chips import largest_face
from facesearch.photos.load import load_image
from facesearch.models.weights import load_weights, resolve_weights
from facesearch.people.cluster import people_tau
from facesearch.people.persons import GRAPH_K


def set_distances(data: EmbeddedFolder) -> tuple[np.ndarray, np.ndarray]:
    """Every genuine and every impostor pair of one embedded identity folder (distances, same)."""
    return protocol_distances(data.emb, data.labels, max_impostors=None)


def near_duplicate_distances(paths: list[str], engine: EmbeddingEngine, detector: str, n: int = 200) -> np.ndarray:
    """Distance between a photo and a degraded copy (JPEG q60, 80% size, 2-px shift)."""
    det = create_detector(detector, align=engine.config.align)
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
    ap.add_argument("--open-set-sets", type=lambda v: v.split(","), default=["pins_celebs"],
                    help="in-the-wild dev sets that set the FAR and identification curves")
    args = ap.parse_args(argv)
    model = load_weights(args.weights)
    engine = EmbeddingEngine(model, device="auto")
    dists, sames, per_set, sets, names = [], [], {}, [], []
    for root in sorted(p for p in Path(args.data).iterdir() if p.is_dir()):
        data = embed_folder(IdentityFolder(root), engine, args.detector)
        d, s = set_distances(data)
        rep = verification_report(d, s)
        per_set[root.name] = {k: rep[k] for k in ("roc_auc", "eer", "tau_eer", "cv_accuracy", "tar@far1e-3")}
        print(root.name, json.dumps(per_set[root.name]), flush=True)
        dists.append(d), sames.append(s), sets.append(data), names.append(root.name)
    d, s = np.concatenate(dists), np.concatenate(sames)
    paths = [p for data in sets for p in data.paths]
    fields = calibrate(d, s, duplicate_dist=near_duplicate_distances(paths, engine, args.detector))
    # Open-set numbers (FAR curve, identification curve) from the in-the-wild sets only: the lab
    # sets' extreme-lighting and full-profile photos of different people sit at d 0.03-0.2 and
    # would set the τ of a photo collection (bench/openset.py reports every set against it).
    wild = [k for k, root in enumerate(names) if root in args.open_set_sets]
    if not wild:
        raise SystemExit(f"none of --open-set-sets {args.open_set_sets} is under {args.data}")
    fields["calibration"] = calibrate(
        np.concatenate([dists[k] for k in wild]), np.concatenate([sames[k] for k in wild]),
        emb=np.concatenate([sets[k].emb for k in wild]), labels=np.concatenate([sets[k].labels for k in wild]),
        groups=np.concatenate([np.full(len(sets[k].paths), k) for k in wild]),
        quality=None if sets[0].quality is None else np.concatenate([sets[k].quality for k in wild]))["calibration"]
    fields["calibration"]["data"] = (f"verification τ: every within-set pair of {', '.join(names)}; "
                                     f"open set: every within-set pair and photo of {', '.join(names[k] for k in wild)}")
    fields["calibration"]["detector"] = resolved_detector(args.detector)
    # Every dev photo pooled, people kept apart by set (labels offset per set).
    labels = np.concatenate([data.labels + 10_000 * k for k, data in enumerate(sets)])
    fields["tau_people"], fields["calibration"]["people_bcubed_f"] = people_tau(
        np.concatenate([data.emb for data in sets]), labels, fields["tau_far1e4"], fields["tau_far1e3"], GRAPH_K)
    js = resolve_weights(args.weights)
    meta = json.loads(js.read_text())
    meta["config"].update(fields)
    meta["config"]["metrics"] = {**meta["config"].get("metrics", {}), "dev": per_set}
    meta["config"]["metrics"].pop("calibration", None)  # moved to config.calibration
    atomic_write_json(js, meta)
    print(json.dumps({k: v for k, v in fields.items() if k != "calibration"}))
    print(json.dumps(fields["calibration"]))


if __name__ == "__main__":
    main()
