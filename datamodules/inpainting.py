"""Inpainting data: images with hole masks (**1 = hole**), in [0, 1].

Batches are ``{"image": (N, 3, H, W), "mask": (N, 1, H, W)}`` (predict adds ``output_name``).

Sources, all decoded by :mod:`datamodules.image_io` (bad files raise an error naming them):

* the embedded default (no folder set): the scikit-image photos with the fixed split of the
  super-resolution task (:data:`~datamodules.embedded.EMBEDDED_TRAIN` /
  :data:`~datamodules.embedded.EMBEDDED_VAL`);
* any folders of images (``train_dir``, ``val_dir``, ``test_dir``), e.g. CelebA-HQ 256;
* Places365-Standard, 256x256 (``places365_root``), through ``torchvision.datasets.Places365``
  (``download: true`` fetches it, about 26 GB).

Training draws a random crop (after an optional resize of the short side) and a random
horizontal flip per image, ``repeats`` times per epoch, each with a fresh mask from
``train_masks``. Evaluation is fixed, so runs compare: ``eval_crops_per_image`` crops per image
at positions drawn from ``eval_seed`` and the image index, each with a mask drawn from
``eval_masks`` with the same seed; or, with ``val_mask_dir``/``test_mask_dir``, the mask file with
the same name stem, and the centre crop of image and mask. Predict inpaints whole images with
the mask file of the same name stem from ``predict_mask_dir``; masks are thresholded at 0.5
(see :mod:`datamodules.masks`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2

from datamodules.embedded import EMBEDDED_TRAIN, EMBEDDED_VAL
from datamodules.image_io import DEFAULT_MAX_PIXELS, ImageReadError, image_size, list_images, predict_inputs, read_image
from datamodules.loaders import make_loader
from datamodules.masks import MaskGenerator, read_hole_mask

PLACES365_TRAIN, PLACES365_VAL = "train-standard", "val"


class _ImageSource:
    """Decoded uint8 images, short side resized to ``resize_short_side`` if set; optionally cached."""

    def __init__(self, files: list[Path], crop_size: int, resize_short_side: int | None, cache: bool, max_pixels: int,
                 check_sizes: bool = True):
        self.files, self.crop_size, self.max_pixels = files, crop_size, max_pixels
        self.resize = v2.Resize(resize_short_side, antialias=True) if resize_short_side else None
        if check_sizes:
            for path in files:
                self.check_size(path, image_size(path, max_pixels))
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def check_size(self, path: Path, size: tuple[int, int]) -> None:
        height, width = size
        if self.resize is None and min(height, width) < self.crop_size:
            raise ImageReadError(
                path, f"image is {width}x{height}, smaller than the crop data.crop_size={self.crop_size} "
                "(set data.resize_short_side to enlarge small images)"
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image = read_image(self.files[index], self.max_pixels)
        self.check_size(self.files[index], tuple(image.shape[1:]))
        if self.resize is not None:
            image = self.resize(image)
        if self._cache is not None:
            self._cache[index] = image
        return image


class RandomCropsDataset(Dataset):
    """Random crops with fresh random masks, ``repeats`` per image per epoch."""

    def __init__(self, source: _ImageSource, masks: MaskGenerator, repeats: int):
        self.source, self.masks, self.repeats = source, masks, repeats
        crop_size = source.crop_size
        self.transform = v2.Compose([v2.RandomCrop(crop_size), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.source) * self.repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.transform(self.source[index % len(self.source)])
        # Drawn from torch's generator, so seed_everything makes the masks reproducible.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        mask = self.masks(image.shape[1], image.shape[2], rng)
        return {"image": image.float().div(255), "mask": mask}


class FixedCropsDataset(Dataset):
    """``crops_per_image`` crops per image with masks, all fixed by ``seed`` and the indices."""

    def __init__(self, source: _ImageSource, masks: MaskGenerator, crops_per_image: int, seed: int):
        self.source, self.masks, self.crops_per_image, self.seed = source, masks, crops_per_image, seed

    def __len__(self) -> int:
        return len(self.source) * self.crops_per_image

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image_index, crop_index = divmod(index, self.crops_per_image)
        image = self.source[image_index]
        rng = np.random.default_rng([self.seed, image_index, crop_index])
        size = self.source.crop_size
        top = int(rng.integers(0, image.shape[1] - size + 1))
        left = int(rng.integers(0, image.shape[2] - size + 1))
        crop = image[:, top : top + size, left : left + size]
        return {"image": crop.float().div(255), "mask": self.masks(size, size, rng)}


def mask_index(mask_dir: str | Path) -> dict[str, Path]:
    """Mask files under ``mask_dir`` by relative path without suffix (``a/b.png`` -> ``a/b``)."""
    root = Path(mask_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: mask folder not found")
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in list_images(root)}


def matching_mask(image: Path, image_root: Path, masks: dict[str, Path], mask_dir: str | Path) -> Path:
    """The mask with the image's relative name stem; an error naming both when there is none."""
    key = image.relative_to(image_root).with_suffix("").as_posix()
    if key not in masks:
        raise ImageReadError(image, f"no mask for this image: expected {Path(mask_dir) / key}.png (any image suffix)")
    return masks[key]


