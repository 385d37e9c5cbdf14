"""Identity-labelled face photos: the folder layout every evaluation, calibration and training reads.

Layout: ``root/<person>/<image>``, images found recursively below each person
folder (``root/<person>/session1/img.pgm`` is fine). Any format
:func:`facesearch.photos.load.load_image` reads works, including PGM and GIF.

Files are not opened at scan time (too slow for tens of thousands of images).
A file that fails to decode when it is first loaded is logged, counted in
``bad_files`` and replaced by another image of the same person, so one bad file
never stops an epoch.

Splits are by identity, never by image: a person's photos are all on one side,
so held-out numbers measure how a model does on new people. No torch here.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from facesearch.core.errors import BadImageError, DataError
from facesearch.photos.load import load_image
from facesearch.photos.scan import IMAGE_EXTS, scan_images

log = logging.getLogger(__name__)

Sample = tuple[Path, int]
LAYOUT_HINT = "expected layout: ROOT/<person>/<image> (one folder per person; subfolders are fine)"


@dataclass
class BadFileLog:
    """Files that failed to decode, shared by every view of one dataset (per process)."""

    paths: list[str] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set, repr=False)

    def add(self, index: int, path: Path, error: BadImageError) -> None:
        if index not in self._seen:
            self._seen.add(index)
            self.paths.append(str(path))
            log.warning("skipping unreadable training image: %s", error.message)

    def __contains__(self, index: int) -> bool:
        return index in self._seen

    def __len__(self) -> int:
        return len(self.paths)


class SafeLoader:
    """Loads ``samples[i]``; a bad file is replaced by the next readable image of the same person."""

    def __init__(self, samples: Sequence[Sample], bad: BadFileLog):
        self.samples = samples
        self.bad = bad
        self._by_label: dict[int, list[int]] | None = None

    def load(self, index: int) -> tuple[Image.Image, int]:
        label = self.samples[index][1]
        for i in self._candidates(index):
            try:
                return load_image(self.samples[i][0]), label
            except BadImageError as e:
                self.bad.add(i, self.samples[i][0], e)
        raise DataError(f"every image of person #{label} is unreadable (e.g. {self.samples[index][0]})",
                        hint="remove or re-export the corrupt files")

    def _candidates(self, index: int) -> Iterator[int]:
        if index not in self.bad:
            yield index
        if self._by_label is None:
            self._by_label = indices_by_label(np.array([lab for _, lab in self.samples], dtype=np.int64))
        same = self._by_label[self.samples[index][1]]
        start = int(np.searchsorted(same, index))
        # Walk the person's other images in a fixed order, so replacement is deterministic.
        for i in same[start:] + same[:start]:
            if i != index and i not in self.bad:
                yield i


def indices_by_label(labels: np.ndarray) -> dict[int, list[int]]:
    """``{label: [sample indices, ascending]}`` for an array of integer labels."""
    order = np.argsort(labels, kind="stable")
    keys, starts = np.unique(labels[order], return_index=True)
    return {int(k): order[s:e].tolist() for k, s, e in zip(keys, starts, [*starts[1:], len(order)])}


class IdentityFolder:
    """Photos grouped by person: ``samples[i] = (path, label)``, ``classes[label] = person``.

    Indexing loads the image: ``folder[i] -> (PIL RGB image, label)``, with
    unreadable files replaced as described in the module docstring.

    Raises:
        DataError: the folder is missing, holds no images, holds only one person,
            or (``require_pairs=True``) no person has two or more images.
    """

    def __init__(self, root: str | os.PathLike, exts: Iterable[str] = IMAGE_EXTS, require_pairs: bool = False):
        self.roots = [Path(root)]
        classes, samples = _scan_root(Path(root), exts, prefix="")
        self._init(classes, samples, require_pairs)

    @classmethod
    def from_roots(cls, roots: Sequence[str | os.PathLike], exts: Iterable[str] = IMAGE_EXTS,
                   require_pairs: bool = False) -> "IdentityFolder":
        """Merge several identity folders; classes are named ``<root name>/<person>``.

        Roots with the same folder name (``train/yale`` and ``dev/yale``) get
        longer prefixes (``train/yale/<person>``), so people never merge by accident.
        """
        if not roots:
            raise DataError("no data folders given", hint=LAYOUT_HINT)
        self = cls.__new__(cls)
        self.roots = [Path(r) for r in roots]
        classes, samples = [], []
        for root, prefix in zip(self.roots, _prefixes(self.roots)):
            c, s = _scan_root(root, exts, prefix=prefix + "/")
            samples += [(p, lab + len(classes)) for p, lab in s]
            classes += c
        self._init(classes, samples, require_pairs)
        return self

    def _init(self, classes: list[str], samples: list[Sample], require_pairs: bool) -> None:
        where = ", ".join(str(r) for r in self.roots)
        if not samples:
            raise DataError(f"no images found under {where}", hint=LAYOUT_HINT)
        if len(classes) < 2:
            raise DataError(f"need at least 2 people, found 1 ({classes[0]!r}) under {where}",
                            hint="add more person folders; " + LAYOUT_HINT)
        self.classes, self.samples = classes, samples
        self.bad = BadFileLog()
        self._loader = SafeLoader(samples, self.bad)
        if require_pairs:
            self.check_pairs()
        log.info("%d images of %d people under %s", len(samples), len(classes), where)

    def check_pairs(self) -> None:
        """Raise :class:`DataError` unless some person has two or more images (pair/triplet losses)."""
        if self.counts().max() < 2:
            raise DataError("no person has two or more images, so no genuine pairs can be formed",
                            hint="pair and triplet losses need several photos of the same person")

    @property
    def labels(self) -> np.ndarray:
        """Label of every sample, as an int64 array."""
        return np.fromiter((lab for _, lab in self.samples), dtype=np.int64, count=len(self.samples))

    def counts(self) -> np.ndarray:
        """Images per class, indexed by label."""
        return np.bincount(self.labels, minlength=len(self.classes))

    @property
    def bad_files(self) -> int:
        """How many files failed to decode so far (in this process)."""
        return len(self.bad)

    @property
    def bad_paths(self) -> list[str]:
        return list(self.bad.paths)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self._loader.load(index)


def _scan_root(root: Path, exts: Iterable[str], prefix: str) -> tuple[list[str], list[Sample]]:
    """Classes (sorted person folder names) and their samples; people without images are dropped."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}", hint=LAYOUT_HINT)
    exts = frozenset(exts)
    people = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in exts]
    if stray and not people:
        raise DataError(f"{root} holds {len(stray)} images but no person folders", hint=LAYOUT_HINT)
    if stray:
        log.warning("ignoring %d images directly in %s (not in a person folder)", len(stray), root)
    classes, samples = [], []
    for person in people:
        files = scan_images([person], exts=exts)
        if not files:
            log.info("skipping %s: no images", person)
            continue
        samples += [(f, len(classes)) for f in files]
        classes.append(prefix + person.name)
    return classes, samples


