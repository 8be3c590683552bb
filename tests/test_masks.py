"""Mask generators (1 = hole): shapes, coverage bounds and redraws, determinism, stroke/box
geometry of the DeepFill v2 and LaMa procedures, file masks and their 0.5 threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from datamodules.image_io import ImageReadError
from datamodules.masks import (
    BoxMasks,
    FileMasks,
    FreeFormMasks,
    LamaMasks,
    MaskMixture,
    StrokeMasks,
    binarize,
    read_hole_mask,
)

GENERATORS = {
    "free_form": FreeFormMasks(),
    "thin": LamaMasks("thin"),
    "medium": LamaMasks("medium"),
    "thick": LamaMasks("thick"),
    "strokes": StrokeMasks(),
    "boxes": BoxMasks(),
}


def draws(generator, n: int, size=(128, 128), seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [generator(*size, rng) for _ in range(n)]


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
def test_shape_values_and_default_coverage_bounds(name, size):
    for mask in draws(GENERATORS[name], 20, size):
        assert mask.shape == (1, *size) and mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert 0.0 < mask.mean().item() <= 0.5


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_same_masks_other_seed_other_masks(name):
    first, again, other = draws(GENERATORS[name], 5), draws(GENERATORS[name], 5), draws(GENERATORS[name], 5, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_masks_outside_the_bounds_are_redrawn():
    thick = LamaMasks("thick", max_coverage=0.3, min_coverage=0.1)
    rng = np.random.default_rng(0)
    raw = [thick.draw(128, 128, rng).mean() for _ in range(100)]
    assert max(raw) > 0.3 and min(raw) <= 0.1, "the raw draws should need rejection for this test to mean anything"
    assert all(0.1 < m.mean().item() <= 0.3 for m in draws(thick, 50))


def test_unreachable_bounds_fail_with_a_clear_error():
    with pytest.raises(ValueError, match=r"BoxMasks: no 64x64 mask with coverage in \(0.45, 0.5\]"):
        BoxMasks(min_size=5, max_size=10, max_boxes=1, min_coverage=0.45)(64, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="min_coverage < max_coverage"):
        FreeFormMasks(max_coverage=0.2, min_coverage=0.3)


def _survives_erosion(mask: torch.Tensor, radius: int) -> float:
    """Fraction of hole pixels at the centre of a hole disc of ``radius``: 0 for strokes thinner than 2*radius+1."""
    disc = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    holes = mask[0].numpy() > 0
    return ndimage.binary_erosion(holes, structure=disc).sum() / max(holes.sum(), 1)


def test_lama_presets_have_their_stroke_widths():
    # At 256: thin strokes are 5-14 px wide, so a disc of radius 8 fits nowhere (except where
    # strokes cross); thick strokes (5-104 px) and boxes leave most of the hole area.
    thin = np.mean([_survives_erosion(m, 8) for m in draws(LamaMasks("thin"), 20, (256, 256))])
    thick = np.mean([_survives_erosion(m, 8) for m in draws(LamaMasks("thick"), 20, (256, 256))])
    assert thin < 0.05 and thick > 0.4


def test_sizes_scale_with_the_reference_size():
    at_256 = np.mean([m.mean().item() for m in draws(LamaMasks("medium"), 40, (256, 256))])
    at_128 = np.mean([m.mean().item() for m in draws(LamaMasks("medium"), 40, (128, 128))])
    absolute = np.mean([m.mean().item() for m in draws(LamaMasks("medium", reference_size=None), 40, (128, 128))])
    assert abs(at_256 - at_128) < 0.05
    assert absolute > at_128 + 0.05


def test_free_form_stroke_is_one_connected_polyline():
    one_stroke = FreeFormMasks(max_strokes=1)
    for mask in draws(one_stroke, 20, (256, 256)):
        _, components = ndimage.label(mask[0].numpy())
        assert components == 1
    # Widths 12-40 px: the half-width of a single segment (largest distance from a hole pixel to
    # the nearest known one) is at most 21; a longer polyline folds back on itself into wider blobs.
    segments = draws(FreeFormMasks(max_strokes=1, min_vertices=1, max_vertices=1), 20, (256, 256))
    half_widths = [ndimage.distance_transform_edt(np.pad(m[0].numpy(), 1)).max() for m in segments]
    assert max(half_widths) <= 21 and max(half_widths) >= 12


def test_boxes_are_rectangles_inside_the_margin():
    single = BoxMasks(min_size=30, max_size=100, min_boxes=1, max_boxes=1, margin=10)
    for mask in draws(single, 20, (256, 256)):
        holes = mask[0].numpy() > 0
        rows, cols = np.flatnonzero(holes.any(1)), np.flatnonzero(holes.any(0))
        assert holes[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()  # filled bounding box
        assert 30 <= len(rows) < 100 and 30 <= len(cols) < 100
        assert rows[0] >= 10 and cols[0] >= 10 and rows[-1] < 246 and cols[-1] < 246


def test_mixture_draws_from_every_generator_by_weight():
    boxes = BoxMasks(min_boxes=1, max_boxes=1)
    mixture = MaskMixture([boxes, FreeFormMasks()], weights=[1.0, 1.0])
    masks = draws(mixture, 60, (256, 256))
    rectangles = sum(_is_rectangle(m) for m in masks)
    assert 15 < rectangles < 45
    assert sum(_is_rectangle(m) for m in draws(MaskMixture([boxes, FreeFormMasks()], [1.0, 0.0]), 10)) == 10
    with pytest.raises(ValueError, match="one non-negative weight per generator"):
        MaskMixture([boxes], weights=[1.0, 2.0])


def _is_rectangle(mask: torch.Tensor) -> bool:
    holes = mask[0].numpy() > 0
    rows, cols = np.flatnonzero(holes.any(1)), np.flatnonzero(holes.any(0))
    return bool(holes[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all())


def test_file_masks_are_thresholded_at_one_half(tmp_path):
    values = np.array([[0, 100, 127], [128, 200, 255]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "gray.png")
    expected = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    assert torch.equal(read_hole_mask(tmp_path / "gray.png"), expected)
    # RGB masks use the mean of the channels: (255, 255, 0) -> 170 is a hole, (255, 0, 0) -> 85 is not.
    rgb = torch.tensor([[[255, 255]], [[255, 0]], [[0, 0]]], dtype=torch.uint8)
    assert torch.equal(binarize(rgb), torch.tensor([[[1.0, 0.0]]]))


def test_file_masks_resize_to_the_crop_and_reject_large_holes(tmp_path):
    stripe = np.zeros((32, 32), np.uint8)
    stripe[:, :8] = 255  # 25% hole
    Image.fromarray(stripe).save(tmp_path / "stripe.png")
    masks = draws(FileMasks(str(tmp_path)), 10, (64, 64))
    assert all(m.shape == (1, 64, 64) and m.mean().item() == 0.25 for m in masks)
    assert {m[0, 0, 0].item() for m in masks} == {0.0, 1.0}  # random flips
    with pytest.raises(ImageReadError, match=str(tmp_path)):
        FileMasks(str(tmp_path), max_coverage=0.2)(64, 64, np.random.default_rng(0))