def load_pair(image_path: Path, mask_path: Path, max_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 image and binary mask of the same size; an error naming both files otherwise."""
    image, mask = read_image(image_path, max_pixels), read_hole_mask(mask_path, max_pixels)
    if image.shape[1:] != mask.shape[1:]:
        raise ImageReadError(
            mask_path, f"mask is {mask.shape[2]}x{mask.shape[1]} but its image {image_path} is "
            f"{image.shape[2]}x{image.shape[1]}; they must have the same size"
        )
    return image, mask


def _root_of(path: Path) -> Path:
    return path if path.is_dir() else path.parent


class MaskFileDataset(Dataset):
    """Images paired with mask files (same relative name stem); centre-cropped to ``crop_size``,
    or whole images when ``crop_size`` is ``None`` (predict)."""

    def __init__(self, image_path: str | Path, mask_dir: str | Path, crop_size: int | None, max_pixels: int,
                 files: list[Path] | None = None):
        image_root = _root_of(Path(image_path))
        if Path(mask_dir).resolve() == image_root.resolve():
            raise ValueError(f"{mask_dir}: the mask folder must not be the image folder (masks would be read as images)")
        masks = mask_index(mask_dir)

        def pair(image: Path) -> tuple[Path, Path]:
            return image, matching_mask(image, image_root, masks, mask_dir)

        if files is None and crop_size is None:  # predict: every pair is read before anything is written
            images = [f for f, _ in predict_inputs(image_path, max_pixels, check=lambda f: load_pair(*pair(f), max_pixels))]
        else:
            images = files if files is not None else list_images(image_path)
        self.pairs = [pair(path) for path in images]
        self.image_root, self.crop_size, self.max_pixels = image_root, crop_size, max_pixels
        # Inputs of a predict run: the writer refuses to overwrite any of them.
        self.files = [path for pair in self.pairs for path in pair]
        if crop_size is not None:
            for image_path, _ in self.pairs:
                height, width = image_size(image_path, max_pixels)
                if min(height, width) < crop_size:
                    raise ImageReadError(image_path, f"image is {width}x{height}, smaller than data.crop_size={crop_size}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, mask_path = self.pairs[index]
        image, mask = load_pair(image_path, mask_path, self.max_pixels)
        if self.crop_size is not None:
            image, mask = v2.functional.center_crop(image, self.crop_size), v2.functional.center_crop(mask, self.crop_size)
        return {
            "image": image.float().div(255),
            "mask": mask,
            "output_name": image_path.relative_to(self.image_root).with_suffix(".png").as_posix(),
        }


class InpaintingDataModule(LightningDataModule):
    """Images with hole masks for training, fixed evaluation, and predict from mask files.

    Args:
        train_masks: hole generator for training (e.g. :class:`~datamodules.masks.MaskMixture`).
        eval_masks: hole generator for validation/test without a mask folder, drawn with
            ``eval_seed`` (e.g. ``LamaMasks`` ``medium``).
        train_dir / val_dir / test_dir: image folders; unset = embedded photos (test = validation).
        val_mask_dir / test_mask_dir: masks for the validation/test images (same name stem)
            instead of generated ones.
        predict_path: image file or folder to inpaint; ``predict_mask_dir``: its masks (same stem).
        places365_root: use Places365-Standard 256x256 (train-standard / val) from this folder.
        download: download Places365 into ``places365_root`` if it is not there.
        crop_size: side of the square training and evaluation crops.
        resize_short_side: resize images so the short side has this length before cropping
            (``null``: native resolution).
        repeats: random crops per training image per epoch.
        eval_crops_per_image: fixed crops per validation/test image (generated masks only).
        val_limit: use a fixed random subset of this many validation images (``null``: all).
        eval_seed: seed of the evaluation crops and masks.
        cache_images: keep decoded images in memory (off for large folders).
        max_pixels: refuse larger images (decompression bombs).
    """

    def __init__(
        self,
        train_masks: MaskGenerator,
        eval_masks: MaskGenerator,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        val_mask_dir: str | None = None,
        test_mask_dir: str | None = None,
        predict_path: str | None = None,
        predict_mask_dir: str | None = None,
        places365_root: str | None = None,
        download: bool = False,
        crop_size: int = 256,
        resize_short_side: int | None = None,
        repeats: int = 1,
        eval_crops_per_image: int = 1,
        val_limit: int | None = None,
        eval_seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        cache_images: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        super().__init__()
        if places365_root and (train_dir or val_dir):
            raise ValueError("set either data.places365_root or data.train_dir/val_dir, not both")
        if resize_short_side is not None and resize_short_side < crop_size:
            raise ValueError(f"data.resize_short_side={resize_short_side} is smaller than data.crop_size={crop_size}")
        self.train_masks, self.eval_masks = train_masks, eval_masks
        self.save_hyperparameters(ignore=["train_masks", "eval_masks"])

    # ----------------------------------------------------------------- file lists
    def _places365(self, split: str) -> list[Path]:
        root = self.hparams.places365_root
        try:
            dataset = datasets.Places365(root, split=split, small=True, download=False)
        except RuntimeError as err:
            raise RuntimeError(
                f"Places365 ({split}) not found in data.places365_root={root!r} ({err}); set data.download=true "
                "to download it there"
            ) from None
        if not Path(dataset.images_dir).is_dir():
            raise FileNotFoundError(f"{dataset.images_dir}: Places365 images missing; set data.download=true")
        return [Path(file) for file, _ in dataset.imgs]

    def prepare_data(self) -> None:
        root = self.hparams.places365_root
        if root and self.hparams.download:
            for split in (PLACES365_TRAIN, PLACES365_VAL):
                images_dir = Path(root) / ("data_256_standard" if split == PLACES365_TRAIN else "val_256")
                if not images_dir.is_dir():
                    datasets.Places365(root, split=split, small=True, download=True)

    def _train_files(self) -> list[Path]:
        hp = self.hparams
        if hp.places365_root:
            return self._places365(PLACES365_TRAIN)
        return list_images(hp.train_dir) if hp.train_dir else list(EMBEDDED_TRAIN)

    def _val_files(self, limit: int | None) -> list[Path]:
        hp = self.hparams
        if hp.places365_root:
            files = self._places365(PLACES365_VAL)
        else:
            files = list_images(hp.val_dir) if hp.val_dir else list(EMBEDDED_VAL)
        if limit is not None and limit < len(files):
            keep = np.random.default_rng(hp.eval_seed).choice(len(files), size=limit, replace=False)
            files = [files[i] for i in sorted(keep)]
        return files

    # ----------------------------------------------------------------- datasets
    def _source(self, files: list[Path]) -> _ImageSource:
        hp = self.hparams
        return _ImageSource(files, hp.crop_size, hp.resize_short_side, hp.cache_images, hp.max_pixels,
                            check_sizes=not hp.places365_root)

    def _eval_set(self, files: list[Path], image_dir: str | None, mask_dir: str | None) -> Dataset:
        hp = self.hparams
        if mask_dir:
            if not image_dir:
                raise ValueError("evaluation mask folders need the matching image folder (data.val_dir / data.test_dir)")
            return MaskFileDataset(image_dir, mask_dir, hp.crop_size, hp.max_pixels, files=files)
        return FixedCropsDataset(self._source(files), self.eval_masks, hp.eval_crops_per_image, hp.eval_seed)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit":
            self.train_set = RandomCropsDataset(self._source(self._train_files()), self.train_masks, hp.repeats)
        if stage in ("fit", "validate"):
            self.val_set = self._eval_set(self._val_files(hp.val_limit), hp.val_dir, hp.val_mask_dir)
        if stage == "test":
            if hp.test_dir:
                self.test_set = self._eval_set(list_images(hp.test_dir), hp.test_dir, hp.test_mask_dir)
            else:
                self.test_set = self._eval_set(self._val_files(None), hp.val_dir, hp.test_mask_dir or hp.val_mask_dir)
        if stage == "predict":
            if not hp.predict_path or not hp.predict_mask_dir:
                raise ValueError(
                    "predict needs images and masks: set --data.predict_path (image file or folder) and "
                    "--data.predict_mask_dir (mask files with the same name stems, 1/white = hole)"
                )
            self.predict_set = MaskFileDataset(hp.predict_path, hp.predict_mask_dir, None, hp.max_pixels)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return make_loader(dataset, batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers, drop_last=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, 1, shuffle=False)
