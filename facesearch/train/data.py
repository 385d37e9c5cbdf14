"""Identity-labelled face data for training and evaluation.

Layout: ``root/<person>/<image>``, images found recursively below each person
folder (``root/<person>/session1/img.pgm`` is fine). Any format
:func:`facesearch.imageio.load_image` reads works, including PGM and GIF.

Files are not opened at scan time (too slow for tens of thousands of images).
A file that fails to decode when it is first loaded is logged, counted in
``bad_files`` and replaced by another image of the same person, so one bad file
never stops an epoch.

Splits are by identity, never by image: a person's photos are all in train or
all in validation, so validation measures how the model does on new people.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Sampler

from facesearch.errors import BadImageError, DataError
from facesearch.imageio import IMAGE_EXTS, load_image, scan_images

log = logging.getLogger(__name__)

Sample = tuple[Path, int]
LAYOUT_HINT = "expected layout: ROOT/<person>/<image> (one folder per person; subfolders are fine)"


# ----------------------------------------------------------------- loading with replacement


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


class _SafeLoader:
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
            self._by_label = _group(np.array([lab for _, lab in self.samples], dtype=np.int64))
        same = self._by_label[self.samples[index][1]]
        start = int(np.searchsorted(same, index))
        # Walk the person's other images in a fixed order, so replacement is deterministic.
        for i in same[start:] + same[:start]:
            if i != index and i not in self.bad:
                yield i


def _group(labels: np.ndarray) -> dict[int, list[int]]:
    order = np.argsort(labels, kind="stable")
    keys, starts = np.unique(labels[order], return_index=True)
    return {int(k): order[s:e].tolist() for k, s, e in zip(keys, starts, [*starts[1:], len(order)])}


# ----------------------------------------------------------------- datasets


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
        self._loader = _SafeLoader(samples, self.bad)
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

    def subset(self, indices: Iterable[int], transform: Callable | None = None) -> "ImageDataset":
        """An :class:`ImageDataset` over some samples that reports bad files into this folder's log."""
        return ImageDataset([self.samples[i] for i in indices], transform, bad=self.bad)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self._loader.load(index)


