"""SR metrics against an independent float64 NumPy version of the paper protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d
from skimage import data

from lightning_modules.sr_metrics import PSNR_CAP_DB, SuperResolutionMetrics, quantize, rgb_to_y


# ---------- independent reference (MATLAB ssim_index.m and BasicSR's calculate_psnr) ----------
def _ref_y(rgb255: np.ndarray) -> np.ndarray:
    """(H, W, 3) 8-bit values -> Y in [16, 235] (MATLAB rgb2ycbcr on doubles)."""
    return 16.0 + rgb255 @ np.array([65.481, 128.553, 24.966]) / 255.0


def _ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255.0**2 / np.mean((a - b) ** 2))


def _ref_ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    ax = np.arange(-5, 6, dtype=np.float64)
    window = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(img):
        return correlate2d(img, window, mode="valid")

    mu1, mu2 = filt(a), filt(b)
    s11 = filt(a * a) - mu1**2
    s22 = filt(b * b) - mu2**2
    s12 = filt(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(ssim_map.mean())


def _reference(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> dict[str, float]:
    """Mean over images of the four numbers, from (N, 3, H, W) tensors in [0, 1]."""
    rows = []
    for s, h in zip(sr.numpy(), hr.numpy()):
        s8 = np.round(np.clip(s.astype(np.float64), 0, 1) * 255).transpose(1, 2, 0)
        h8 = np.round(np.clip(h.astype(np.float64), 0, 1) * 255).transpose(1, 2, 0)
        if crop:
            s8, h8 = s8[crop:-crop, crop:-crop], h8[crop:-crop, crop:-crop]
        sy, hy = _ref_y(s8), _ref_y(h8)
        rows.append(
            {
                "psnr_y": _ref_psnr(sy, hy),
                "ssim_y": _ref_ssim_2d(sy, hy),
                "psnr_rgb": _ref_psnr(s8, h8),
                "ssim_rgb": float(np.mean([_ref_ssim_2d(s8[..., c], h8[..., c]) for c in range(3)])),
            }
        )
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _measure(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> dict[str, float]:
    metric = SuperResolutionMetrics(crop_border=crop)
    metric.update(sr, hr)
    return {k: v.item() for k, v in metric.compute().items()}


def _assert_matches(ours: dict[str, float], ref: dict[str, float]) -> None:
    assert set(ours) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    for key in ref:
        assert abs(ours[key] - ref[key]) < 1e-6, (key, ours[key], ref[key])


def _photo_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two real photo crops and blurred/noisy versions of them."""
    gen = torch.Generator().manual_seed(0)
    crops = [data.astronaut()[100:148, 180:236], data.coffee()[150:198, 300:356]]
    hr = torch.stack([torch.from_numpy(c).permute(2, 0, 1).float() / 255 for c in crops])
    blurred = torch.nn.functional.avg_pool2d(hr, 3, stride=1, padding=1, count_include_pad=False)
    sr = blurred + 0.02 * torch.randn(hr.shape, generator=gen)
    return sr, hr


def test_matches_numpy_reference_on_photos_and_noise():
    sr, hr = _photo_pair()
    for crop in (0, 4):
        _assert_matches(_measure(sr, hr, crop), _reference(sr, hr, crop))
    # Random images, values outside [0, 1] included (they are clamped by the 8-bit quantization).
    gen = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 3, 30, 26, generator=gen)
    sr = hr + 0.1 * torch.randn(hr.shape, generator=gen)
    _assert_matches(_measure(sr, hr, 2), _reference(sr, hr, 2))


def test_psnr_is_averaged_per_image_not_from_the_mean_mse():
    hr = torch.full((2, 3, 16, 16), 100 / 255)
    sr = hr.clone()
    sr[0] = 102 / 255  # every value off by 2 -> MSE 4
    sr[1] = 120 / 255  # every value off by 20 -> MSE 400
    result = _measure(sr, hr, crop=0)
    psnr_small, psnr_large = 10 * math.log10(255**2 / 4), 10 * math.log10(255**2 / 400)
    assert result["psnr_rgb"] == pytest.approx((psnr_small + psnr_large) / 2, abs=1e-9)
    assert abs(result["psnr_rgb"] - 10 * math.log10(255**2 / 202)) > 5
    # Updating image by image gives the same mean as one batch.
    metric = SuperResolutionMetrics(crop_border=0)
    metric.update(sr[:1], hr[:1])
    metric.update(sr[1:], hr[1:])
    assert metric.compute()["psnr_rgb"].item() == pytest.approx(result["psnr_rgb"], abs=1e-12)


def test_states_merge_like_ddp_ranks():
    sr, hr = _photo_pair()
    rank0, rank1 = SuperResolutionMetrics(crop_border=4), SuperResolutionMetrics(crop_border=4)
    rank0.update(sr[:1], hr[:1])
    rank1.update(sr[1:], hr[1:])
    rank0.merge_state(rank1)  # applies each state's dist_reduce_fx, as the DDP sync does
    merged = {k: v.item() for k, v in rank0.compute().items()}
    _assert_matches(merged, _reference(sr, hr, 4))


def test_crop_border_ignores_edge_errors():
    hr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    sr = hr.clone()
    sr[..., :3, :] = 0  # damage only a 3-pixel band at the top
    assert _measure(sr, hr, crop=0)["psnr_y"] < 30
    cropped = _measure(sr, hr, crop=3)
    assert cropped["psnr_y"] == PSNR_CAP_DB and cropped["psnr_rgb"] == PSNR_CAP_DB
    assert cropped["ssim_y"] == pytest.approx(1.0, abs=1e-12)


def test_identical_images_are_capped_at_100_db():
    hr = torch.randint(0, 256, (2, 3, 24, 24), generator=torch.Generator().manual_seed(3)) / 255
    result = _measure(hr + 0.1 / 255, hr, crop=0)  # below half an 8-bit step: identical once quantized
    assert result["psnr_y"] == PSNR_CAP_DB and result["psnr_rgb"] == PSNR_CAP_DB
    assert result["ssim_y"] == pytest.approx(1.0, abs=1e-12)
    assert result["ssim_rgb"] == pytest.approx(1.0, abs=1e-12)


def test_helpers():
    x = torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.3])
    assert quantize(x).tolist() == [0.0, 0.0, 128.0, 255.0, 255.0]
    assert quantize(x).dtype == torch.float64
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    y = rgb_to_y(rgb.view(3, 3, 1, 1))
    assert y.shape == (3, 1, 1, 1)
    assert y.flatten().tolist() == pytest.approx([16.0, 235.0, 16.0 + 65.481])


def test_rejects_bad_inputs():
    metric = SuperResolutionMetrics(crop_border=4)
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 30))
    with pytest.raises(ValueError, match="SSIM needs"):
        metric.update(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="crop_border"):
        SuperResolutionMetrics(crop_border=-1)
