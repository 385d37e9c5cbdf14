"""Aligned face chips of whole photo sets, detected once and cached as ``.npz``.

Detection (dlib HOG, CNN fallback) costs far more than the network, so tools and
benchmarks that go over the same photos many times (fine-tuning, distillation,
open-set benchmarks) detect them once here, with the product's own
:func:`facesearch.faces.chips.largest_face` (the chip indexing would make), in
parallel. The cache holds face pixels, so it lives outside the repository
(:func:`chip_cache_dir`).

One ``<set>-<detector>[.lm<version>].npz`` per set and detector (:func:`chips_key`): ``chips``
(N,150,150,3 uint8, dlib's chip), ``chips_arcface`` (N,112,112,3, the ArcFace chip a fused model's
SFace part sees), ``chips_yunet`` (N,150,150,3, dlib's chip warped from YuNet's points), ``labels`` (N,; -1 for photos directly in the set folder, an unlabelled set),
``classes``, ``paths``, ``detected`` (False where the whole image was used). Unreadable files are
skipped and listed on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from facesearch.core.atomic import atomic_path
from facesearch.core.pool import worker_pool
from facesearch.faces.detect import create_detector
from facesearch.core.errors import BadImageError
from facesearch.faces.chips import assemble_chips, largest_face
from facesearch.photos.load import load_array
from facesearch.photos.scan import scan_images
from facesearch.core.paths import cache_dir

ALIGN = "dlib5_150_p25+arcface_112+yunet5_150"  # every chip any shipped model needs, from one detection
ARRAYS = {"dlib5_150_p25": "chips", "arcface_112": "chips_arcface", "yunet5_150": "chips_yunet"}
_detector = None
_min_side: int | None = None


def chip_cache_dir() -> Path:
    """``$FACESEARCH_CACHE/chips`` or ``~/.cache/facesearch/chips``."""
    return cache_dir() / "chips"


def cached_set(set_dir: Path, out: Path, detector: str = "auto", workers: int | None = None,
               min_side: int | None = None) -> dict:
    """The chips of ``set_dir`` from ``out/<set>.npz``, detecting and caching them first if absent.

    ``min_side`` upscales smaller photos before detection (``<set>@<min_side>.npz``): thumbnails
    such as 80 px LFW frames hold faces too small for the detector, which would leave whole-frame
    chips instead of aligned faces.
    """
    stem = f"{Path(set_dir).name}@{min_side}" if min_side else Path(set_dir).name
    dest = Path(out) / f"{stem}-{chips_key(detector)}.npz"  # chips depend on who found the face, and how
    if dest.exists():
        with np.load(dest) as z:
            if all(k in z.files for k in ARRAYS.values()):
                return {k: z[k] for k in z.files}
        dest.unlink()  # cached before a template was added
    dest.parent.mkdir(parents=True, exist_ok=True)
    cache_set(Path(set_dir), dest, detector, workers or os.cpu_count() or 1, min_side)
    with np.load(dest) as z:
        return {k: z[k] for k in z.files}


def model_inputs(cached: dict, align: str) -> list:
    """What ``EmbeddingEngine.embed`` takes for a model with this ``align``: the chips, or one
    ``{template: chip}`` dict per face for a fused model."""
    arrays = {t: cached[k] for t, k in ARRAYS.items() if k in cached}
    return assemble_chips(arrays, align.split("+"))


def resolved_detector(name: str) -> str:
    """The backend a detector name stands for ("auto" changes meaning between releases)."""
    from facesearch.faces.detect import AUTO

    return AUTO if name == "auto" else name


def chips_key(detector: str) -> str:
    """The resolved detector, the version of its landmarks and its network's arithmetic when not
    float32: what a set's chips depend on, so a change of alignment never reads chips cached
    before it."""
    from facesearch.faces.detect import LANDMARKS_VERSION, network_precision

    name = resolved_detector(detector)
    version = LANDMARKS_VERSION.get(name)
    key = f"{name}.lm{version}" if version else name
    precision = network_precision(name)
    return f"{key}.{precision}" if precision not in (None, "fp32") else key


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


def cache_set(set_dir: Path, dest: Path, detector: str, workers: int, min_side: int | None = None) -> None:
    paths, labels, classes = list_photos(set_dir)
    if not paths:
        print(f"{set_dir.name}: no photos, skipped", file=sys.stderr)
        return
    t0 = time.perf_counter()
    with worker_pool(workers, _init, (detector, min_side)) as pool:  # one thread each: YuNet's runtime takes one
        results = pool.map(_one, paths, chunksize=32)
    ok = np.array([r is not None for r in results])
    for p, r in zip(paths, results):
        if r is None:
            print(f"skipped unreadable {p}", file=sys.stderr)
    arrays = {k: np.stack([r[0][t] for r in results if r is not None]) for t, k in ARRAYS.items()}
    detected = np.array([r[1] for r in results if r is not None])
    chips = arrays["chips"]
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, labels=labels[ok], classes=np.array(classes),
                     paths=np.array([str(p) for p in np.array(paths, object)[ok]]), detected=detected)
    print(f"{set_dir.name}: {len(chips)} chips, {detected.mean():.3f} detected, "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)


def _init(detector: str, min_side: int | None = None) -> None:
    global _detector, _min_side
    _detector, _min_side = create_detector(detector), min_side


def _one(path: Path):
    try:
        img = load_array(path)
    except BadImageError:
        return None
    if _min_side and min(img.shape[:2]) < _min_side:
        scale = _min_side / min(img.shape[:2])
        size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
        img = np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))
    crop = largest_face(img, _detector, ALIGN)
    return crop.chip, crop.face.landmarks is not None or crop.face.points5 is not None