class ImageDataset(Dataset):
    """Torch dataset over ``(path, label)`` samples: ``ds[i] -> (transform(image), label)``.

    ``transform`` is passed in (the trainer composes augmentation with the
    model's preprocessing); without one the PIL image is returned. Unreadable
    files are replaced by another image with the same label and recorded in
    ``bad`` (pass an :class:`IdentityFolder`'s ``bad`` to share its log). With
    DataLoader workers each worker keeps its own log.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None,
                 bad: BadFileLog | None = None):
        self.samples = list(samples)
        self.transform = transform
        self.bad = bad if bad is not None else BadFileLog()
        self._loader = _SafeLoader(self.samples, self.bad)

    @property
    def bad_files(self) -> int:
        return len(self.bad)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        img, label = self._loader.load(index)
        return (self.transform(img) if self.transform else img), label


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


# ----------------------------------------------------------------- splits and sampling


def _labels_of(dataset) -> np.ndarray:
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
    labels = _labels_of(dataset)
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


class PKSampler(Sampler[list[int]]):
    """Batch sampler: each batch holds ``p`` distinct people x ``k`` images each.

    People are drawn in proportion to their image count (so an epoch sees each
    image about once, as a shuffled loader would); a person with fewer than
    ``k`` images contributes all of them plus repeats. With fewer than ``p``
    people a batch holds them all. An epoch is ``max(1, n_images // (p*k))``
    batches; each ``iter()`` continues the seeded stream, so epochs differ.

    Raises:
        DataError: no person has two images (a metric loss would see no positives).
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, p: int = 8, k: int = 4, seed: int = 0):
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        self.labels = np.asarray(labels)
        self.groups = list(_group(self.labels).values())
        sizes = np.array([len(g) for g in self.groups], dtype=np.float64)
        if len(self.groups) == 0 or sizes.max() < 2:
            raise DataError("no person has two or more images, so batches would hold no positive pairs",
                            hint="pair and triplet losses need several photos of the same person")
        self.p, self.k = min(p, len(self.groups)), k
        self.weights = sizes / sizes.sum()
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return max(1, len(self.labels) // (self.p * self.k))

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(len(self)):
            people = self._rng.choice(len(self.groups), size=self.p, replace=False, p=self.weights)
            yield [i for g in people for i in self._pick(self.groups[g])]

    def _pick(self, group: list[int]) -> list[int]:
        if len(group) >= self.k:
            return [group[i] for i in self._rng.choice(len(group), self.k, replace=False)]
        extra = self._rng.choice(len(group), self.k - len(group), replace=True)
        return group + [group[i] for i in extra]


# ----------------------------------------------------------------- pairs


def make_pairs(labels: Sequence | np.ndarray, n_pairs: int | None = None, seed: int = 0,
               max_impostors: int = 50_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The verification protocol: all genuine pairs plus a seeded sample of impostor pairs.

    Returns index arrays ``i < j`` and a bool ``same``; genuine pairs come first.
    ``n_pairs`` caps the genuine pairs (a seeded sample; None keeps all, which is
    sum C(n_person, 2)); ``max_impostors`` caps the impostor pairs (all of them
    when there are fewer). Impostors are sampled uniformly without replacement.
    Vectorised: never builds the N x N pair matrix.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    end = np.repeat(starts + counts, counts)  # end of each sorted sample's person block
    pos = np.arange(len(labels))
    # Pairs (s, t) in sorted order with s < t: genuine partners of s are s+1..end-1,
    # impostor partners are end..N-1 (later people), so every pair is counted once.
    gi, gj = _enumerate_pairs(end - pos - 1, pos + 1, n_pairs, rng)
    ii, ij = _enumerate_pairs(len(labels) - end, end, max_impostors, rng)
    i = order[np.concatenate([gi, ii])]
    j = order[np.concatenate([gj, ij])]
    i, j = np.minimum(i, j), np.maximum(i, j)
    same = np.zeros(len(i), dtype=bool)
    same[: len(gi)] = True
    return i.astype(np.int64), j.astype(np.int64), same


def _enumerate_pairs(n_partners: np.ndarray, first_partner: np.ndarray, cap: int | None,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(s, first_partner[s] + o)`` for o < n_partners[s]; a uniform sample of ``cap`` if more."""
    cum = np.concatenate([[0], np.cumsum(n_partners)])
    total = int(cum[-1])
    if cap is None or cap >= total:
        ks = np.arange(total, dtype=np.int64)
    else:
        ks = np.sort(rng.choice(total, size=max(0, int(cap)), replace=False))
    s = np.searchsorted(cum, ks, side="right") - 1
    return s, first_partner[s] + (ks - cum[s])


class PairDataset(Dataset):
    """Random image pairs for a Siamese (contrastive) loss: ``ds[n] -> (img1, img2, y)``, y=1 same person.

    ``balanced`` alternates genuine and impostor pairs (half each); otherwise
    pairs are of two random images. People with a single image can only be in
    impostor pairs. Pairs are fixed at construction (``self.pairs``: rows of
    ``i, j, y``), so a seed gives the same pairs every epoch. ``dataset`` is an
    :class:`IdentityFolder` (or anything with ``samples`` whose ``[i]`` gives
    ``(image, label)``); ``transform`` is applied to each image.
    """

    def __init__(self, dataset, n_pairs: int, seed: int = 0, balanced: bool = True,
                 transform: Callable | None = None):
        self.dataset, self.transform = dataset, transform
        labels = _labels_of(dataset)
        rng = np.random.default_rng(seed)
        if balanced:
            n_pos = (n_pairs + 1) // 2
            pos, neg = _genuine(labels, n_pos, rng), _impostors(labels, n_pairs - n_pos, rng)
            pairs = np.empty((n_pairs, 3), dtype=np.int64)
            pairs[0::2, :2], pairs[1::2, :2] = pos, neg
            pairs[0::2, 2], pairs[1::2, 2] = 1, 0
        else:
            ij = np.stack([rng.integers(0, len(labels), n_pairs), rng.integers(0, len(labels), n_pairs)], 1)
            ij = _fix_self_pairs(ij, labels, rng)
            pairs = np.column_stack([ij, labels[ij[:, 0]] == labels[ij[:, 1]]]).astype(np.int64)
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, n: int):
        i, j, y = (int(x) for x in self.pairs[n])
        a, b = self.dataset[i][0], self.dataset[j][0]
        if self.transform:
            a, b = self.transform(a), self.transform(b)
        return a, b, y


def _genuine(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pairs of two different images of one person (people drawn by image count)."""
    groups = [np.asarray(g) for g in _group(labels).values() if len(g) >= 2]
    if n and not groups:
        raise DataError("no person has two or more images, so no genuine pairs can be formed",
                        hint="pair losses need several photos of the same person")
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    who = rng.choice(len(groups), size=n, p=sizes / sizes.sum()) if n else np.zeros(0, int)
    out = np.empty((n, 2), dtype=np.int64)
    for r, g in enumerate(who):
        out[r] = rng.choice(groups[g], 2, replace=False)
    return out


def _impostors(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pairs of images of two different people (rejection sampling, vectorised)."""
    if n and len(np.unique(labels)) < 2:
        raise DataError("need at least 2 people for impostor pairs", hint=LAYOUT_HINT)
    out = np.empty((0, 2), dtype=np.int64)
    while len(out) < n:
        ij = rng.integers(0, len(labels), size=(2 * (n - len(out)) + 8, 2))
        out = np.concatenate([out, ij[labels[ij[:, 0]] != labels[ij[:, 1]]]])
    return out[:n]


def _fix_self_pairs(ij: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Redraw the second image of pairs that are one image twice (they carry no signal)."""
    if len(labels) < 2:
        raise DataError("need at least 2 images to form pairs", hint=LAYOUT_HINT)
    while (bad := ij[:, 0] == ij[:, 1]).any():
        ij[bad, 1] = rng.integers(0, len(labels), int(bad.sum()))
    return ij
