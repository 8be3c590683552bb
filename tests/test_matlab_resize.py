"""MATLAB bicubic imresize: hand-computed cases, an independent NumPy version, and PIL as a bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.matlab_resize import imresize


def _row(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, 1, -1)


def _smooth_image(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    return 0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + 0.1 * np.cos((xx + 2 * yy) / 11.0)


def _numpy_matlab_resize_1d(signal: np.ndarray, scale: float, out_length: int) -> np.ndarray:
    """Resize the last axis with MATLAB's documented algorithm, written out pixel by pixel."""

    def keys(t: float) -> float:
        t = abs(t)
        if t <= 1:
            return 1.5 * t**3 - 2.5 * t**2 + 1
        if t <= 2:
            return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
        return 0.0

    n = signal.shape[-1]
    pad = 20
    padded = np.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(pad, pad)], mode="symmetric")
    out = np.zeros(signal.shape[:-1] + (out_length,))
    support = 2.0 / scale if scale < 1 else 2.0
    for x in range(1, out_length + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of output pixel x
        taps = range(math.floor(u - support), math.ceil(u + support) + 1)
        w = np.array([scale * keys(scale * (u - j)) if scale < 1 else keys(u - j) for j in taps])
        w /= w.sum()
        assert all(-pad < j - 1 < n + pad for j in taps)
        out[..., x - 1] = sum(wk * padded[..., j - 1 + pad] for wk, j in zip(w, taps))
    return out


def _numpy_imresize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    h, w = image.shape[-2:]
    cols = _numpy_matlab_resize_1d(np.swapaxes(image, -1, -2), out_h / h, out_h)
    return _numpy_matlab_resize_1d(np.swapaxes(cols, -1, -2), out_w / w, out_w)


def test_upscale_x2_impulse_matches_hand_computed_weights():
    # u = x/2 + 1/4: taps at distances 0.25, 0.75, 1.25, 1.75 weigh 111, 29, -9, -3 (/128).
    impulse = _row([0, 0, 0, 1, 0, 0, 0, 0])
    expected = _row([0, 0, 0, -3, -9, 29, 111, 111, 29, -9, -3, 0, 0, 0, 0, 0]) / 128
    torch.testing.assert_close(imresize(impulse, size=(1, 16)), expected, rtol=0, atol=1e-12)
    # Same along the height axis.
    column = impulse.transpose(1, 2)
    torch.testing.assert_close(imresize(column, size=(16, 1)), expected.transpose(1, 2), rtol=0, atol=1e-12)


def test_upscale_border_mirrors_with_edge_repeated():
    # Taps left of pixel 1 read pixel 1 (index 0) and pixel 2 (index -1): 29+111, -9+111, -3+29, ...
    edge = _row([1, 0, 0, 0, 0, 0, 0, 0])
    expected = _row([140, 102, 26, -9, -3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) / 128
    torch.testing.assert_close(imresize(edge, scale=2.0)[..., :1, :], expected, rtol=0, atol=1e-12)


def test_downscale_x2_antialiased_impulse_and_ramp():
    # Antialiased x1/2: kernel 0.5*k(0.5 d) at d = 0.5, 1.5, 2.5, 3.5 -> 111, 29, -9, -3 (/256).
    impulse = _row([0] * 7 + [1] + [0] * 8)
    expected = _row([0, 0, -9, 111, 29, -3, 0, 0]) / 256
    torch.testing.assert_close(imresize(impulse, size=(1, 8)), expected, rtol=0, atol=1e-12)
    # Symmetric weights reproduce a ramp at the centres u = 2x - 0.5 away from the borders.
    ramp = imresize(_row(range(1, 17)), size=(1, 8))
    torch.testing.assert_close(ramp[0, 0, 2:6], torch.tensor([5.5, 7.5, 9.5, 11.5], dtype=torch.float64))
    # Without antialiasing, the plain kernel at distances 0.5, 1.5 -> 9/16 and -1/16.
    plain = imresize(impulse, size=(1, 8), antialias=False)
    torch.testing.assert_close(plain, _row([0, 0, 0, 9, -1, 0, 0, 0]) / 16, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 2.0, 3.0])
def test_constant_image_stays_constant(scale):
    image = torch.full((2, 3, 21, 17), 0.37, dtype=torch.float64)
    out = imresize(image, scale=scale)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), rtol=0, atol=1e-12)


def test_output_sizes_follow_matlab():
    image = torch.rand(3, 101, 55)
    assert imresize(image, scale=0.25).shape == (3, 26, 14)  # ceil(25.25), ceil(13.75)
    assert imresize(image, scale=1 / 3).shape == (3, 34, 19)
    assert imresize(image, scale=2).shape == (3, 202, 110)
    assert imresize(image[None], size=(40, 70)).shape == (1, 3, 40, 70)
    assert imresize(image, scale=0.25).dtype == torch.float32


def test_x4_downscale_matches_numpy_reference():
    image = np.stack([_smooth_image(64, 48), _smooth_image(48, 64).T ** 2, 1 - _smooth_image(64, 48)])
    ours = imresize(torch.from_numpy(image), scale=0.25).numpy()
    np.testing.assert_allclose(ours, _numpy_imresize(image, 16, 12), rtol=0, atol=1e-12)
    # Batched input and float32 give the same result.
    batched = imresize(torch.from_numpy(image)[None].repeat(2, 1, 1, 1), scale=0.25)
    np.testing.assert_allclose(batched[1].numpy(), ours, rtol=0, atol=1e-12)
    single = imresize(torch.from_numpy(image).float(), scale=0.25)
    np.testing.assert_allclose(single.numpy(), ours, rtol=0, atol=1e-5)


def test_anisotropic_size_matches_numpy_reference():
    # Height shrinks (x0.25) while width grows (x1.5): both kernels in one call.
    image = _smooth_image(40, 20)[None]
    ours = imresize(torch.from_numpy(image), size=(10, 30)).numpy()
    np.testing.assert_allclose(ours, _numpy_imresize(image, 10, 30), rtol=0, atol=1e-12)


def test_close_to_pil_bicubic_reduce_in_the_interior():
    image = _smooth_image(96, 80).astype(np.float32)
    pil = np.asarray(Image.fromarray(image, mode="F").resize((20, 24), Image.Resampling.BICUBIC))
    ours = imresize(torch.from_numpy(image).double(), size=(24, 20)).numpy()
    # PIL uses the same a = -0.5 antialiased kernel but truncates it at the borders.
    interior = (slice(3, -3), slice(3, -3))
    assert np.abs(ours[interior] - pil[interior]).max() < 1e-6
    assert np.abs(ours - pil).max() < 0.05


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        imresize(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(torch.rand(3, 8, 8), scale=0.5, size=(4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), scale=0.5)
