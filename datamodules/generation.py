"""Unconditional image data for the generative tasks (GAN, VAE): images in [-1, 1], no labels.

Datasets and splits (``val_size`` images, drawn with ``seed``, never also in train):

* ``digits`` (default, embedded, no download): scikit-learn's 1797 handwritten 8x8 digits,
  17 gray levels scaled to [0, 1] and resized bilinearly to ``image_size``. Validation is a
  seeded ``val_size`` subset (default 297, leaving 1500 for training); test = validation.
* ``mnist``, ``fashion_mnist``, ``cifar10``: validation is a seeded subset of the official
  training split, test is the official test split.
* ``celeba``: the 64x64 recipe (center crop 178, resize); validation is a seeded subset of
  the official ``valid`` split, test is the official ``test`` split.
* ``folder``: every image under ``root`` (decoded by :mod:`datamodules.image_io`, so bad files
  raise an error naming the file), resized on the short side and center-cropped; test =
  validation.

``train_size`` keeps only that many training images (a seeded subset, the same for every run with
the same ``seed``): the few-shot setting of data-efficient GAN papers (e.g. 100-shot).

Batches are ``{"image": (N, C, H, W) float in [-1, 1]}``. For predict, ``predict_path`` gives
``{"image", "path"}`` batches of those files (VAE reconstructions and interpolations);
without it, predict yields ``num_predict`` seed indices ``{"seed": int}`` for seeded sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from datamodules.image_io import list_images, read_image
from datamodules.loaders import make_loader

DatasetName = Literal["digits", "mnist", "fashion_mnist", "cifar10", "celeba", "folder"]

_TORCHVISION = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}
_NATURAL_CHANNELS = {"digits": 1, "mnist": 1, "fashion_mnist": 1, "cifar10": 3, "celeba": 3, "folder": 3}


def dataset_channels(channels: int | None, dataset: str) -> int | None:
    """The channels the data gives: ``channels``, or the dataset's own when it is ``None``."""
    return channels or _NATURAL_CHANNELS.get(dataset)


#: CelebA-64 recipe (DCGAN/pythae): the central 178x178 square holds the face.
CELEBA_CROP = 178


def load_digits_tensor(image_size: int) -> torch.Tensor:
    """The 1797 scikit-learn digits as (1797, 1, image_size, image_size) floats in [-1, 1]."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float().div(16.0).unsqueeze(1)
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1).mul(2).sub(1)


class TensorImages(Dataset):
    """Images held in memory as one tensor (the embedded digits)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index]}


class ImagesOnly(Dataset):
    """Drops the labels of a torchvision ``(image, target)`` dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.dataset[index][0]}


class ImageFiles(Dataset):
    """Image files decoded by ``image_io`` (errors name the file); ``files`` protects them in predict."""

    def __init__(self, files: list[Path], transform: v2.Transform, with_path: bool = False):
        self.files = files
        self.transform = transform
        self.with_path = with_path

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.transform(read_image(self.files[index]))}
        if self.with_path:
            item["path"] = str(self.files[index])
        return item


class Seeds(Dataset):
    """``{"seed": i}`` for i in range(n): predict draws sample i from a generator seeded with i."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"seed": index}


