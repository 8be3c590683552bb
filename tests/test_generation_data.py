"""GenerationDataModule: embedded digits, splits, folders, predict inputs and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.generation import GenerationDataModule
from datamodules.image_io import ImageReadError


def test_digits_split_is_fixed_disjoint_and_scaled():
    dm = GenerationDataModule(batch_size=50)
    assert (dm.channels, dm.image_size) == (1, 32)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (1500, 297)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    again = GenerationDataModule()
    again.setup("fit")
    assert again.val_set.indices == dm.val_set.indices
    other = GenerationDataModule(seed=1)
    other.setup("fit")
    assert other.val_set.indices != dm.val_set.indices

    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image"} and batch["image"].shape == (50, 1, 32, 32)
    images = dm.val_set.dataset.images
    assert images.min() == -1 and images.max() == 1


def test_train_size_keeps_a_seeded_subset_of_the_training_split():
    full = GenerationDataModule(image_size=8, val_size=297, batch_size=16)
    few = GenerationDataModule(image_size=8, val_size=297, batch_size=16, train_size=100)
    full.setup("fit"), few.setup("fit")
    assert len(few.train_set) == 100 and few.val_set.indices == full.val_set.indices
    kept = [few.train_set.dataset.indices[i] for i in few.train_set.indices]
    assert len(set(kept)) == 100 and set(kept) <= set(full.train_set.indices)
    again = GenerationDataModule(image_size=8, val_size=297, batch_size=16, train_size=100)
    again.setup("fit")
    assert again.train_set.indices == few.train_set.indices
    for size in (8, 1501):
        with pytest.raises(ValueError, match="data.train_size"):
            GenerationDataModule(image_size=8, batch_size=16, train_size=size).setup("fit")


def test_digits_as_rgb_repeat_the_gray_channel():
    dm = GenerationDataModule(channels=3, image_size=16, val_size=100)
    dm.setup("fit")
    image = dm.val_set[0]["image"]
    assert image.shape == (3, 16, 16)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])


def write_folder(folder, count=6):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        shape = (40, 60, 3) if i % 2 else (50, 30)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_folder_images_are_cropped_to_size_and_bad_files_are_named(tmp_path):
    folder = write_folder(tmp_path / "images")
    dm = GenerationDataModule(dataset="folder", root=str(folder), image_size=24, val_size=2, batch_size=4)
    assert dm.channels == 3
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (4, 2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 24, 24)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1

    (folder / "img9.png").write_bytes(b"not a png")
    broken = GenerationDataModule(dataset="folder", root=str(folder), val_size=2, batch_size=7)
    broken.setup("fit")
    with pytest.raises(ImageReadError, match="img9.png"):
        [item for split in (broken.train_set, broken.val_set) for item in split]


def test_missing_torchvision_data_names_the_options(tmp_path):
    dm = GenerationDataModule(dataset="mnist", root=str(tmp_path / "nothing"))
    with pytest.raises(RuntimeError, match=r"data.download.*data.root|data.root.*data.download"):
        dm.setup("fit")


def test_celeba_recipe_center_crops_178_then_resizes():
    dm = GenerationDataModule(dataset="celeba", image_size=64)
    photo = np.zeros((218, 178, 3), dtype=np.uint8)
    photo[:20] = 255  # outside the central 178x178 square: cropped away
    out = dm.torchvision_transform()(Image.fromarray(photo))
    assert out.shape == (3, 64, 64)
    assert out.max() == -1


def test_predict_yields_seeds_or_named_files(tmp_path):
    dm = GenerationDataModule(num_predict=5, batch_size=4)
    dm.setup("predict")
    seeds = [int(s) for batch in dm.predict_dataloader() for s in batch["seed"]]
    assert seeds == [0, 1, 2, 3, 4]

    folder = write_folder(tmp_path / "inputs", count=3)
    dm = GenerationDataModule(predict_path=str(folder), image_size=16, batch_size=4)
    dm.setup("predict")
    assert dm.predict_set.files == sorted(folder.glob("*.png"))
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape == (3, 1, 16, 16)
    assert batch["path"] == [str(p) for p in dm.predict_set.files]
