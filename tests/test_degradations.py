"""Real-ESRGAN degradations: the kernel families, the noise, the pipeline's seeding, and the SR
data and configs that use them."""

import math

import pytest
import torch
from kornia.filters import filter2d

from datamodules.degradations import (
    SECOND_STAGE,
    DegradationStage,
    RealESRGANDegradation,
    filter_images,
    gaussian_kernel,
    generalized_gaussian_kernel,
    noise,
    pad_kernel,
    plateau_kernel,
    random_kernel,
    sinc_kernel,
)
from datamodules.embedded import EMBEDDED_VAL
from datamodules.image_io import read_image
from datamodules.super_resolution import SuperResolutionDataModule
from tiny_configs import TASKS

KERNELS = {
    "gaussian": lambda: gaussian_kernel(21, 2.5, 1.0, 0.7),
    "generalized": lambda: generalized_gaussian_kernel(21, 2.0, 1.2, -0.4, 2.5),
    "plateau": lambda: plateau_kernel(21, 1.5, 2.5, 1.1, 1.4),
    "sinc": lambda: sinc_kernel(21, math.pi / 4),
}


@pytest.mark.parametrize("family", KERNELS)
def test_every_kernel_family_sums_to_one_and_is_point_symmetric(family):
    kernel = KERNELS[family]()
    assert kernel.shape == (21, 21)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(kernel, kernel.flip(0, 1))  # so convolution == correlation
    assert kernel[10, 10] == kernel.max()


def test_gaussian_by_hand_and_its_covariance():
    # 3x3, sigma 1: centre 1, edges exp(-1/2), corners exp(-1), normalised.
    values = torch.tensor([[math.exp(-1), math.exp(-0.5), math.exp(-1)], [math.exp(-0.5), 1.0, math.exp(-0.5)],
                           [math.exp(-1), math.exp(-0.5), math.exp(-1)]])
    torch.testing.assert_close(gaussian_kernel(3, 1.0, 1.0), values / values.sum())
    # Anisotropic and rotated: the kernel's second moments are R diag(sx^2, sy^2) R^T.
    sx, sy, theta = 3.0, 1.5, math.pi / 6
    kernel = gaussian_kernel(41, sx, sy, theta).double()
    axis = torch.arange(41, dtype=torch.float64) - 20
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    moments = torch.tensor([[(kernel * x * x).sum(), (kernel * x * y).sum()], [(kernel * x * y).sum(), (kernel * y * y).sum()]])
    rotation = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    expected = rotation @ torch.diag(torch.tensor([sx**2, sy**2], dtype=torch.float64)) @ rotation.T
    torch.testing.assert_close(moments, expected, rtol=1e-3, atol=1e-3)
    # Isotropic kernels are symmetric under transposition; anisotropic ones are not.
    iso = gaussian_kernel(21, 2.0, 2.0)
    torch.testing.assert_close(iso, iso.T)
    assert not torch.allclose(kernel, kernel.T)


def test_generalized_gaussian_at_beta_one_is_the_gaussian_and_shape_changes_the_tails():
    torch.testing.assert_close(generalized_gaussian_kernel(21, 2.0, 1.0, 0.3, 1.0), gaussian_kernel(21, 2.0, 1.0, 0.3))
    flat, peaked = generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, 4.0), generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, 0.5)
    gaussian = gaussian_kernel(21, 2.0, 2.0)
    assert flat[10, 10] / flat[10, 11] < 1.01 < 1.1 < gaussian[10, 10] / gaussian[10, 11]  # a flat top
    assert flat[10, 0] < gaussian[10, 0] < peaked[10, 0]  # lighter / heavier tails
    # The plateau kernel has heavier tails than the Gaussian of the same sigma.
    assert plateau_kernel(21, 2.0, 2.0, 0.0, 1.0)[10, 0] > gaussian_kernel(21, 2.0, 2.0)[10, 0]


def test_sinc_is_a_low_pass_that_rings_and_padding_keeps_the_filter():
    kernel = sinc_kernel(21, math.pi / 3)
    assert kernel.min() < 0  # ringing lobes
    spectrum = torch.fft.fft2(pad_kernel(kernel, 63)).abs()
    assert spectrum[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert spectrum[31, 31] < 0.05  # the highest frequency is cut
    padded = pad_kernel(sinc_kernel(7, math.pi / 2), 21)
    assert padded.shape == (21, 21) and padded.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(padded[7:14, 7:14], sinc_kernel(7, math.pi / 2))


def test_random_kernels_have_the_batch_size_and_depend_on_the_seed_only():
    import random

    kernels = [random_kernel(random.Random(seed), DegradationStage(), (7, 9, 21), 21) for seed in range(40)]
    assert all(k.shape == (21, 21) and k.sum().item() == pytest.approx(1.0, abs=1e-5) for k in kernels)
    assert len({k.sum(dim=0).round(decimals=4).tolist().__repr__() for k in kernels}) == 40
    torch.testing.assert_close(random_kernel(random.Random(3), SECOND_STAGE, (7, 21), 21),
                               random_kernel(random.Random(3), SECOND_STAGE, (7, 21), 21))


def test_fft_filtering_equals_kornias_filter2d():
    images = torch.rand(3, 3, 40, 52)
    kernels = torch.stack([KERNELS["gaussian"](), KERNELS["sinc"](), pad_kernel(gaussian_kernel(7, 1.0, 0.5, 0.2), 21)])
    torch.testing.assert_close(filter_images(images, kernels), filter2d(images, kernels, border_type="reflect"),
                               atol=1e-5, rtol=0)
    small = torch.rand(3, 3, 8, 9)  # smaller than the kernel: replicated borders
    torch.testing.assert_close(filter_images(small, kernels), filter2d(small, kernels, border_type="replicate"))


def test_noise_kinds_gray_and_strength():
    images = torch.rand(4, 3, 64, 64)
    settings = {"gaussian": torch.tensor([True, True, False, False]), "gray": torch.tensor([False, True, False, True]),
                "sigma": torch.full((4,), 10 / 255), "poisson_scale": torch.full((4,), 1.0)}
    field = noise(images, settings, torch.Generator().manual_seed(0))
    assert field[0].std().item() == pytest.approx(10 / 255, rel=0.05)
    for gray in (1, 3):  # the same noise in every channel
        torch.testing.assert_close(field[gray, 0], field[gray, 1])
        torch.testing.assert_close(field[gray, 0], field[gray, 2])
    assert not torch.equal(field[0, 0], field[0, 1]) and not torch.equal(field[2, 0], field[2, 1])
    assert field[2].abs().mean() > 0 and abs(field[2].mean().item()) < 2e-3  # shot noise is zero-mean


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / (a - b).pow(2).mean().item())


