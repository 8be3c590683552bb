"""DiffAugment / ADA (lightning_modules.augment) and its place in the GAN core."""

import pytest
import torch

from lightning_modules.augment import DiffAugment
from tiny_configs import TASKS


@pytest.mark.parametrize("operation", ["color", "translation", "cutout"])
def test_each_operation_changes_the_images_and_keeps_their_gradients(operation):
    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16).mul(2).sub(1).requires_grad_(True)
    augmented = DiffAugment(policy=[operation])(images)
    assert augmented.shape == images.shape and not torch.equal(augmented, images)
    augmented.square().sum().backward()
    assert images.grad.abs().sum() > 0


def test_seeded_draws_repeat_and_probability_zero_is_the_identity():
    images = torch.rand(4, 4, 16, 16)
    augment = DiffAugment()

    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return augment(images)

    draws = [draw(seed) for seed in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert torch.equal(DiffAugment(probability=0.0)(images), images)


def test_colour_leaves_the_channels_after_color_channels_alone():
    torch.manual_seed(0)
    images = torch.rand(4, 4, 8, 8)  # RGB + an inpainting-style mask channel
    augmented = DiffAugment(policy=["color"], color_channels=3)(images)
    assert torch.equal(augmented[:, 3], images[:, 3]) and not torch.equal(augmented[:, :3], images[:, :3])


def test_ada_raises_p_while_the_discriminator_is_overconfident_and_lowers_it_after():
    augment = DiffAugment(probability=0.0, ada_target=0.6, ada_interval=2, ada_kimg=0.1)  # 100 images: fast moves
    for _ in range(4):
        augment.observe(torch.ones(10), batch_size=10)
    assert augment.p.item() == pytest.approx(0.4)  # two adjustments of 10 * 2 / 100
    for _ in range(2):
        augment.observe(-torch.ones(10), batch_size=10)
    assert augment.p.item() == pytest.approx(0.2)
    assert "p" in augment.state_dict()


def test_gan_trains_with_ada_and_keeps_p_in_its_checkpoint(run_cli, tmp_path):
    config, _, tiny = TASKS["gan"]
    cli = run_cli("fit", "--config", config, *tiny, "--trainer.max_steps=4", "--trainer.log_every_n_steps=1",
                  "--trainer.limit_val_batches=0", "--progress_bar.refresh_rate=0",
                  "--model.init_args.augment=lightning_modules.augment.DiffAugment",
                  "--model.init_args.augment.init_args.probability=0.5",
                  "--model.init_args.augment.init_args.ada_target=0.6",
                  "--model.init_args.augment.init_args.ada_interval=1",
                  "--model.init_args.augment.init_args.ada_kimg=0.1")
    p = cli.model.augment.p.item()
    assert p != 0.5 and cli.trainer.callback_metrics["train/augment_p"].item() == pytest.approx(p)
    checkpoint = torch.load(tmp_path / cli.trainer.checkpoint_callback.last_model_path, weights_only=True)
    assert checkpoint["state_dict"]["augment.p"].item() == pytest.approx(p)
