"""Super-resolution data: HR images in, (LR, HR) pairs out, LR made by MATLAB bicubic.

Sources, all through :mod:`datamodules.image_io` (grayscale, RGBA and 16-bit files are
converted to 8-bit RGB; corrupt or non-image files are reported by name):

* the embedded default (``train_dir``/``val_dir`` unset): natural photos and textures that
  ship with scikit-image and scikit-learn, with the fixed split of :mod:`datamodules.embedded`
  (no image in both);
* any folder of HR images (e.g. DIV2K): random aligned crops, flips and 90-degree rotations;
* benchmark folders (Set5/Set14/BSD100/Urban100 style): HR images only, or HR plus an LR
  folder with the same file stems (``val_lr_dir``/``test_lr_dir``).

LR images are made with MATLAB-compatible bicubic (``imresize``, a = -0.5, antialiased) from
HR cropped to a multiple of the scale ("GTmod"), then rounded to 8 bit like the published LR
sets. Training crops take a margin around the patch before downscaling so that each LR patch
equals the matching part of the whole-image LR. With ``degradation`` (Real-ESRGAN's, see
:mod:`datamodules.degradations`) the training LR is made from each HR batch on the training
device instead, and the validation/test LR once per image with fixed seeds.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.degradations import RealESRGANDegradation
from datamodules.embedded import EMBEDDED_TRAIN, EMBEDDED_VAL
from datamodules.image_io import DEFAULT_MAX_PIXELS, ImageReadError, PredictImages, image_size, list_images, read_image
from datamodules.loaders import make_loader
from datamodules.matlab_resize import imresize


def make_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-bicubic downscale of uint8 (3, H, W) ``hr`` (H, W multiples of scale), rounded to uint8."""
    lr = imresize(hr.unsqueeze(0).double() / 255.0, scale=1.0 / scale, antialias=True)[0]
    return lr.clamp(0, 1).mul(255).round().to(torch.uint8)


def _read_hr(path: Path, scale: int, max_pixels: int) -> torch.Tensor:
    """An image cropped to a multiple of ``scale`` (uint8)."""
    return mod_crop(read_image(path, max_pixels), scale)


