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


def test_cutout_is_diffaugments_square_centred_anywhere_and_clipped_at_the_border():
    torch.manual_seed(0)
    kept = DiffAugment(policy=["cutout"])(torch.ones(4000, 1, 32, 32))[:, 0]
    rows, columns = (kept == 0).any(dim=2), (kept == 0).any(dim=1)
    # Every hole is one rectangle: the outer product of the rows and columns it touches.
    assert torch.equal(kept == 0, rows[:, :, None] & columns[:, None, :])
    sides = torch.cat([rows.sum(1), columns.sum(1)])
    assert sides.max() == 16 and sides.min() == 8  # a 16-px square, clipped down to half at the border
    # The centre is uniform over the 33 positions 0..32: each side covers 8..16 pixels, 456/33 on average.
    assert sides.float().mean().item() == pytest.approx(456 / 33, abs=0.1)
    assert torch.equal(DiffAugment(policy=["cutout"], probability=0.0)(kept[:, None]), kept[:, None])


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


def test_ada_starts_at_p_zero_as_in_the_paper_and_diffaugment_at_one():
    assert DiffAugment(ada_target=0.6).p.item() == 0.0 and DiffAugment().p.item() == 1.0
    assert DiffAugment(probability=0.3, ada_target=0.6).p.item() == pytest.approx(0.3)


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
    # One batch: one adjustment of p by 16 * 1 / 100 (r_t of 16 samples is never exactly the target).
    cli = run_cli("fit", "--config", config, *tiny, "--trainer.max_steps=2", "--trainer.log_every_n_steps=1",
                  "--trainer.limit_val_batches=0", "--progress_bar.refresh_rate=0",
                  "--model.init_args.augment=lightning_modules.augment.DiffAugment",
                  "--model.init_args.augment.init_args.probability=0.5",
                  "--model.init_args.augment.init_args.ada_target=0.6",
                  "--model.init_args.augment.init_args.ada_interval=1",
                  "--model.init_args.augment.init_args.ada_kimg=0.1")
    p = cli.model.augment.p.item()
    assert p == pytest.approx(0.5 + 0.16) or p == pytest.approx(0.5 - 0.16)
    assert cli.trainer.callback_metrics["train/augment_p"].item() == pytest.approx(p)
    checkpoint = torch.load(tmp_path / cli.trainer.checkpoint_callback.last_model_path, weights_only=True)
    assert checkpoint["state_dict"]["augment.p"].item() == pytest.approx(p)
