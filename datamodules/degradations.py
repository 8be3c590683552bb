"""Real-ESRGAN's second-order degradation model: realistic LR images made from HR batches.

Wang et al. 2021 ("Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic
Data") degrade each HR image twice with blur, resize, noise and JPEG, then resize to the LR
size and apply a final sinc filter and JPEG in random order. Models trained on such pairs
restore real photos, which bicubic-trained ones do not.

The heavy work runs batched on the batch's device (the datamodule calls it from
``on_after_batch_transfer``): kornia's ``filter2d`` (one kernel per sample), its differentiable
JPEG (one quality per sample) and grayscale conversion, and ``F.interpolate``. What kornia lacks
is written here: the blur kernel families of the paper (isotropic and anisotropic Gaussian,
generalized Gaussian, plateau, and the sinc filter) and the per-sample Gaussian/Poisson noise
with its gray variant.

Every random choice comes from the samples' seeds: a sample's kernels, noise kind and
strength and JPEG qualities from its own seed; what the whole batch shares (the resize factors
and modes, as in the paper, and the order of the final steps) and the noise fields from all of
the batch's seeds. The same seeds give the same LR on the same device, so resumed runs stay exact and a
validation set degraded once with fixed seeds stays comparable across runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d
from torch import Tensor

#: Kernel families of :func:`random_kernel`, in the order of ``DegradationStage.kernel_prob``.
KERNEL_FAMILIES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


def _grid(size: int) -> tuple[Tensor, Tensor]:
    """(x, y) pixel offsets from the centre of a ``size`` x ``size`` kernel, in float64."""
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x, y


def _mahalanobis(size: int, sigma_x: float, sigma_y: float, theta: float) -> Tensor:
    """x^T S^-1 x on the kernel grid for the covariance S = R(theta) diag(sigma_x^2, sigma_y^2) R^T."""
    x, y = _grid(size)
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * x + sin * y, -sin * x + cos * y  # offsets along the rotated axes
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalized(kernel: Tensor) -> Tensor:
    return (kernel / kernel.sum()).float()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> Tensor:
    """Bivariate Gaussian, anisotropic when ``sigma_x != sigma_y``, rotated by ``theta``."""
    return _normalized(torch.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> Tensor:
    """exp(-0.5 (x^T S^-1 x)^beta): flatter top and sharper fall than a Gaussian for beta > 1."""
    return _normalized(torch.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> Tensor:
    """1 / ((x^T S^-1 x)^beta + 1): a plateau with heavy tails."""
    return _normalized(1.0 / (_mahalanobis(size, sigma_x, sigma_y, theta) ** beta + 1.0))


def sinc_kernel(size: int, cutoff: float) -> Tensor:
    """The ideal circular low-pass filter with angular ``cutoff`` (radians per pixel), cut to
    ``size``: cutoff J1(cutoff r) / (2 pi r), whose limit at r = 0 is cutoff^2 / (4 pi). It
    rings like the overshoot artifacts of sharpened and resized photos."""
    x, y = _grid(size)
    r = torch.sqrt(x**2 + y**2)
    kernel = cutoff * torch.special.bessel_j1(cutoff * r) / (2 * math.pi * r.clamp_min(1e-12))
    kernel = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), kernel)
    return _normalized(kernel)


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad an odd square kernel to ``size`` x ``size`` (same filter, one batchable shape)."""
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad))


def pulse_kernel(size: int) -> Tensor:
    """The identity filter."""
    kernel = torch.zeros(size, size)
    kernel[size // 2, size // 2] = 1.0
    return kernel


@dataclass(frozen=True)
class DegradationStage:
    """One round of blur, resize, noise and JPEG (Real-ESRGAN's first-round defaults).

    Args:
        blur_prob: chance that the round blurs at all.
        kernel_prob: chance of each kernel family, in the order of :data:`KERNEL_FAMILIES`.
        sinc_prob: chance that the blur kernel is a sinc filter instead.
        blur_sigma: range of the Gaussian-type kernels' standard deviations (pixels).
        betag_range / betap_range: shape ranges of the generalized Gaussian and plateau kernels.
        resize_prob: chance of resizing up, down, or keeping the size.
        resize_range: range of the resize factor (below 1 down, above 1 up).
        gaussian_noise_prob: chance of Gaussian noise (else Poisson noise).
        noise_range: Gaussian noise standard deviation, in 8-bit units.
        poisson_scale_range: scale of the Poisson noise.
        gray_noise_prob: chance that the noise is the same in the three channels.
        jpeg_range: JPEG quality range.
    """

    blur_prob: float = 1.0
    kernel_prob: tuple[float, float, float, float, float, float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    def __post_init__(self):
        if len(self.kernel_prob) != len(KERNEL_FAMILIES) or len(self.resize_prob) != 3:
            raise ValueError(f"kernel_prob needs {len(KERNEL_FAMILIES)} values ({', '.join(KERNEL_FAMILIES)}) "
                             f"and resize_prob 3 (up, down, keep); got {self.kernel_prob} and {self.resize_prob}")
        low, high = self.jpeg_range
        if not 1 <= low <= high <= 100:
            raise ValueError(f"jpeg_range must lie in [1, 100], got {self.jpeg_range}")


#: Real-ESRGAN's second round: lighter blur, more often keeping the size, less noise.
SECOND_STAGE = DegradationStage(
    blur_prob=0.8, blur_sigma=(0.2, 1.5), resize_prob=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
    noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5),
)


def random_kernel(rng: random.Random, stage: DegradationStage, sizes: Sequence[int], max_size: int) -> Tensor:
    """A blur kernel drawn as Real-ESRGAN draws it, zero-padded to ``max_size``: a random odd
    size, a sinc filter with ``stage.sinc_prob``, else a family by ``stage.kernel_prob``."""
    size = rng.choice(sizes)
    if rng.random() < stage.sinc_prob:
        cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return pad_kernel(sinc_kernel(size, cutoff), max_size)
    family = rng.choices(KERNEL_FAMILIES, weights=stage.kernel_prob)[0]
    sigma_x = rng.uniform(*stage.blur_sigma)
    if family.endswith("iso") and not family.endswith("aniso"):
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y, theta = rng.uniform(*stage.blur_sigma), rng.uniform(-math.pi, math.pi)
    if family.startswith("generalized"):
        kernel = generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, _shape(rng, stage.betag_range))
    elif family.startswith("plateau"):
        kernel = plateau_kernel(size, sigma_x, sigma_y, theta, _shape(rng, stage.betap_range))
    else:
        kernel = gaussian_kernel(size, sigma_x, sigma_y, theta)
    return pad_kernel(kernel, max_size)


