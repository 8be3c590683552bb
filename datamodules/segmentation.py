"""Segmentation data: image/mask pairs from Pascal VOC 2012, Oxford-IIIT Pet or your own folders.

Every DataModule here yields batches ``{"image": (N, 3, H, W) float in [0, 1], "mask": (N, H, W)
int64, "path": [...]}``. Image and mask go through the same ``torchvision.transforms.v2``
pipeline as ``tv_tensors.Image`` / ``tv_tensors.Mask``, so flips, crops and resizes stay aligned
and masks are always resized with nearest-neighbour interpolation. Samples of different sizes
are padded to the largest in the batch (image with 0, mask with ``ignore_index``), so padding
never counts in the loss or the metrics.

Masks are single-channel PNGs holding one class id per pixel (grayscale "index" PNGs or palette
PNGs such as VOC's, read by :func:`datamodules.image_io.read_label_mask`); ``ignore_index`` (255)
marks pixels to skip. A mask with labels outside the class range, a mask whose size differs from
its image, and a missing mask raise an error that names the file (and the labels).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.datasets import OxfordIIITPet, VOCSegmentation
from torchvision.transforms import v2

from datamodules.image_io import DEFAULT_MAX_PIXELS, ImageReadError, list_images, predict_inputs, read_image, read_label_mask
from datamodules.loaders import make_loader

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
#: Oxford-IIIT Pet trimaps store 1 = pet, 2 = background, 3 = border (the uncertain outline).
PET_LABEL_MAPS = {
    "binary": {1: 1, 2: 0, 3: 1},
    "trimap": {1: 1, 2: 0, 3: 2},
}
PET_CLASSES = {"binary": ["background", "pet"], "trimap": ["background", "pet", "border"]}


def segmentation_transforms(
    train: bool,
    base_size: int | None,
    crop_size: int | None,
    scale_range: tuple[float, float],
    hflip: bool,
    ignore_index: int,
) -> v2.Compose:
    """Joint image/mask pipeline (torchvision's segmentation reference recipe).

    Train: resize the shorter side to a random value in ``scale_range`` x ``base_size``, random
    horizontal flip, random crop (padding image with 0 and mask with ``ignore_index``). Eval:
    resize the shorter side to ``base_size``. ``None`` skips a step.
    """
    steps: list[v2.Transform] = []
    if train:
        if base_size is not None:
            steps.append(v2.RandomResize(round(scale_range[0] * base_size), round(scale_range[1] * base_size) + 1))
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if crop_size is not None:
            fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
            steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    elif base_size is not None:
        steps.append(v2.Resize(base_size))
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def pad_collate(samples: list[dict], ignore_index: int) -> dict:
    """Stack samples, padding ``image`` (with 0) and ``mask`` (with ``ignore_index``) bottom/right
    to the largest height and width in the batch; other keys become lists."""
    height = max(s["image"].shape[-2] for s in samples)
    width = max(s["image"].shape[-1] for s in samples)

    def pad(tensor: torch.Tensor, value: int) -> torch.Tensor:
        return F.pad(tensor, (0, width - tensor.shape[-1], 0, height - tensor.shape[-2]), value=value)

    batch = {"image": torch.stack([pad(s["image"], 0) for s in samples])}
    if "mask" in samples[0]:
        batch["mask"] = torch.stack([pad(s["mask"], ignore_index) for s in samples])
    for key in samples[0].keys() - batch.keys():
        batch[key] = [s[key] for s in samples]
    return batch


class SegmentationPairs(Dataset):
    """Image/mask file pairs; each mask is checked against its image when the pair is loaded.

    ``label_map`` translates stored values to class ids (e.g. ``{0: 0, 255: 1}`` for 0/255
    binary masks); with it, values that are neither keys nor ``ignore_index`` are errors.
    """

    def __init__(
        self,
        images: Sequence[str | Path],
        masks: Sequence[str | Path],
        num_classes: int,
        transform: v2.Transform,
        ignore_index: int = 255,
        label_map: dict[int, int] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.files = [Path(p) for p in images]
        self.masks = [Path(p) for p in masks]
        missing = [(img, mask) for img, mask in zip(self.files, self.masks) if not mask.is_file()]
        if missing:
            listed = "; ".join(f"{img} (expected {mask})" for img, mask in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FileNotFoundError(f"no mask for {len(missing)} image(s): {listed}{more}")
        self.num_classes = num_classes
        self.transform = transform
        self.ignore_index = ignore_index
        self.label_map = label_map
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        image_path, mask_path = self.files[index], self.masks[index]
        image = read_image(image_path, self.max_pixels)
        mask = read_label_mask(mask_path, self.max_pixels)
        if mask.shape != image.shape[-2:]:
            raise ImageReadError(
                mask_path,
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                f"{image.shape[2]}x{image.shape[1]} (width x height)",
            )
        mask = self.class_ids(mask, mask_path, image_path)
        sample = self.transform({"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(mask)})
        return {**sample, "path": str(image_path)}

    def class_ids(self, mask: torch.Tensor, mask_path: Path, image_path: Path) -> torch.Tensor:
        values = set(torch.unique(mask).tolist()) - {self.ignore_index}
        if self.label_map is None:
            bad = sorted(v for v in values if not 0 <= v < self.num_classes)
            expected = f"the class range 0..{self.num_classes - 1}"
        else:
            bad = sorted(values - set(self.label_map))
            expected = f"the label_map keys {sorted(self.label_map)}"
        if bad:
            raise ImageReadError(
                mask_path,
                f"labels {bad} are outside {expected} (ignore_index {self.ignore_index}); mask of {image_path}",
            )
        if self.label_map is None:
            return mask
        lookup = torch.full((max([*values, *self.label_map, self.ignore_index]) + 1,), self.ignore_index, dtype=torch.int64)
        lookup[list(self.label_map)] = torch.tensor(list(self.label_map.values()), dtype=torch.int64)
        return lookup[mask]


class PredictImages(Dataset):
    """Images to segment (a file or a folder, searched recursively); ``files`` are protected
    from being overwritten by the prediction writer."""

    def __init__(self, path: str | Path, transform: v2.Transform, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.inputs = predict_inputs(path, max_pixels)
        self.files = [file for file, _ in self.inputs]
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        path, name = self.inputs[index]
        image = read_image(path, self.max_pixels)
        return {"image": self.transform(tv_tensors.Image(image)), "original": image, "path": str(path), "name": name}


class SegmentationDataModule(LightningDataModule, ABC):
    """Loaders, joint transforms and predict input shared by the segmentation DataModules.

    Subclasses define ``class_names`` and ``make_dataset(split)`` for ``train``/``val``/``test``.
    ``predict_path`` (a file or folder) feeds ``predict``; those images are resized like the
    validation images (``base_size``) and predicted one at a time at their own size.
    """

    def __init__(
        self,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        base_size: int | None = None,
        crop_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        hflip: bool = True,
        ignore_index: int = 255,
        predict_path: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.base_size = base_size
        self.crop_size = crop_size
        self.scale_range = tuple(scale_range)
        self.hflip = hflip
        self.ignore_index = ignore_index
        self.predict_path = predict_path
        self.max_pixels = max_pixels
        self.datasets: dict[str, Dataset] = {}

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """One name per class id; ``len(class_names)`` must equal the model's ``num_classes``."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def make_dataset(self, split: Literal["train", "val", "test"]) -> Dataset:
        """The dataset of one split, with ``self.transforms(train=split == "train")``."""

    def transforms(self, train: bool) -> v2.Compose:
        return segmentation_transforms(
            train, self.base_size, self.crop_size, self.scale_range, self.hflip, self.ignore_index
        )

    def setup(self, stage: str) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}[stage]
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self.make_dataset(split)
        if stage == "predict":
            if self.predict_path is None:
                raise ValueError("predict needs input images: set --data.predict_path to an image file or folder")
            self.datasets["predict"] = PredictImages(self.predict_path, self.transforms(train=False), self.max_pixels)

    def _loader(self, split: str, batch_size: int, shuffle: bool = False) -> DataLoader:
        return make_loader(
            self.datasets[split], batch_size, shuffle=shuffle, num_workers=self.num_workers, drop_last=shuffle,
            collate_fn=partial(pad_collate, ignore_index=self.ignore_index),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", 1)


def _random_split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(kept, held_out): a seeded random ``fraction`` of ``items`` is held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[: max(1, round(fraction * len(items)))])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