def _read_pair(path: Path, scale: int, max_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image cropped to a multiple of ``scale`` and its MATLAB-bicubic LR (uint8)."""
    hr = _read_hr(path, scale, max_pixels)
    return hr, make_lr(hr, scale)


#: The embedded photos ship inside packages and never change: their pairs are made once per
#: process, not again for every fit, validate and test in it (a notebook, the test suite).
_embedded_pair = functools.cache(_read_pair)


def _hr_and_lr(path: Path, scale: int, max_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    embedded = path in EMBEDDED_TRAIN or path in EMBEDDED_VAL
    return (_embedded_pair if embedded else _read_pair)(path, scale, max_pixels)


def mod_crop(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (C, H, W) to a multiple of ``scale`` (top-left anchored, as "GTmod" in the papers)."""
    height, width = image.shape[-2:]
    return image[..., : height - height % scale, : width - width % scale]


def _to_float(image: torch.Tensor) -> torch.Tensor:
    return image.float().div(255.0)


#: Crops redrawn at most this many times while flatter than ``min_patch_std`` (the last one is kept).
FLAT_PATCH_RETRIES = 10


class SRTrainDataset(Dataset):
    """Random aligned (LR, HR) patches from HR images, ``repeats`` patches per image per epoch.

    ``min_patch_std`` (8-bit units) redraws nearly flat crops (sky, black borders), which teach
    an x4 model nothing that bicubic does not already do. With ``with_lr=False`` a sample is the
    HR patch and a ``seed`` for the degradation that makes its LR on the training device.
    """

    def __init__(
        self,
        files: list[Path],
        scale: int,
        patch_size: int,
        repeats: int,
        augment: bool,
        cache: bool,
        max_pixels: int,
        min_patch_std: float = 0.0,
        with_lr: bool = True,
    ):
        self.files, self.scale, self.patch_size, self.min_patch_std = files, scale, patch_size, min_patch_std
        self.with_lr = with_lr
        self.repeats, self.augment, self.max_pixels = repeats, augment, max_pixels
        for path in files:
            height, width = image_size(path, max_pixels)
            if min(height, width) < patch_size:
                raise ImageReadError(
                    path, f"image is {width}x{height}, smaller than the HR crop data.patch_size={patch_size}"
                )
        # Cached: each image decoded and downscaled once (HR mod-cropped, whole-image LR), so a
        # sample is two crops; uncached: decoded per sample and only the crop is downscaled.
        self._cache = [self._pair(p) for p in files] if cache else None

    def __len__(self) -> int:
        return len(self.files) * self.repeats

    def _pair(self, path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.with_lr:
            return _hr_and_lr(path, self.scale, self.max_pixels)
        return _read_hr(path, self.scale, self.max_pixels), None

    def __getitem__(self, index: int) -> dict:
        # The crop and augmentation depend only on the current torch seed (per epoch, per worker)
        # and the index, so the same sample comes out whichever process or rank draws it.
        rng = random.Random(torch.initial_seed() * 1_000_003 + index)
        image = index % len(self.files)
        if self._cache is not None:
            hr_full, lr_full = self._cache[image]
        else:
            hr_full, lr_full = _read_hr(self.files[image], self.scale, self.max_pixels), None
        s, lr_patch = self.scale, self.patch_size // self.scale
        lr_h, lr_w = hr_full.shape[1] // s, hr_full.shape[2] // s
        for _ in range(FLAT_PATCH_RETRIES):
            top, left = rng.randint(0, lr_h - lr_patch), rng.randint(0, lr_w - lr_patch)
            hr = hr_full[:, top * s : (top + lr_patch) * s, left * s : (left + lr_patch) * s]
            if hr.float().std() >= self.min_patch_std:
                break
        if not self.with_lr:
            if self.augment:
                hr = _augment(hr, hr, rng)[1]
            return {"hr": _to_float(hr), "seed": rng.getrandbits(62)}
        if lr_full is not None:
            lr = lr_full[:, top : top + lr_patch, left : left + lr_patch]
        else:
            # Margin in LR pixels: covers the antialiased bicubic support (2 LR px) with room to
            # spare, so the patch equals the matching part of the whole-image LR.
            margin = 4
            t0, l0 = max(top - margin, 0), max(left - margin, 0)
            t1, l1 = min(top + lr_patch + margin, lr_h), min(left + lr_patch + margin, lr_w)
            lr = make_lr(hr_full[:, t0 * s : t1 * s, l0 * s : l1 * s], s)
            lr = lr[:, top - t0 : top - t0 + lr_patch, left - l0 : left - l0 + lr_patch]
        if self.augment:
            lr, hr = _augment(lr, hr, rng)
        return {"lr": _to_float(lr), "hr": _to_float(hr)}


def _augment(lr: torch.Tensor, hr: torch.Tensor, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random horizontal flip, vertical flip and 90-degree rotation on both images."""
    if rng.random() < 0.5:
        lr, hr = lr.flip(-1), hr.flip(-1)
    if rng.random() < 0.5:
        lr, hr = lr.flip(-2), hr.flip(-2)
    if rng.random() < 0.5:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    return lr.contiguous(), hr.contiguous()


class SREvalDataset(Dataset):
    """Whole images: HR cropped to a multiple of the scale, LR read from ``lr_dir`` or made by
    bicubic, or by ``degradation``: ``copies`` degraded LR per image, sample ``index`` with the
    seed ``degradation_seed + index``."""

    def __init__(
        self,
        files: list[Path],
        scale: int,
        lr_dir: str | None,
        max_pixels: int,
        degradation: RealESRGANDegradation | None = None,
        degradation_seed: int = 0,
        copies: int = 1,
    ):
        self.files, self.scale, self.max_pixels = files, scale, max_pixels
        self.degradation, self.degradation_seed = degradation, degradation_seed
        self.copies = copies if degradation is not None and not lr_dir else 1
        self.lr_files = [_matching_lr(path, Path(lr_dir)) for path in files] if lr_dir else None
        for path in files:
            height, width = image_size(path, max_pixels)
            if min(height, width) < 2 * scale:
                raise ImageReadError(path, f"image is {width}x{height}, too small for x{scale} evaluation")
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.files) * self.copies

    def __getitem__(self, index: int) -> dict:
        if index not in self._cache:
            path = self.files[index % len(self.files)]
            if self.lr_files is None and self.degradation is None:
                hr, lr = _hr_and_lr(path, self.scale, self.max_pixels)
            elif self.lr_files is None:
                hr = _read_hr(path, self.scale, self.max_pixels)
                lr = self.degradation(_to_float(hr).unsqueeze(0), [self.degradation_seed + index], self.scale)[0]
                lr = lr.mul(255).round().to(torch.uint8)
            else:
                hr = _read_hr(path, self.scale, self.max_pixels)
                lr = read_image(self.lr_files[index], self.max_pixels)
                expected = (hr.shape[1] // self.scale, hr.shape[2] // self.scale)
                if tuple(lr.shape[1:]) != expected:
                    raise ImageReadError(
                        self.lr_files[index],
                        f"LR size {lr.shape[2]}x{lr.shape[1]} does not match HR {path} at x{self.scale} "
                        f"(expected {expected[1]}x{expected[0]})",
                    )
            self._cache[index] = {"lr": lr, "hr": hr, "path": str(path)}
        item = self._cache[index]
        return {"lr": _to_float(item["lr"]), "hr": _to_float(item["hr"]), "path": item["path"]}


def _matching_lr(hr_path: Path, lr_dir: Path) -> Path:
    """The LR file with the same stem (optionally with an ``x4``-style suffix, as in DIV2K)."""
    candidates = [p for p in list_images(lr_dir) if p.stem == hr_path.stem or p.stem.rsplit("x", 1)[0] == hr_path.stem]
    if not candidates:
        raise ImageReadError(hr_path, f"no LR image with the same stem in {lr_dir}")
    return candidates[0]


class SuperResolutionDataModule(LightningDataModule):
    """(LR, HR) pairs for training and evaluation, LR images for predict.

    Args:
        train_dir: folder of HR training images; ``None`` = embedded scikit-image photos.
        val_dir: folder of HR validation images; ``None`` = embedded validation photos.
        test_dir: folder of HR test images; ``None`` = same as validation.
        val_lr_dir: optional LR folder matching ``val_dir`` by file stem (else LR is generated).
        test_lr_dir: optional LR folder matching ``test_dir`` by file stem.
        predict_path: image file or folder to upscale with ``predict``.
        scale: upscaling factor (2, 3 or 4).
        patch_size: HR training crop size (a multiple of ``scale``).
        repeats: random crops drawn from each training image per epoch.
        cache_images: keep decoded training images, and their whole-image LR, in memory (off for
            large sets like DIV2K).
        max_pixels: refuse images with more pixels than this (decompression bombs).
        min_patch_std: redraw training crops whose HR standard deviation (8-bit units) is
            below this, up to 10 times (0: off).
        degradation: how LR images are made instead of bicubic (e.g.
            :class:`~datamodules.degradations.RealESRGANDegradation`): training LR on the training
            device from each batch, validation/test LR (without an LR folder) once per image, with
            the seeds ``degradation_seed``, ``degradation_seed + 1``, ... so that every run
            validates on the same degraded images.
        degradation_seed: first seed of the degraded validation/test images.
        degraded_copies: degraded LR versions of each validation/test image (the degradations
            vary a lot, so a few per image make the average steadier).
    """

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        val_lr_dir: str | None = None,
        test_lr_dir: str | None = None,
        predict_path: str | None = None,
        scale: int = 4,
        patch_size: int = 128,
        repeats: int = 1,
        augment: bool = True,
        batch_size: int = 16,
        num_workers: int = 0,
        cache_images: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_patch_std: float = 0.0,
        degradation: RealESRGANDegradation | None = None,
        degradation_seed: int = 0,
        degraded_copies: int = 1,
    ):
        super().__init__()
        self.degradation = degradation
        if patch_size % scale:
            raise ValueError(f"data.patch_size={patch_size} must be a multiple of data.scale={scale}")
        self.save_hyperparameters()

    def _files(self, folder: str | None, embedded: tuple[Path, ...]) -> list[Path]:
        return list_images(folder) if folder else list(embedded)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit":
            self.train_set = SRTrainDataset(
                self._files(hp.train_dir, EMBEDDED_TRAIN), hp.scale, hp.patch_size, hp.repeats,
                hp.augment, hp.cache_images, hp.max_pixels, hp.min_patch_std, with_lr=self.degradation is None,
            )
        degraded = (self.degradation, hp.degradation_seed, hp.degraded_copies)
        if stage in ("fit", "validate"):
            self.val_set = SREvalDataset(
                self._files(hp.val_dir, EMBEDDED_VAL), hp.scale, hp.val_lr_dir, hp.max_pixels, *degraded
            )
        if stage == "test":
            test_dir, test_lr_dir = (hp.test_dir, hp.test_lr_dir) if hp.test_dir else (hp.val_dir, hp.val_lr_dir)
            self.test_set = SREvalDataset(self._files(test_dir, EMBEDDED_VAL), hp.scale, test_lr_dir, hp.max_pixels, *degraded)
        if stage == "predict":
            if not hp.predict_path:
                raise ValueError("predict needs input images: set --data.predict_path to an image file or folder")
            self.predict_set = PredictImages(hp.predict_path, hp.max_pixels, key="lr")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Training batches from the degradation arrive as HR and seeds: their LR is made here,
        batched on the training device."""
        if "lr" not in batch and "seed" in batch:
            batch = {**batch, "lr": self.degradation(batch["hr"], batch["seed"].tolist(), self.hparams.scale)}
        return batch

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.train_set, hp.batch_size, shuffle=True, num_workers=hp.num_workers, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, 1, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        return make_loader(self.test_set, 1, num_workers=self.hparams.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self.predict_set, 1, num_workers=self.hparams.num_workers)