def _shape(rng: random.Random, bounds: tuple[float, float]) -> float:
    """Half the draws below 1 and half above, as in the paper (beta < 1 is rare otherwise)."""
    low, high = bounds
    return rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high)


def filter_images(images: Tensor, kernels: Tensor) -> Tensor:
    """``images`` (N, C, H, W) filtered with one odd square kernel per sample (N, k, k), with
    reflected borders: kornia's ``filter2d``, computed through the FFT (the same result, while a
    direct 21 x 21 convolution costs 441 multiply-adds per pixel and channel). The kernels here
    are point-symmetric, so convolution and kornia's correlation agree."""
    pad = kernels.shape[-1] // 2
    height, width = images.shape[-2:]
    if pad >= min(height, width):  # reflection needs a border smaller than the image
        return filter2d(images, kernels, border_type="replicate")
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    size = padded.shape[-2:]
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(kernels.to(images.dtype).unsqueeze(1), s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    return full[..., 2 * pad : 2 * pad + height, 2 * pad : 2 * pad + width]


def noise(images: Tensor, p: dict[str, Tensor], generator: torch.Generator) -> Tensor:
    """Real-ESRGAN's noise for (N, 3, H, W) ``images`` in [0, 1]: per sample Gaussian noise
    (``sigma``, [0, 1] units) where ``gaussian``, else Poisson shot noise of its 8-bit levels
    (times ``poisson_scale``), the same in every channel where ``gray``. All of ``p`` are
    per-sample tensors; the noise fields come from ``generator`` (only the kinds in use are drawn)."""
    n, _, height, width = images.shape
    shape = (n, 1, 1, 1)
    gaussian, gray = p["gaussian"].view(shape), p["gray"].view(shape)
    field = torch.zeros_like(images)
    if gaussian.any():
        color = torch.randn(images.shape, generator=generator, device=images.device)
        mono = torch.randn((n, 1, height, width), generator=generator, device=images.device)
        field = torch.where(gaussian, torch.where(gray, mono, color) * p["sigma"].view(shape), field)
    if not gaussian.all():
        quantized = images.clamp(0, 1).mul(255).round()
        # The number of 8-bit levels in use, rounded up to a power of two, is the photon scale.
        offsets = 256 * torch.arange(n, device=images.device)[:, None]
        counts = torch.bincount((quantized.long().flatten(1) + offsets).flatten(), minlength=256 * n)
        levels = 2 ** torch.log2(counts.view(n, 256).count_nonzero(dim=1).clamp_min(2).float()).ceil().view(shape)
        color, scale = quantized / 255, p["poisson_scale"].view(shape)
        poisson = gaussian.logical_not().view(n)
        for rows, luma in ((poisson & gray.view(n), True), (poisson & gray.view(n).logical_not(), False)):
            index = rows.nonzero().squeeze(1)
            if len(index):  # only the samples that take this kind: sampling Poisson noise is slow
                source = rgb_to_grayscale(color[index]) if luma else color[index]  # luma: one noise for all channels
                shot = torch.poisson(source * levels[index], generator=generator) / levels[index] - source
                field[index] = (shot * scale[index]).expand(-1, 3, -1, -1)
    return field


class RealESRGANDegradation:
    """The second-order degradation of Real-ESRGAN, from HR batches to LR batches.

    Args:
        first / second: the two rounds of blur, resize, noise and JPEG (the second round's JPEG
            is the one of the final step).
        final_sinc_prob: chance of the final sinc filter (with a random cutoff in [pi/3, pi]).
        kernel_sizes: the odd kernel sizes drawn from (the paper: 7 to 21).
    """

    def __init__(
        self,
        first: DegradationStage = DegradationStage(),
        second: DegradationStage = SECOND_STAGE,
        final_sinc_prob: float = 0.8,
        kernel_sizes: Sequence[int] = (7, 9, 11, 13, 15, 17, 19, 21),
    ):
        if not kernel_sizes or any(size % 2 == 0 or size < 1 for size in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive sizes, got {list(kernel_sizes)}")
        self.first, self.second, self.final_sinc_prob = first, second, final_sinc_prob
        self.kernel_sizes, self.max_kernel = tuple(kernel_sizes), max(kernel_sizes)

    def sample_parameters(self, seed: int) -> dict:
        """One sample's kernels, noise settings and JPEG qualities, all from its ``seed``."""
        rng = random.Random(seed)
        identity = pulse_kernel(self.max_kernel)
        params = {}
        for name, stage in (("first", self.first), ("second", self.second)):
            blurred = rng.random() < stage.blur_prob
            kernel = random_kernel(rng, stage, self.kernel_sizes, self.max_kernel)
            params[name] = {
                "kernel": kernel if blurred else identity,
                "gaussian": rng.random() < stage.gaussian_noise_prob,
                "gray": rng.random() < stage.gray_noise_prob,
                "sigma": rng.uniform(*stage.noise_range) / 255,
                "poisson_scale": rng.uniform(*stage.poisson_scale_range),
                "quality": rng.uniform(*stage.jpeg_range),
            }
        if rng.random() < self.final_sinc_prob:
            size = rng.choice(self.kernel_sizes)
            params["sinc"] = pad_kernel(sinc_kernel(size, rng.uniform(math.pi / 3, math.pi)), self.max_kernel)
        else:
            params["sinc"] = identity
        return params

    def _batch_choices(self, seeds: Sequence[int]) -> dict:
        """What the batch shares: each round's resize factor and mode (one LR size per batch, as
        in the paper), the order of the final steps, and the seed of the noise fields."""
        rng = random.Random(",".join(map(str, seeds)))
        resizes = []
        for stage in (self.first, self.second):
            direction = rng.choices(("up", "down", "keep"), weights=stage.resize_prob)[0]
            low, high = stage.resize_range
            factor = {"up": rng.uniform(1.0, high), "down": rng.uniform(low, 1.0), "keep": 1.0}[direction]
            resizes.append((factor, rng.choice(RESIZE_MODES)))
        return {"resizes": resizes, "jpeg_first": rng.random() < 0.5, "final_mode": rng.choice(RESIZE_MODES),
                "noise_seed": rng.getrandbits(63)}

    @torch.no_grad()
    def __call__(self, hr: Tensor, seeds: Sequence[int], scale: int) -> Tensor:
        """LR images for float (N, 3, H, W) ``hr`` in [0, 1] (H, W multiples of ``scale``), one
        seed per sample; rounded to 8-bit levels like a saved LR file."""
        if hr.shape[-2] % scale or hr.shape[-1] % scale:
            raise ValueError(f"HR size {tuple(hr.shape[-2:])} is not a multiple of the scale {scale}")
        if len(seeds) != len(hr):
            raise ValueError(f"{len(seeds)} seeds for a batch of {len(hr)}")
        seeds = [int(seed) for seed in seeds]
        device = hr.device
        params = [self.sample_parameters(seed) for seed in seeds]
        shared = self._batch_choices(seeds)
        generator = torch.Generator(device=device).manual_seed(shared["noise_seed"])
        lr_size = (hr.shape[-2] // scale, hr.shape[-1] // scale)

        def per_sample(stage: str, key: str) -> Tensor:
            values = [p[stage] if stage == "sinc" else p[stage][key] for p in params]
            return torch.stack(values).to(device) if key == "kernel" else torch.tensor(values, device=device)

        def jpeg(images: Tensor, stage: str) -> Tensor:
            return jpeg_codec_differentiable(images.clamp(0, 1), per_sample(stage, "quality").float())

        def resize(images: Tensor, size: tuple[int, int], mode: str) -> Tensor:
            return F.interpolate(images, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))

        out = hr.float()
        for stage, (factor, mode) in zip(("first", "second"), shared["resizes"]):
            out = filter_images(out, per_sample(stage, "kernel"))
            base = out.shape[-2:] if stage == "first" else lr_size
            out = resize(out, (max(int(base[0] * factor), 1), max(int(base[1] * factor), 1)), mode)
            settings = {key: per_sample(stage, key) for key in ("gaussian", "gray", "sigma", "poisson_scale")}
            out = (out + noise(out, settings, generator)).clamp(0, 1)
            if stage == "first":
                out = jpeg(out, "first")

        def resize_and_sinc(images: Tensor) -> Tensor:
            return filter_images(resize(images, lr_size, shared["final_mode"]), per_sample("sinc", "kernel"))

        out = resize_and_sinc(jpeg(out, "second")) if shared["jpeg_first"] else jpeg(resize_and_sinc(out), "second")
        return out.clamp(0, 1).mul(255).round().div(255).to(hr.dtype)
