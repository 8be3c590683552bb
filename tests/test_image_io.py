"""Every kind of bad or unusual input file: converted, skipped or rejected by name."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.image_io import ImageReadError, list_images, read_image, save_image


def _png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_modes_are_converted_to_8bit_rgb(tmp_path):
    gray = _png(tmp_path / "gray.png", np.full((5, 7), 100, np.uint8))
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    rgba = _png(tmp_path / "rgba.png", rgba)
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(np.full((5, 7), 65535 // 2, np.uint16)).save(sixteen)
    palette = tmp_path / "palette.png"
    Image.fromarray(np.full((5, 7, 3), 30, np.uint8)).convert("P").save(palette)

    for path in (gray, rgba, sixteen, palette):
        image = read_image(path)
        assert image.shape == (3, 5, 7) and image.dtype == torch.uint8, path
    assert read_image(gray).unique().tolist() == [100]
    assert read_image(rgba)[0].unique().tolist() == [200]  # alpha dropped, colour kept
    assert Image.open(sixteen).mode.startswith("I")
    assert read_image(sixteen).unique().tolist() == [round(32767 / 257)]


def test_corrupt_truncated_and_fake_images_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a photo")
    full = _png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])

    for path in (corrupt, fake, truncated):
        with pytest.raises(ImageReadError, match=path.name):
            read_image(path)


def test_folder_listing_skips_non_images_and_rejects_empty_folders(tmp_path, caplog):
    _png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "readme.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in list_images(tmp_path)] == ["a.png"]
    assert "readme.txt" in caplog.text

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageReadError, match="no image files"):
        list_images(empty)
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images(tmp_path / "missing")


def test_decompression_bomb_limit(tmp_path):
    path = _png(tmp_path / "big.png", np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ImageReadError, match="max_pixels"):
        read_image(path, max_pixels=5_000)
    assert read_image(path, max_pixels=10_000).shape == (3, 100, 100)


def test_save_image_round_trip(tmp_path):
    out = save_image(torch.ones(3, 4, 4), tmp_path / "out" / "x.png")
    assert read_image(out).unique().tolist() == [255]
