"""Content photos for style transfer: any folder of photos (MS-COCO train2014 in Johnson et al.),
the embedded photos offline; the style image itself is the model's (``model.init_args.style_image``).

Batches are ``{"image": (N, 3, H, W)}`` in [0, 1]; predict batches ``{"image", "output_name"}``,
one image at its own size.

* Training: each photo resized so the short side is ``image_size``, then a random
  ``image_size`` square crop (the paper: 256x256) and optionally a horizontal flip.
* Validation / test: fixed held-out photos, resized so the short side is ``eval_size`` and
  centre-cropped to a square (deterministic, so the logged losses compare across runs).

Sources: ``train_dir`` (recursively, any image files); ``val_dir`` (default: the embedded
validation photos, :data:`~datamodules.embedded.EMBEDDED_VAL`, which no source trains on);
nothing set: :data:`~datamodules.embedded.EMBEDDED_TRAIN` trains.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset
from torchvision.transforms import v2

from datamodules.embedded import EMBEDDED_TRAIN, EMBEDDED_VAL
from datamodules.image_io import DEFAULT_MAX_PIXELS, PredictImages, list_images, read_image
from datamodules.loaders import SplitLoaders


class ContentPhotos(Dataset):
    """Photos resized so the short side is ``size``, then a ``size`` square: a random crop (and
    flip) for training, ``repeats`` samples per photo per epoch; the centre for evaluation."""

    def __init__(self, files: list[Path], size: int, train: bool, flip: bool = False, repeats: int = 1,
                 cache: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.files, self.size, self.repeats, self.max_pixels = files, size, repeats, max_pixels
        crop = v2.RandomCrop(size) if train else v2.CenterCrop(size)
        self.augment = v2.Compose([crop, v2.RandomHorizontalFlip()]) if train and flip else crop
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.files) * self.repeats

    def _resized(self, index: int) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        photo = v2.functional.resize(read_image(self.files[index], self.max_pixels), self.size, antialias=True)
        if self._cache is not None:
            self._cache[index] = photo
        return photo

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.augment(self._resized(index % len(self.files))).float().div(255)}


class StyleDataModule(SplitLoaders, LightningDataModule):
    """Content photos for training a style-transfer network, held-out photos, predict inputs.

    Args:
        train_dir: folder of content photos (e.g. ``data/coco/train2014``); ``null``: the embedded photos.
        val_dir: folder of held-out photos for validation and test; ``null``: the embedded validation photos.
        predict_path: image file or folder to stylise with ``predict`` (each at its own size).
        image_size: short side and square crop of the training photos (paper: 256).
        eval_size: short side and centre square of the validation photos.
        flip: random horizontal flip of the training crops.
        repeats: random crops per training photo per epoch (for the few embedded photos).
        cache_images: keep decoded, resized photos in memory (always for the embedded ones).
        max_pixels: refuse larger images (decompression bombs).
    """

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        predict_path: str | None = None,
        image_size: int = 256,
        eval_size: int = 256,
        flip: bool = False,
        repeats: int = 1,
        batch_size: int = 4,
        eval_batch_size: int = 4,
        num_workers: int = 0,
        cache_images: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        super().__init__()
        self.save_hyperparameters()

    def _photos(self, folder: str | None, embedded: tuple[Path, ...], size: int, train: bool) -> ContentPhotos:
        hp = self.hparams
        files = list_images(folder) if folder else list(embedded)
        return ContentPhotos(files, size, train, hp.flip, hp.repeats if train else 1,
                             cache=hp.cache_images or not folder, max_pixels=hp.max_pixels)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit":
            self.train_set = self._photos(hp.train_dir, EMBEDDED_TRAIN, hp.image_size, train=True)
        if stage in ("fit", "validate"):
            self.val_set = self._photos(hp.val_dir, EMBEDDED_VAL, hp.eval_size, train=False)
        if stage == "test":
            self.test_set = self._photos(hp.val_dir, EMBEDDED_VAL, hp.eval_size, train=False)
        if stage == "predict":
            if not hp.predict_path:
                raise ValueError("predict needs input images: set --data.init_args.predict_path to an image file or folder")
            self.predict_set = PredictImages(hp.predict_path, hp.max_pixels, key="image")
