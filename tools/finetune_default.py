"""Fine-tune the default model's last blocks on ``train/``, held to its original outputs.

Needs chips cached by ``tools/cache_chips.py`` for the train split (and the dev
split, which is only *scored*, to choose the step and to report). The recipe
(facesearch.learn.distill): blocks ``--cut``.. and the fc layer are trained
with an identity loss on the labelled sets plus teacher-matching and relational
terms against the original model on every face, including the unlabelled sets.

    python tools/cache_chips.py ../shared/data/train --out ~/.cache/facesearch/chips/train
    python tools/cache_chips.py ../shared/data/dev --out ~/.cache/facesearch/chips/dev
    python tools/finetune_default.py --chips ~/.cache/facesearch/chips --out runs/ft/default_ft

Writes ``OUT.json/.safetensors`` (the weights at the last step, the recipe and
exact command recorded in the JSON) and ``OUT.history.json`` (losses and dev
scores at every evaluation). Calibrate τ afterwards
with ``tools/calibrate.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from facesearch.core.atomic import atomic_path, atomic_write_json  # noqa: E402
from facesearch.eval.chips import chips_key  # noqa: E402
from facesearch.eval.protocol import score_embeddings  # noqa: E402
from facesearch.faces.chips import YUNET_CHIP  # noqa: E402
from facesearch.models.weights import load_weights, save_weights  # noqa: E402
from facesearch.learn.distill import (  # noqa: E402
    DistillOptions, FeatureBank, TailNet, build_bank, distill, embed_bank, flip_ensemble, mirrored_teacher,
    teacher_outputs)

LABELLED = ("extended_yale_b", "glint360k_celebs", "lowres_ar_ii", "lowres_gt", "lowres_imm", "pins_celebs",
            "yalefaces")
UNLABELLED = ("lfw_singletons_80px", "utkface_unlabelled")
DEV_SETS = ("orl_att_faces", "extended_yale_b", "pins_celebs", "lowres_umist")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_weights(args.init)
    base_id = model.model_id
    tail = TailNet(model, args.cut)
    bank, labels = train_bank(tail, args, base_id)
    dev = {s: dev_bank(tail, args, base_id, s) for s in args.dev_sets}
    opts = DistillOptions(**{k: getattr(args, k) for k in DistillOptions.__dataclass_fields__})
    log(f"training blocks {args.cut}.. on {len(labels)} faces ({int((labels >= 0).sum())} labelled), "
        f"{bank.views} views; {opts}")
    history = distill(tail, bank, labels, opts,
                      evaluate=lambda t: evaluate(t, dev, args), on_event=lambda _, row: log(json.dumps(row)))
    recipe = {"init": base_id, "cut": args.cut, "views": args.views, "teacher": args.teacher, "student": args.student,
              "per_identity": args.per_identity,
              "train_sets": list(args.sets), "unlabelled_sets": list(args.unlabelled_sets), "options": asdict(opts),
              "command": "python tools/finetune_default.py " + " ".join(argv or sys.argv[1:])}
    if args.student == "chips_yunet":
        model.config.align = YUNET_CHIP
    model.config.recipe = {**model.config.recipe, "finetune": recipe,
                           "training": f"blocks {args.cut}.. and fc fine-tuned on train/ (tools/finetune_default.py)"}
    js = save_weights(model, args.out)
    atomic_write_json(Path(str(args.out) + ".history.json"), {"recipe": recipe, "history": history})
    log(f"wrote {js}")
    return 0


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=Path, required=True, help="folder with train/ and dev/ chip caches")
    ap.add_argument("--out", type=Path, required=True, help="output weights stem")
    ap.add_argument("--init", default="dlib_ft",
                    help="weights to start from (default: dlib_ft, the shipped fine-tuned dlib ResNet)")
    ap.add_argument("--bank-dir", type=Path, default=None, help="feature-bank cache (default CHIPS/banks)")
    ap.add_argument("--sets", type=lambda s: s.split(","), default=list(LABELLED))
    ap.add_argument("--unlabelled-sets", type=lambda s: [x for x in s.split(",") if x], default=list(UNLABELLED))
    ap.add_argument("--dev-sets", type=lambda s: s.split(","), default=list(DEV_SETS))
    ap.add_argument("--cut", type=int, default=10, help="first trained residual block")
    ap.add_argument("--views", type=int, default=2, help="cached views per face (0 = as is, others augmented)")
    ap.add_argument("--teacher", choices=("plain", "flip-ensemble"), default="plain",
                    help="targets: the teacher on each view, or the mean of the plain and mirrored chip for every view")
    ap.add_argument("--student", choices=("chips", "chips_yunet"), default="chips",
                    help="the chips the student learns on: dlib's (the teacher's own), or dlib's chip warped from "
                         "YuNet's points (one alignment; the teacher still sees dlib's chip of the same face)")
    ap.add_argument("--per-identity", type=int, default=0,
                    help="train on at most this many faces of each person (0: all); unlabelled sets whole")
    ap.add_argument("--threads", type=int, default=0)
    for f, v in asdict(DistillOptions()).items():
        ap.add_argument("--" + f.replace("_", "-"), type=type(v) if v is not None else str, default=v)
    args = ap.parse_args(argv)
    args.bank_dir = args.bank_dir or args.chips / "banks"
    return args


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def chip_file(args, split: str, name: str) -> Path:
    """A set's chip cache: ``tools/cache_chips.py``'s ``<set>.npz``, else ``facesearch.eval.chips``'
    ``<set>-<detector key>.npz`` for the default detector."""
    plain = args.chips / split / f"{name}.npz"
    return plain if plain.is_file() else args.chips / split / f"{name}-{chips_key('auto')}.npz"


def cached_bank(tail: TailNet, npz: Path, dest: Path, views: int, seed: int, key: str = "chips",
                per_identity: int = 0) -> dict[str, torch.Tensor]:
    """The block inputs (``feats``) and ``labels`` of the chips ``key`` of one chip cache, built once
    and kept as safetensors. Teacher targets are not stored: they come from the features (tail only)."""
    if dest.is_file():
        return load_file(str(dest))
    data = np.load(npz)
    rows = _subset(data["labels"], per_identity, seed)
    t0 = time.perf_counter()
    bank = build_bank(tail, data[key][rows], views=views, seed=seed)
    out = {"feats": bank.feats.contiguous(), "labels": torch.as_tensor(data["labels"][rows])}
    with atomic_path(dest) as tmp:
        save_file(out, str(tmp))
    log(f"bank {npz.stem}: {len(data['labels'])} faces x {views} views in {time.perf_counter() - t0:.0f} s")
    return out


def _subset(labels: np.ndarray, per_identity: int, seed: int) -> np.ndarray:
    """Rows of at most ``per_identity`` faces of each person (a seeded draw, in file order), all of
    them when 0; an unlabelled set (-1) is kept whole. On a CPU the frozen prefix over every face is
    the run's cost: 120 faces of each of pins' 85 people teach as many people in 60 % of the time."""
    if not per_identity:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(labels == i) for i in np.unique(labels)]
    keep = [k if i < 0 or len(k) <= per_identity else np.sort(rng.choice(k, per_identity, replace=False))
            for i, k in zip(np.unique(labels), keep)]
    return np.sort(np.concatenate(keep))


def _bank_path(args, base_id: str, split: str, name: str, views: int, key: str = "chips") -> Path:
    which = ("" if key == "chips" else f"_{key}") + (f"_n{args.per_identity}" if split == "train" and args.per_identity else "")
    return args.bank_dir / f"{base_id}_cut{args.cut}_v{views}_s{args.seed}{which}" / split / f"{name}.safetensors"


def train_bank(tail: TailNet, args, base_id: str):
    """All train sets in one bank; labels offset per set, -1 for the unlabelled sets."""
    feats, teacher, labels, offset = [], [], [], 0
    for name in list(args.sets) + list(args.unlabelled_sets):
        b = cached_bank(tail, chip_file(args, "train", name),
                        _bank_path(args, base_id, "train", name, args.views, args.student), args.views, args.seed,
                        args.student, args.per_identity)
        lab = b["labels"].numpy().astype(np.int64)
        if name in args.unlabelled_sets:
            lab = np.full(len(lab), -1)
        else:
            lab, offset = lab + offset, offset + int(lab.max()) + 1
        t = teacher_outputs(tail, teacher_feats(tail, args, base_id, name, b["feats"]))  # the original model
        if args.teacher == "flip-ensemble":
            t = flip_ensemble(t, cached_mirror(tail, args, base_id, name))
        elif args.student != "chips":  # every view of a YuNet chip learns the plain dlib chip's embedding
            t = t[:1].expand(args.views, -1, -1).contiguous()
        feats.append(b["feats"])
        teacher.append(t)
        labels.append(lab)
    return FeatureBank(torch.cat(feats, 1), torch.cat(teacher, 1)), np.concatenate(labels)


def teacher_feats(tail: TailNet, args, base_id: str, name: str, student_feats: torch.Tensor) -> torch.Tensor:
    """What the teacher sees: the student's own views, or, when the student learns on other chips
    (``--student chips_yunet``: one alignment, issue 38), dlib's chips of the same faces (view 0)."""
    if args.student == "chips":
        return student_feats
    return cached_bank(tail, chip_file(args, "train", name), _bank_path(args, base_id, "train", name, 1), 1,
                       args.seed, per_identity=args.per_identity)["feats"]