def _photo(size: int = 128) -> torch.Tensor:
    return read_image(EMBEDDED_VAL[0])[:, :size, :size].float().div(255).unsqueeze(0)


def test_pipeline_is_deterministic_per_seed_and_varies_across_seeds():
    degradation, hr = RealESRGANDegradation(), _photo().repeat(4, 1, 1, 1)
    lr = degradation(hr, [1, 2, 3, 4], 4)
    assert lr.shape == (4, 3, 32, 32) and 0 <= lr.min() and lr.max() <= 1
    torch.testing.assert_close(lr * 255, (lr * 255).round(), atol=1e-4, rtol=0)  # saved-file levels
    assert torch.equal(lr, degradation(hr, [1, 2, 3, 4], 4))
    assert not torch.equal(lr, degradation(hr, [5, 6, 7, 8], 4))
    assert all(not torch.equal(lr[0], lr[i]) for i in range(1, 4))  # same image, different seeds
    with pytest.raises(ValueError, match="multiple of the scale"):
        degradation(hr[..., :30], [1, 2, 3, 4], 4)


def _identity_stage(quality: float) -> DegradationStage:
    return DegradationStage(blur_prob=0.0, resize_prob=(0.0, 0.0, 1.0), gaussian_noise_prob=1.0,
                            noise_range=(0.0, 0.0), jpeg_range=(quality, quality))


def test_jpeg_at_quality_100_stays_close_and_low_quality_does_not():
    hr = _photo()

    def quality(q: float) -> float:
        stage = _identity_stage(q)
        lr = RealESRGANDegradation(stage, stage, final_sinc_prob=0.0)(hr, [0], 1)
        return psnr(lr, hr)

    assert quality(100) > 38
    assert quality(95) > quality(50) > quality(30) + 1


def test_datamodule_degrades_training_batches_on_transfer_and_fixes_validation(tmp_path):
    def data(seed: int = 0) -> SuperResolutionDataModule:
        module = SuperResolutionDataModule(patch_size=64, batch_size=3, repeats=1, degradation=RealESRGANDegradation(),
                                           degradation_seed=seed, degraded_copies=2)
        module.setup("fit")
        return module

    module = data()
    batch = next(iter(module.train_dataloader()))
    assert set(batch) == {"hr", "seed"} and batch["hr"].shape == (3, 3, 64, 64)
    batch = module.on_after_batch_transfer(batch, 0)
    assert batch["lr"].shape == (3, 3, 16, 16)
    assert len(module.val_set) == 2 * len(EMBEDDED_VAL)
    first, again, other = module.val_set[0], data().val_set[0], data(seed=1).val_set[0]
    assert torch.equal(first["lr"], again["lr"]) and not torch.equal(first["lr"], other["lr"])
    assert not torch.equal(module.val_set[0]["lr"], module.val_set[len(EMBEDDED_VAL)]["lr"])  # two copies
    assert torch.equal(module.val_set[0]["hr"], module.val_set[len(EMBEDDED_VAL)]["hr"])


def test_real_esrgan_stage_trains_from_the_real_esrnet_checkpoint(run_cli, tmp_path):
    """Both embedded configs through the CLI: the PSNR stage, then the GAN stage from its weights."""
    config, steps, tiny = TASKS["realesrnet"]
    common = [*tiny, "--trainer.limit_val_batches=2", "--progress_bar.refresh_rate=0", "--auto_bf16=false",
              "--trainer.enable_model_summary=false"]
    psnr_stage = run_cli("fit", "--config", config, *common, f"--trainer.max_steps={steps}",
                         f"--trainer.val_check_interval={steps}")
    assert "val/bicubic_psnr_y" in psnr_stage.trainer.callback_metrics
    checkpoint = psnr_stage.trainer.checkpoint_callback.last_model_path
    gan = run_cli("fit", "--config", "configs/sr/realesrgan_embedded.yaml", *common,
                  "--model.init_args.discriminator.init_args.num_feat=4", f"--model.init_args.pretrained_generator={checkpoint}",
                  "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1")
    metrics = gan.trainer.callback_metrics
    assert gan.trainer.global_step == 4 and {"val/psnr_y", "val/raw_psnr_y", "train/d_loss"} <= set(metrics)
