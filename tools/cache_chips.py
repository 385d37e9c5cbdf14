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
import os
import sys
from pathlib import Path

from facesearch.eval.chips import cache_set


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


if __name__ == "__main__":
    raise SystemExit(main())
