"""Detect and align every photo of some face sets once, and cache the chips as ``.npz``.

Fine-tuning and distillation go over the same photos many times; detection
(dlib HOG, CNN fallback) costs far more than the network, so it is done once
here, with the product's own ``largest_face`` (the chip indexing would make).
The cache holds face pixels, so it lives outside the repository.

    python tools/cache_chips.py ../shared/data/train --out ~/.cache/facesearch/chips/train
    python tools/cache_chips.py ../shared/data/dev --out ~/.cache/facesearch/chips/dev

One ``<set>.npz`` per set: ``chips`` (N,150,150,3 uint8), ``labels`` (N,),
``classes``, ``paths``, ``detected`` (False where the whole image was used).
Unreadable files are skipped and listed on stderr.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

from facesearch.atomic import atomic_path
from facesearch.detect import create_detector
from facesearch.errors import BadImageError
from facesearch.faces import largest_face
from facesearch.imageio import load_array, scan_images

ALIGN = "dlib5_150_p25"
_detector = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="a split folder: <root>/<set>/<identity>/<image>")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sets", type=lambda s: s.split(","), default=None, help="comma-separated (default all)")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for set_dir in sorted(d for d in args.root.iterdir() if d.is_dir()):
        if args.sets and set_dir.name not in args.sets:
            continue
        dest = args.out / f"{set_dir.name}.npz"
        if dest.exists():
            print(f"{set_dir.name}: cached", file=sys.stderr)
            continue
        cache_set(set_dir, dest, args.detector, args.workers)
    return 0


def list_photos(set_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Photos sorted by identity folder then name, with integer labels.

    Photos directly in ``set_dir`` (an unlabelled set) get label -1."""
    classes = sorted(d.name for d in set_dir.iterdir() if d.is_dir())
    paths = [p for p in scan_images([set_dir]) if p.parent == set_dir]
    labels = [-1] * len(paths)
    for k, c in enumerate(classes):
        files = scan_images([set_dir / c])
        paths += files
        labels += [k] * len(files)
    return paths, np.array(labels, np.int64), classes


def cache_set(set_dir: Path, dest: Path, detector: str, workers: int) -> None:
    paths, labels, classes = list_photos(set_dir)
    if not paths:
        print(f"{set_dir.name}: no photos, skipped", file=sys.stderr)
        return
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(detector,)) as pool:
        results = pool.map(_one, paths, chunksize=32)
    ok = np.array([r is not None for r in results])
    for p, r in zip(paths, results):
        if r is None:
            print(f"skipped unreadable {p}", file=sys.stderr)
    chips = np.stack([r[0] for r in results if r is not None])
    detected = np.array([r[1] for r in results if r is not None])
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, chips=chips, labels=labels[ok], classes=np.array(classes),
                     paths=np.array([str(p) for p in np.array(paths, object)[ok]]), detected=detected)
    print(f"{set_dir.name}: {len(chips)} chips, {detected.mean():.3f} detected, "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)


def _init(detector: str) -> None:
    global _detector
    _detector = create_detector(detector)


def _one(path: Path):
    try:
        img = load_array(path)
    except BadImageError:
        return None
    crop = largest_face(img, _detector, ALIGN)
    return crop.chip, crop.face.landmarks is not None


if __name__ == "__main__":
    raise SystemExit(main())