class GenerationDataModule(LightningDataModule):
    """Images in [-1, 1] for unconditional generation; see the module docstring for splits.

    Args:
        dataset: which data; ``digits`` is embedded and needs no download.
        root: download/cache folder of the torchvision datasets, or the image folder for ``folder``.
        download: let torchvision download a missing dataset into ``root``.
        image_size: side of the square images fed to the model.
        channels: 1 or 3; ``None`` keeps the dataset's own (1 for digits/MNIST/Fashion-MNIST).
        val_size: number of validation images (seeded subset, see the module docstring).
        seed: seed of the train/validation split and of the ``train_size`` subset.
        train_size: train on this many images of the training split only; ``None`` = all.
        predict_path: image file or folder to reconstruct in predict; ``None`` predicts from seeds.
        num_predict: number of seeds predict yields when ``predict_path`` is not set.
    """

    def __init__(
        self,
        dataset: DatasetName = "digits",
        root: str = "data",
        download: bool = False,
        image_size: int = 32,
        channels: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int = 297,
        seed: int = 0,
        train_size: int | None = None,
        predict_path: str | None = None,
        num_predict: int = 64,
    ):
        super().__init__()
        if dataset not in _NATURAL_CHANNELS:
            raise ValueError(f"data.dataset={dataset!r}: expected one of {sorted(_NATURAL_CHANNELS)}")
        if channels not in (None, 1, 3):
            raise ValueError(f"data.channels={channels}: expected 1, 3 or null (the dataset's own)")
        self.dataset = dataset
        self.root = root
        self.download = download
        self.image_size = image_size
        self.channels = dataset_channels(channels, dataset)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.seed = seed
        self.train_size = train_size
        self.predict_path = predict_path
        self.num_predict = num_predict
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None

    def file_transform(self) -> v2.Transform:
        """uint8 (3, H, W) from ``image_io`` -> resized, center-cropped, [-1, 1], ``channels``."""
        return v2.Compose(
            [
                v2.Resize(self.image_size, antialias=True),
                v2.CenterCrop(self.image_size),
                v2.Grayscale(1) if self.channels == 1 else v2.Identity(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.5] * self.channels, [0.5] * self.channels),
            ]
        )

    def torchvision_transform(self) -> v2.Transform:
        crop = [v2.CenterCrop(CELEBA_CROP)] if self.dataset == "celeba" else []
        natural = _NATURAL_CHANNELS[self.dataset]
        convert = [] if natural == self.channels else [v2.RGB() if self.channels == 3 else v2.Grayscale(1)]
        return v2.Compose(
            [
                v2.ToImage(),
                *crop,
                v2.Resize(self.image_size, antialias=True),
                v2.CenterCrop(self.image_size),
                *convert,
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.5] * self.channels, [0.5] * self.channels),
            ]
        )

    def prepare_data(self) -> None:
        if self.download and self.dataset in _TORCHVISION:
            for train in (True, False):
                _TORCHVISION[self.dataset](self.root, train=train, download=True)
        elif self.download and self.dataset == "celeba":
            datasets.CelebA(self.root, split="all", download=True)

    def _torchvision(self, **kwargs) -> Dataset:
        cls = _TORCHVISION.get(self.dataset, datasets.CelebA)
        try:
            return ImagesOnly(cls(self.root, transform=self.torchvision_transform(), **kwargs))
        except RuntimeError as err:
            raise RuntimeError(
                f"data.dataset={self.dataset!r} not found under data.root={self.root!r} ({err}); "
                "set --data.download=true to download it, or point --data.root at an existing copy"
            ) from None

    def _split(self, dataset: Dataset, holdout: bool) -> tuple[Dataset, Dataset]:
        """Seeded (train, val) split of ``dataset``; with ``holdout=False`` only a val subset."""
        largest = len(dataset) - 1 if holdout else len(dataset)
        if not 1 <= self.val_size <= largest:
            raise ValueError(f"data.val_size={self.val_size} must be between 1 and {largest} for {self.dataset}")
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed)).tolist()
        return Subset(dataset, order[self.val_size :]), Subset(dataset, order[: self.val_size])

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self.predict_set = self._predict_set()
            return
        if self.train_set is not None:
            return
        if self.dataset == "digits":
            images = load_digits_tensor(self.image_size).expand(-1, self.channels, -1, -1)
            self.train_set, self.val_set = self._split(TensorImages(images), True)
            self.test_set = self.val_set
        elif self.dataset == "folder":
            files = list_images(self.root)
            self.train_set, self.val_set = self._split(ImageFiles(files, self.file_transform()), True)
            self.test_set = self.val_set
        elif self.dataset == "celeba":
            self.train_set = self._torchvision(split="train")
            _, self.val_set = self._split(self._torchvision(split="valid"), False)
            self.test_set = self._torchvision(split="test")
        else:
            self.train_set, self.val_set = self._split(self._torchvision(train=True), True)
            self.test_set = self._torchvision(train=False)
        if self.train_size is not None:
            self.train_set = self._subset(self.train_set)

    def _subset(self, train_set: Dataset) -> Dataset:
        """The first ``train_size`` images of a seeded permutation of ``train_set``."""
        if not self.batch_size <= self.train_size <= len(train_set):
            raise ValueError(f"data.train_size={self.train_size} must be between data.batch_size={self.batch_size} "
                             f"(training drops incomplete batches) and {len(train_set)} (the training images of {self.dataset})")
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(self.seed + 1)).tolist()
        return Subset(train_set, order[: self.train_size])

    def _predict_set(self) -> Dataset:
        if self.predict_path is None:
            return Seeds(self.num_predict)
        return ImageFiles(list_images(self.predict_path), self.file_transform(), with_path=True)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return make_loader(dataset, self.batch_size, shuffle=shuffle, num_workers=self.num_workers, drop_last=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, shuffle=False)