class FolderSegmentationDataModule(SegmentationDataModule):
    """Your own data: ``<images>/<sub>/<name>.<ext>`` pairs with ``<masks>/<sub>/<name><mask_suffix>``.

    Without ``val_images``, a seeded ``val_fraction`` of the training pairs is held out for
    validation. ``test_images``/``test_masks`` are optional.
    """

    def __init__(
        self,
        class_names: list[str],
        train_images: str,
        train_masks: str,
        val_images: str | None = None,
        val_masks: str | None = None,
        test_images: str | None = None,
        test_masks: str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        mask_suffix: str = ".png",
        label_map: dict[int, int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(class_names) < 2:
            raise ValueError(f"class_names needs at least 2 classes, got {class_names}")
        for images, masks, name in ((val_images, val_masks, "val"), (test_images, test_masks, "test")):
            if (images is None) != (masks is None):
                raise ValueError(f"set both {name}_images and {name}_masks, or neither")
        self._class_names = list(class_names)
        self.folders = {"train": (train_images, train_masks), "val": (val_images, val_masks), "test": (test_images, test_masks)}
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.mask_suffix = mask_suffix
        self.label_map = label_map

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    def pairs(self, images: str, masks: str) -> list[tuple[Path, Path]]:
        image_root, mask_root = Path(images), Path(masks)
        files = list_images(image_root)
        base = image_root if image_root.is_dir() else image_root.parent
        return [(f, (mask_root / f.relative_to(base)).with_name(f.stem + self.mask_suffix)) for f in files]

    def make_dataset(self, split: Literal["train", "val", "test"]) -> Dataset:
        images, masks = self.folders[split]
        if split == "test" and images is None:
            raise ValueError("test needs test_images and test_masks in the data config")
        if images is None:
            pairs = _random_split(self.pairs(*self.folders["train"]), self.val_fraction, self.split_seed)[1]
        else:
            pairs = self.pairs(images, masks)
            if split == "train" and self.folders["val"][0] is None:
                pairs = _random_split(pairs, self.val_fraction, self.split_seed)[0]
        return SegmentationPairs(
            [p[0] for p in pairs], [p[1] for p in pairs], self.num_classes, self.transforms(train=split == "train"),
            self.ignore_index, self.label_map, self.max_pixels,
        )


class OxfordPetSegmentationDataModule(SegmentationDataModule):
    """Oxford-IIIT Pet (torchvision download, about 800 MB) with its trimap masks.

    ``mode="binary"``: background vs pet (the trimap's border counts as pet, as in the
    segmentation_models_pytorch example); ``mode="trimap"``: background, pet, border.
    train/val: a seeded ``val_fraction`` split of ``trainval``; test: the official ``test`` split.
    """

    def __init__(
        self,
        root: str = "data",
        mode: Literal["binary", "trimap"] = "binary",
        download: bool = True,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.root = root
        self.mode = mode
        self.download = download
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    @property
    def class_names(self) -> list[str]:
        return PET_CLASSES[self.mode]

    def prepare_data(self) -> None:
        if self.download:
            for split in ("trainval", "test"):
                OxfordIIITPet(self.root, split=split, target_types="segmentation", download=True)

    def make_dataset(self, split: Literal["train", "val", "test"]) -> Dataset:
        official = "test" if split == "test" else "trainval"
        try:
            OxfordIIITPet(self.root, split=official, target_types="segmentation", download=False)
        except RuntimeError as err:
            raise RuntimeError(
                f"Oxford-IIIT Pet not found under {Path(self.root) / 'oxford-iiit-pet'} ({err}); "
                "set --data.download=true or point --data.root at the folder holding oxford-iiit-pet/"
            ) from None
        base = Path(self.root) / "oxford-iiit-pet"
        lines = (base / "annotations" / f"{official}.txt").read_text().splitlines()
        ids = [line.split()[0] for line in lines if line.strip()]
        if split != "test":
            ids = _random_split(ids, self.val_fraction, self.split_seed)[split == "val"]
        return SegmentationPairs(
            [base / "images" / f"{i}.jpg" for i in ids], [base / "annotations" / "trimaps" / f"{i}.png" for i in ids],
            self.num_classes, self.transforms(train=split == "train"), self.ignore_index,
            PET_LABEL_MAPS[self.mode], self.max_pixels,
        )


class VOCSegmentationDataModule(SegmentationDataModule):
    """Pascal VOC 2012 segmentation (torchvision download, about 2 GB): 21 classes, 255 = border.

    train: the 1464 ``train`` images; val and test: the 1449 ``val`` images (VOC's test labels
    are not public).
    """

    def __init__(self, root: str = "data", year: str = "2012", download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root = root
        self.year = year
        self.download = download

    @property
    def class_names(self) -> list[str]:
        return list(VOC_CLASSES)

    def prepare_data(self) -> None:
        if self.download:
            VOCSegmentation(self.root, year=self.year, image_set="train", download=True)

    def make_dataset(self, split: Literal["train", "val", "test"]) -> Dataset:
        image_set = "train" if split == "train" else "val"
        try:
            voc = VOCSegmentation(self.root, year=self.year, image_set=image_set, download=False)
        except RuntimeError as err:
            raise RuntimeError(
                f"Pascal VOC {self.year} not found under {self.root} ({err}); "
                "set --data.download=true or point --data.root at the folder holding VOCdevkit/"
            ) from None
        return SegmentationPairs(
            voc.images, voc.masks, self.num_classes, self.transforms(train=split == "train"),
            self.ignore_index, None, self.max_pixels,
        )
