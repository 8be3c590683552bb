"""Embedded segmentation data: handwritten digits placed on textured photos, no download.

Everything comes from files that ship inside installed packages:

* digits: scikit-learn ``load_digits()`` (1797 handwritten digits, 8x8, 17 gray levels), split
  by position into disjoint pools, so validation and test scenes show handwriting that
  training never saw: train = first 70 %, val = next 15 %, test = last 15 %;
* backgrounds: scikit-image ``skimage/data`` pictures
  (:data:`datamodules.embedded.SEGMENTATION_BACKGROUNDS`: textures brick, grass, gravel; photos
  coffee, astronaut, rocket, motorcycle_left, hubble_deep_field, ihc, camera, moon), read with
  :func:`datamodules.image_io.read_image`. Training scenes crop the top 70 % of each picture's
  rows, validation and test scenes the bottom 30 %.

Recipe for one ``image_size`` x ``image_size`` scene (NumPy generator seeded with
``seed`` + a per-split offset, so every run and every DDP rank builds the same scenes):

1. background: a random square crop (side between ``image_size`` and twice that, capped by the
   picture) of a random picture, resized to ``image_size``, contrast scaled by U(0.5, 1), each
   channel multiplied by U(0.6, 1.2);
2. ``digits_per_scene`` digits (uniform class among ``digits``, random writer from the split's
   pool), each upscaled (bilinear) to a random side in ``digit_size`` and placed at a random
   spot that does not overlap the boxes of the digits already placed (a digit that finds no
   free spot in 50 tries is left out);
3. each digit is alpha-blended in a random colour whose luminance differs from the local
   background by at least 0.35, with alpha = ink / 16;
4. Gaussian pixel noise (sigma 0.02), then quantisation to uint8.

The mask holds, per pixel, ``1 + digits.index(d)`` where the digit ``d`` has alpha >= 0.5,
and 0 (background) elsewhere. Class names: ``background``, ``digit_<d>`` for each ``d``.
Scenes are generated once per process and kept in memory (a few MB).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset
from torchvision import tv_tensors

from datamodules.embedded import SEGMENTATION_BACKGROUNDS
from datamodules.image_io import read_image
from datamodules.segmentation import SegmentationDataModule

#: (first, last) fraction of the digit pool and of each background's rows used by each split.
DIGIT_POOLS = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}
BACKGROUND_ROWS = {"train": (0.0, 0.7), "val": (0.7, 1.0), "test": (0.7, 1.0)}
SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@lru_cache(maxsize=1)
def _backgrounds() -> tuple[np.ndarray, ...]:
    return tuple(read_image(path).permute(1, 2, 0).numpy().astype(np.float32) / 255.0 for path in SEGMENTATION_BACKGROUNDS)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased) resize of an (H, W, C) float array to (size, size, C)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).numpy()


def _background(rng: np.random.Generator, split: str, size: int) -> np.ndarray:
    pictures = _backgrounds()
    picture = pictures[rng.integers(len(pictures))]
    first, last = BACKGROUND_ROWS[split]
    rows = picture[int(first * picture.shape[0]) : int(last * picture.shape[0])]
    max_side = min(rows.shape[0], rows.shape[1], 2 * size)
    side = int(rng.integers(min(size, max_side), max_side + 1))
    top = int(rng.integers(rows.shape[0] - side + 1))
    left = int(rng.integers(rows.shape[1] - side + 1))
    crop = _resize(rows[top : top + side, left : left + side], size)
    mean = crop.mean(axis=(0, 1), keepdims=True)
    crop = mean + (crop - mean) * rng.uniform(0.5, 1.0)
    return np.clip(crop * rng.uniform(0.6, 1.2, size=3).astype(np.float32), 0.0, 1.0)


def _contrasting_colour(rng: np.random.Generator, background_luma: float) -> np.ndarray:
    for _ in range(100):
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        if abs(float(colour @ LUMA) - background_luma) >= 0.35:
            return colour
    return np.full(3, 0.0 if background_luma > 0.5 else 1.0, dtype=np.float32)


@lru_cache(maxsize=8)
def make_digit_scenes(
    split: str,
    num_scenes: int,
    seed: int,
    image_size: int,
    digits: tuple[int, ...],
    digits_per_scene: tuple[int, int],
    digit_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``num_scenes`` scenes: uint8 images (N, 3, S, S) and uint8 masks (N, S, S)."""
    bunch = load_digits()
    first, last = DIGIT_POOLS[split]
    pool = np.arange(int(first * len(bunch.target)), int(last * len(bunch.target)))
    by_class = {d: pool[bunch.target[pool] == d] for d in digits}
    ink = bunch.images.astype(np.float32) / 16.0
    rng = np.random.default_rng(seed + SPLIT_SEED_OFFSET[split])

    images = np.empty((num_scenes, 3, image_size, image_size), dtype=np.uint8)
    masks = np.zeros((num_scenes, image_size, image_size), dtype=np.uint8)
    for n in range(num_scenes):
        scene = _background(rng, split, image_size)
        boxes: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(digits_per_scene[0], digits_per_scene[1] + 1))):
            label = int(rng.integers(len(digits)))
            sample = int(rng.choice(by_class[digits[label]]))
            side = int(rng.integers(digit_size[0], digit_size[1] + 1))
            for _ in range(50):
                top, left = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
                if all(top >= t + s or t >= top + side or left >= l + s or l >= left + side for t, l, s in boxes):
                    break
            else:
                continue
            boxes.append((top, left, side))
            alpha = _resize(ink[sample][:, :, None], side)[:, :, 0].clip(0.0, 1.0)
            region = scene[top : top + side, left : left + side]
            colour = _contrasting_colour(rng, float(region.mean(axis=(0, 1)) @ LUMA))
            region[:] = region * (1.0 - alpha[:, :, None]) + colour * alpha[:, :, None]
            masks[n, top : top + side, left : left + side][alpha >= 0.5] = label + 1
        scene = scene + rng.normal(0.0, 0.02, size=scene.shape).astype(np.float32)
        images[n] = np.round(np.clip(scene, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(images), torch.from_numpy(masks)


class DigitScenes(Dataset):
    """In-memory scenes as a dataset of ``{"image", "mask", "path"}`` samples."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, split: str, transform):
        self.images = images
        self.masks = masks
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        sample = {"image": tv_tensors.Image(self.images[index]), "mask": tv_tensors.Mask(self.masks[index])}
        return {**self.transform(sample), "path": f"embedded-{self.split}-{index:05d}"}


class EmbeddedSegmentationDataModule(SegmentationDataModule):
    """Digit scenes generated from data shipped in scikit-learn and scikit-image (see module docs)."""

    def __init__(
        self,
        digits: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
        image_size: int = 64,
        num_train: int = 2048,
        num_val: int = 256,
        num_test: int = 256,
        digits_per_scene: tuple[int, int] = (1, 3),
        digit_size: tuple[int, int] = (20, 32),
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not set(digits) <= set(range(10)) or len(set(digits)) != len(digits) or not digits:
            raise ValueError(f"digits must be distinct values in 0..9, got {list(digits)}")
        if not 4 <= digit_size[0] <= digit_size[1] <= image_size:
            raise ValueError(f"digit_size {digit_size} must satisfy 4 <= min <= max <= image_size ({image_size})")
        self.digits = tuple(int(d) for d in digits)
        self.image_size = image_size
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.digits_per_scene = tuple(digits_per_scene)
        self.digit_size = tuple(digit_size)
        self.seed = seed

    @property
    def class_names(self) -> list[str]:
        return ["background"] + [f"digit_{d}" for d in self.digits]

    def scenes(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return make_digit_scenes(
            split, self.sizes[split], self.seed, self.image_size, self.digits, self.digits_per_scene, self.digit_size
        )

    def make_dataset(self, split: str) -> Dataset:
        return DigitScenes(*self.scenes(split), split=split, transform=self.transforms(train=split == "train"))
