"""Training-time augmentation of face images (PIL in, PIL out).

Flip, a small random crop, colour jitter and random greyscale. The output keeps
the input's aspect ratio and is left unnormalised: resizing to the model input
and normalising is the model's own preprocessing
(:mod:`facesearch.models.preprocess`), shared by training and inference, so the
two can never disagree.

The randomness comes from a private NumPy generator, not torch's global RNG, so
a seeded augmenter gives the same sequence whatever else the process does. In
DataLoader workers the generator is re-seeded from the worker's seed, so workers
do not repeat each other.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

CROP_SCALE = (0.85, 1.0)  # fraction of the image area kept
CROP_RATIO = (0.9, 1.1)  # aspect change relative to the image's own aspect
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.3, 0.3, 0.25, 0.03
GREYSCALE_P = 0.2


def make_augment(input_size: int, seed: int | None = None) -> Callable[[Image.Image], Image.Image]:
    """Return a PIL -> PIL augmenter for faces that will be fed at ``input_size``.

    ``input_size`` only bounds the work: images larger than twice it are shrunk
    first, since preprocessing would shrink them anyway. With ``seed`` the
    sequence of augmentations is reproducible; without it, it follows torch's
    seed (which the trainer sets).
    """
    return _Augment(input_size, seed)


class _Augment:
    def __init__(self, input_size: int, seed: int | None):
        self.input_size = int(input_size)
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._pid = -1

    def __call__(self, img: Image.Image) -> Image.Image:
        rng = self._generator()
        img = _shrink(img.convert("RGB"), 2 * self.input_size)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = _random_crop(img, rng)
        img = _colour_jitter(img, rng)
        if rng.random() < GREYSCALE_P:
            img = img.convert("L").convert("RGB")
        return img

    def _generator(self) -> np.random.Generator:
        # A forked DataLoader worker inherits the parent's generator: re-seed per process.
        if self._rng is None or self._pid != os.getpid():
            entropy = [] if self.seed is None else [int(self.seed)]
            info = torch.utils.data.get_worker_info()
            if info is not None:
                entropy.append(int(info.seed))
            elif self.seed is None:
                entropy.append(int(torch.initial_seed()))
            self._rng, self._pid = np.random.default_rng(entropy), os.getpid()
        return self._rng


def _shrink(img: Image.Image, max_short_side: int) -> Image.Image:
    w, h = img.size
    if min(w, h) <= max_short_side:
        return img
    f = max_short_side / min(w, h)
    return img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)


def _random_crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Crop a random box of 85-100% of the area, then resize back to the input size."""
    w, h = img.size
    area = rng.uniform(*CROP_SCALE)
    ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
    cw = min(w, max(1, round(w * np.sqrt(area * ratio))))
    ch = min(h, max(1, round(h * np.sqrt(area / ratio))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))


def _colour_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    ops = [
        lambda im: TF.adjust_brightness(im, rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS)),
        lambda im: TF.adjust_contrast(im, rng.uniform(1 - CONTRAST, 1 + CONTRAST)),
        lambda im: TF.adjust_saturation(im, rng.uniform(1 - SATURATION, 1 + SATURATION)),
        lambda im: TF.adjust_hue(im, rng.uniform(-HUE, HUE)),
    ]
    for k in rng.permutation(len(ops)):  # random order, as torchvision's ColorJitter does
        img = ops[k](img)
    return img