def _prefixes(roots: Sequence[Path]) -> list[str]:
    """Shortest path tails that tell the roots apart: ``yale``, or ``train/yale`` vs ``dev/yale``."""
    unique = list(dict.fromkeys(Path(os.path.abspath(r)).parts for r in roots))
    depth = {p: 1 for p in unique}
    while True:
        names = {p: "/".join(p[-depth[p]:]) for p in unique}
        counts = Counter(names.values())
        clash = [p for p in unique if counts[names[p]] > 1 and depth[p] < len(p)]
        if not clash:
            break
        for p in clash:  # lengthen only the names that collide
            depth[p] += 1
    used: Counter[str] = Counter()
    out = []
    for r in roots:  # the very same root given twice gets a numbered prefix
        name = names[Path(os.path.abspath(r)).parts]
        used[name] += 1
        out.append(name if used[name] == 1 else f"{name}#{used[name]}")
    return out


def labels_of(dataset) -> np.ndarray:
    """Per-sample integer labels of an :class:`IdentityFolder` (anything with ``samples``) or a label array."""
    if hasattr(dataset, "samples"):
        return np.fromiter((lab for _, lab in dataset.samples), dtype=np.int64, count=len(dataset.samples))
    return np.asarray(dataset)


def split_by_identity(dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (train, val) by person; no person is on both sides.

    ``dataset`` is an :class:`IdentityFolder` (anything with ``samples``) or a
    label array. About ``val_fraction`` of the people with 2+ images go to
    validation, at least 2 when that still leaves one for training, and the
    same fraction of the single-image people (they add impostor pairs only).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}", hint="e.g. 0.2")
    labels = labels_of(dataset)
    people, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    multi, single = rng.permutation(people[counts >= 2]), rng.permutation(people[counts < 2])
    n_multi = 0
    if val_fraction > 0 and len(multi) >= 2:
        n_multi = min(max(2, round(val_fraction * len(multi))), len(multi) - 1)
    n_single = round(val_fraction * len(single))
    val_people = np.concatenate([multi[:n_multi], single[:n_single]])
    is_val = np.isin(labels, val_people)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
