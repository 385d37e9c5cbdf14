"""Training data: torch datasets and samplers over identity folders.

The folders themselves (layout, bad-file replacement, identity splits) live in
:mod:`facesearch.photos.folders`, pairs in :mod:`facesearch.eval.pairs`: evaluation
reads the same data without torch.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import Dataset, Sampler

from facesearch.core.errors import DataError
from facesearch.photos.folders import (
    LAYOUT_HINT, BadFileLog, IdentityFolder, Sample, SafeLoader, indices_by_label, labels_of,
)


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
        self._loader = SafeLoader(self.samples, self.bad)

    @property
    def bad_files(self) -> int:
        return len(self.bad)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        img, label = self._loader.load(index)
        return (self.transform(img) if self.transform else img), label


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
        self.groups = list(indices_by_label(self.labels).values())
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
        labels = labels_of(dataset)
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
    groups = [np.asarray(g) for g in indices_by_label(labels).values() if len(g) >= 2]
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
