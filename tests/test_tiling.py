"""Tiled inference gives the whole-image result (no seams) with bounded tile inputs."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.tiling import tiled_forward
from networks.rrdbnet import RRDBNet


class _Recorder:
    """Wraps a model and remembers the spatial size of every input it sees."""

    def __init__(self, model):
        self.model = model
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.model(x)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def tiny_rrdbnet():
    torch.manual_seed(0)
    return RRDBNet(num_feat=8, num_block=1, grow_ch=4, scale=4).eval()


def test_tiled_matches_whole_image_without_seams(tiny_rrdbnet):
    image = torch.rand(1, 3, 80, 72, generator=torch.Generator().manual_seed(0))
    recorder = _Recorder(tiny_rrdbnet)
    with torch.no_grad():
        whole = tiny_rrdbnet(image)
        tiled = tiled_forward(recorder, image, scale=4, tile=32, overlap=8)
    assert tiled.shape == whole.shape == (1, 3, 320, 288)
    # Seamless: equal up to float rounding (about 170 dB here), far above a 50 dB visibility bar.
    assert _psnr(tiled, whole) >= 100
    # 80 = 32 + 32 + 16 and 72 = 32 + 32 + 8: a 3x3 grid with narrower last row and column.
    assert len(recorder.sizes) == 9
    assert max(max(size) for size in recorder.sizes) <= 32 + 2 * 8
    assert (16 + 8, 8 + 8) in recorder.sizes


def test_no_overlap_shows_seams(tiny_rrdbnet):
    """The overlap is what removes the seams: without context the tile borders differ."""
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = tiny_rrdbnet(image)
        seamed = tiled_forward(tiny_rrdbnet, image, scale=4, tile=24, overlap=0)
        seamless = tiled_forward(tiny_rrdbnet, image, scale=4, tile=24, overlap=8)
    assert _psnr(seamed, whole) < _psnr(seamless, whole) - 10


def test_small_image_and_disabled_tiling_run_once(tiny_rrdbnet):
    image = torch.rand(2, 3, 20, 12)
    for tile in (0, -1, 32):
        recorder = _Recorder(tiny_rrdbnet)
        with torch.no_grad():
            out = tiled_forward(recorder, image, scale=4, tile=tile, overlap=8)
        assert recorder.sizes == [(20, 12)]
        assert out.shape == (2, 3, 80, 48)


def test_pastes_exact_cells_for_a_pointwise_model():
    """With a per-pixel model every pixel must land exactly where the whole-image run puts it."""
    image = torch.rand(2, 3, 37, 29)

    def model(x):
        return torch.nn.functional.interpolate(x * 2 - 1, scale_factor=2, mode="nearest")

    torch.testing.assert_close(tiled_forward(model, image, scale=2, tile=10, overlap=3), model(image), rtol=0, atol=0)


def test_rejects_wrong_scale_and_negative_overlap(tiny_rrdbnet):
    image = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match="scale=2"):
        tiled_forward(tiny_rrdbnet, image, scale=2, tile=16, overlap=4)
    with pytest.raises(ValueError, match="overlap"):
        tiled_forward(tiny_rrdbnet, image, scale=4, tile=16, overlap=-1)
