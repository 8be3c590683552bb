"""PSNR and SSIM for super-resolution, computed the way SR papers (and BasicSR) report them.

Protocol, so that numbers compare with published tables:

* both images are quantized to 8 bit first (``round(clamp(x, 0, 1) * 255)``) and the rest runs
  in float64;
* ``crop_border`` pixels are cut from every edge (papers use ``crop_border = scale``);
* ``*_y``: luma of MATLAB's BT.601 ``rgb2ycbcr``, ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``
  (RGB in [0, 1], Y in [16, 235]); ``*_rgb``: the three channels;
* PSNR with peak 255, computed per image (over all channels jointly for RGB) and averaged over
  images, not derived from the dataset's mean squared error;
* SSIM as Wang et al.'s original MATLAB ``ssim_index``: 11x11 Gaussian window (sigma 1.5),
  K1 = 0.01, K2 = 0.03, L = 255, averaged over the *valid* region only (windows that fit inside
  the image); RGB SSIM is the mean of the per-channel SSIMs; per image, then averaged.

Identical images have infinite PSNR; each image's PSNR is capped at ``PSNR_CAP_DB`` = 100 dB
instead, so that one perfect image (a flat patch, a copy) does not turn the dataset mean into
``inf``. Real SR outputs are far below the cap (tens of dB).

Both are written out here rather than taken from ``torchmetrics.functional``: its SSIM averages
reflect-padded borders too (about 2e-3 off the valid-region protocol) and its dense 11x11 float64
convolution takes seconds per batch on a CPU; its PSNR builds its constants in float32 (about
2e-6 dB off).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

#: Per-image PSNR ceiling in dB (identical images would otherwise give ``inf``).
PSNR_CAP_DB = 100.0
PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
#: MATLAB BT.601 weights of R, G, B in Y (for RGB in [0, 1], Y on the 0-255 scale).
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
#: Keys of ``SuperResolutionMetrics.compute()``.
METRIC_NAMES = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


def quantize(x: Tensor) -> Tensor:
    """8-bit values of an image in [0, 1]: ``round(clamp(x, 0, 1) * 255)`` as float64 (0..255)."""
    return torch.round(x.detach().to(torch.float64).clamp(0, 1) * PEAK)


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 luma (MATLAB ``rgb2ycbcr``) of RGB in [0, 1], shape (..., 3, H, W) -> (..., 1, H, W) in [16, 235]."""
    if x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects 3 channels in dim -3, got shape {tuple(x.shape)}")
    r, g, b = x.unbind(dim=-3)
    y = Y_OFFSET + Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b
    return y.unsqueeze(-3)


def _psnr_per_image(a: Tensor, b: Tensor) -> Tensor:
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(PEAK**2 / mse)).clamp(max=PSNR_CAP_DB)


def _gaussian_window() -> list[float]:
    """1-D factor of MATLAB's ``fspecial('gaussian', 11, 1.5)`` (the 2-D window is its outer product)."""
    half = SSIM_WINDOW // 2
    window = [math.exp(-(i**2) / (2 * SSIM_SIGMA**2)) for i in range(-half, half + 1)]
    return [w / sum(window) for w in window]


def _filter_valid(x: Tensor, window: list[float]) -> Tensor:
    """Separable 'valid' filtering over H then W, as in-place shifted sums (fast in float64 on CPU)."""
    k = len(window)
    height = x.shape[-2] - k + 1
    rows = x[..., 0:height, :] * window[0]
    for i in range(1, k):
        rows.add_(x[..., i : i + height, :], alpha=window[i])
    width = x.shape[-1] - k + 1
    out = rows[..., 0:width] * window[0]
    for i in range(1, k):
        out.add_(rows[..., i : i + width], alpha=window[i])
    return out


def _ssim_per_image(a: Tensor, b: Tensor) -> Tensor:
    """Mean of the SSIM map over the valid region and all channels, per image."""
    window = _gaussian_window()
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3))


class SuperResolutionMetrics(Metric):
    """Paper-protocol PSNR/SSIM on Y and RGB; ``compute()`` returns ``psnr_y, ssim_y, psnr_rgb, ssim_rgb``.

    Sums and image counts are states with ``dist_reduce_fx="sum"``, so under DDP every rank's
    images count once in the mean.

    Args:
        crop_border: pixels removed from every edge before measuring (the scale, in papers).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, crop_border: int, **kwargs):
        super().__init__(**kwargs)
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.crop_border = crop_border
        for name in METRIC_NAMES:
            self.add_state(f"{name}_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: Tensor, hr: Tensor) -> None:
        """Add a batch: ``sr`` and ``hr`` are (N, 3, H, W) in [0, 1] (values outside are clamped)."""
        if sr.shape != hr.shape or sr.ndim != 4 or sr.shape[1] != 3:
            raise ValueError(
                f"expected sr and hr of the same shape (N, 3, H, W), got {tuple(sr.shape)} and {tuple(hr.shape)}"
            )
        sr_rgb, hr_rgb = quantize(sr), quantize(hr)
        c = self.crop_border
        if c:
            sr_rgb, hr_rgb = sr_rgb[..., c:-c, c:-c], hr_rgb[..., c:-c, c:-c]
        if min(sr_rgb.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(
                f"images of {tuple(sr.shape[-2:])} leave {tuple(sr_rgb.shape[-2:])} after crop_border={c}; "
                f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW}"
            )
        sr_y, hr_y = rgb_to_y(sr_rgb / PEAK), rgb_to_y(hr_rgb / PEAK)
        self.psnr_y_sum += _psnr_per_image(sr_y, hr_y).sum()
        self.ssim_y_sum += _ssim_per_image(sr_y, hr_y).sum()
        self.psnr_rgb_sum += _psnr_per_image(sr_rgb, hr_rgb).sum()
        self.ssim_rgb_sum += _ssim_per_image(sr_rgb, hr_rgb).sum()
        self.num_images += sr.shape[0]

    def compute(self) -> dict[str, Tensor]:
        return {name: getattr(self, f"{name}_sum") / self.num_images for name in METRIC_NAMES}