def cached_mirror(tail: TailNet, args, base_id: str, name: str) -> torch.Tensor:
    dest = _bank_path(args, base_id, "train", name, args.views).with_suffix(".mirrored.safetensors")
    if not dest.is_file():
        t0 = time.perf_counter()
        mirrored = mirrored_teacher(tail, np.load(chip_file(args, "train", name))["chips"])
        with atomic_path(dest) as tmp:
            save_file({"teacher": mirrored.contiguous()}, str(tmp))
        log(f"mirrored teacher {name}: {len(mirrored)} faces in {time.perf_counter() - t0:.0f} s")
    return load_file(str(dest))["teacher"]


def dev_bank(tail: TailNet, args, base_id: str, name: str) -> dict:
    b = cached_bank(tail, chip_file(args, "dev", name), _bank_path(args, base_id, "dev", name, 1, args.student), 1, 0,
                    args.student)
    return {"feats": b["feats"][0], "labels": b["labels"].numpy()}


def evaluate(tail: TailNet, dev: dict, args) -> dict:
    """The benchmark's scores on each dev set (same pairs, same folds)."""
    out = {}
    for name, d in dev.items():
        r = score_embeddings(embed_bank(tail, d["feats"]), d["labels"])  # seed 0, 50k impostors, 10 folds
        out[f"{name}/auc"] = r["roc_auc"]
        out[f"{name}/bacc"] = r["balanced_accuracy_cv"]
        out[f"{name}/top1"] = r["one_shot_top1"]
    out["mean_auc"] = float(np.mean([out[f"{n}/auc"] for n in dev]))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
