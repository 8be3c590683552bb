"""The shared GAN machinery: losses on hand-computed values, step isolation, EMA, schedulers,
clipping, non-finite losses and checkpoint round trips (tiny DCGAN on 8x8 digits, no CLI)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from datamodules.generation import GenerationDataModule
from lightning_modules import gan_losses as L
from lightning_modules.gan import GANModule
from networks.dcgan import DCGANDiscriminator, DCGANGenerator

LOG2 = math.log(2.0)
SOFTPLUS_2 = math.log(1 + math.exp(2.0))  # 2.126928
SOFTPLUS_MINUS_2 = math.log(1 + math.exp(-2.0))  # 0.126928


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values)


# ------------------------------------------------------------------------------------ losses
def test_nonsaturating_loss_values():
    # D: -log sigmoid(0) - log(1 - sigmoid(0)) = 2 log 2; the real term of 2 is softplus(-2).
    assert L.nonsaturating_d_loss(t(0.0, 2.0), t(0.0, 0.0)).item() == pytest.approx((LOG2 + SOFTPLUS_MINUS_2) / 2 + LOG2)
    assert L.nonsaturating_g_loss(t(0.0, -2.0)).item() == pytest.approx((LOG2 + SOFTPLUS_2) / 2)


def test_hinge_loss_values():
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1+0)=1 -> 0.5
    assert L.hinge_d_loss(t(2.0, 0.5), t(-2.0, 0.0)).item() == pytest.approx(0.75)
    assert L.hinge_g_loss(t(-2.0, 0.0)).item() == pytest.approx(1.0)


def test_wasserstein_loss_values():
    assert L.wasserstein_d_loss(t(2.0, 0.5), t(-2.0, 0.0)).item() == pytest.approx(-1.0 - 1.25)
    assert L.wasserstein_g_loss(t(-2.0, 0.0)).item() == pytest.approx(1.0)


def test_relativistic_average_loss_values():
    real, fake = t(1.0, 3.0), t(0.0, 2.0)  # means 2 and 1
    # D: BCE(real - 1 = [0, 2], 1) and BCE(fake - 2 = [-2, 0], 0), both (log 2 + softplus(-2)) / 2
    d_expected = (LOG2 + SOFTPLUS_MINUS_2) / 2
    assert L.ragan_d_loss(real, fake).item() == pytest.approx(d_expected)
    # G: the same differences with swapped targets, both (log 2 + softplus(2)) / 2
    assert L.ragan_g_loss(fake, real).item() == pytest.approx((LOG2 + SOFTPLUS_2) / 2)
    with pytest.raises(ValueError, match="real images"):
        L.ragan_g_loss(fake)


def test_gradient_penalty_and_r1_on_a_linear_critic():
    critic = lambda x: 3 * x[:, 0] + 4 * x[:, 1]  # noqa: E731 - gradient norm 5 everywhere
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    assert L.gradient_penalty(critic, real, fake).item() == pytest.approx((5 - 1) ** 2)
    real = real.requires_grad_(True)
    assert L.r1_penalty(critic(real), real).item() == pytest.approx(25 / 2)
    square = lambda x: x.pow(2).sum(dim=1)  # noqa: E731 - gradient 2x
    assert L.r1_penalty(square(real), real).item() == pytest.approx(2 * real.detach().pow(2).sum(1).mean().item())


def test_wgan_gp_without_penalty_weight_is_rejected():
    with pytest.raises(ValueError, match="gradient_penalty_weight"):
        tiny_gan(loss="wgan-gp")


# ------------------------------------------------------------------------------------ EMA
def test_ema_update_rule_covers_parameters_and_buffers():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ema.update_parameters(net)  # the first update copies
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net(torch.randn(8, 3))  # moves the BN running statistics
    ema.update_parameters(net)
    for name, value in net.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(ema.module.state_dict()[name], 0.9 * before[name] + 0.1 * value)


# ------------------------------------------------------------------------------------ training
def tiny_gan(cls: type[GANModule] = GANModule, **kwargs) -> GANModule:
    torch.manual_seed(0)
    kwargs = {
        "generator": DCGANGenerator(latent_dim=8, image_size=8, channels=1, base_width=4),
        "discriminator": DCGANDiscriminator(image_size=8, channels=1, base_width=4),
        "generator_optimizer": partial(torch.optim.Adam, lr=1e-2, betas=(0.5, 0.999)),
        "discriminator_optimizer": partial(torch.optim.Adam, lr=1e-2, betas=(0.5, 0.999)),
        "num_grid_samples": 4,
        **kwargs,
    }
    return cls(**kwargs)


def tiny_data() -> GenerationDataModule:
    """32 training digits (2 batches per epoch); validation is off in these tests."""
    return GenerationDataModule(image_size=8, batch_size=16, val_size=1797 - 32)


def fit(model: GANModule, max_steps: int, ckpt_path=None) -> Trainer:
    trainer = Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    trainer.fit(model, tiny_data(), ckpt_path=ckpt_path, weights_only=True)
    return trainer


def parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict, module: nn.Module) -> set[bool]:
    return {not torch.equal(before[name], p) for name, p in module.named_parameters()}


class StepSpy(GANModule):
    """Records the networks between the discriminator step and the generator step."""

    def generator_step(self, *args, **kwargs):
        self.after_d_step = (parameters(self.generator), parameters(self.discriminator))
        return super().generator_step(*args, **kwargs)


def test_each_step_updates_only_its_network_and_the_ema_follows_the_generator():
    model = tiny_gan(StepSpy)
    g0, d0 = parameters(model.generator), parameters(model.discriminator)
    trainer = fit(model, max_steps=2)  # one batch: one D step, one G step
    assert trainer.global_step == 2
    g1, d1 = model.after_d_step
    assert all(torch.equal(g0[k], g1[k]) for k in g0), "the discriminator step changed the generator"
    assert changed(d0, model.discriminator) == {True} and all(not torch.equal(d0[k], d1[k]) for k in d0)
    assert changed(d1, model.discriminator) == {False}, "the generator step changed the discriminator"
    assert changed(g1, model.generator) == {True}
    # EMA: started as a copy of the initial generator, then one update with decay 0.999
    for name, p in model.generator_ema.module.named_parameters():
        torch.testing.assert_close(p, 0.999 * g0[name] + 0.001 * model.generator.get_parameter(name))
        assert not p.requires_grad


def test_discriminator_steps_per_generator_step_and_global_step():
    model = tiny_gan(discriminator_steps=2, loss="hinge", r1_weight=1.0)
    trainer = fit(model, max_steps=6)  # 4 batches: 4 D steps + 2 G steps
    opt_g, opt_d = trainer.optimizers
    assert int(opt_d.state_dict()["state"][0]["step"]) == 4
    assert int(opt_g.state_dict()["state"][0]["step"]) == 2
    assert int(model.generator_ema.n_averaged) == 3  # the copy at fit start + 2 updates


@pytest.mark.parametrize("interval, expected", [("step", 0.5**4), ("epoch", 0.5**2)])
def test_schedulers_step_per_optimizer_step_or_per_epoch(interval, expected):
    halve = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    model = tiny_gan(generator_scheduler=halve, discriminator_scheduler=halve, scheduler_interval=interval)
    trainer = fit(model, max_steps=8)  # 4 batches = 4 steps of each optimizer = 2 epochs

    for optimizer in trainer.optimizers:
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * expected)


def test_gradient_clipping_by_value_bounds_the_update():
    sgd = partial(torch.optim.SGD, lr=1.0)
    model = tiny_gan(generator_optimizer=sgd, discriminator_optimizer=sgd, gradient_clip_val=1e-3,
                     gradient_clip_algorithm="value", loss="wgan-gp", gradient_penalty_weight=10.0)
    g0, d0 = parameters(model.generator), parameters(model.discriminator)
    fit(model, max_steps=2)
    for before, network in ((g0, model.generator), (d0, model.discriminator)):
        for name, p in network.named_parameters():
            assert (p - before[name]).abs().max() <= 1.001e-3
    assert changed(g0, model.generator) == {True}


def test_non_finite_loss_names_the_step_and_the_term():
    model = tiny_gan()
    with torch.no_grad():
        model.generator.net[-2].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite discriminator loss at global step 0 .*\['adversarial'\]"):
        fit(model, max_steps=2)


def test_checkpoint_round_trip_keeps_networks_ema_and_both_optimizers(tmp_path):
    model = tiny_gan()
    trainer = fit(model, max_steps=4)
    path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert any(key.startswith("generator_ema.") for key in checkpoint["state_dict"])
    assert len(checkpoint["optimizer_states"]) == 2

    restored = tiny_gan()
    with torch.no_grad():
        for p in restored.parameters():
            p.normal_()
    resumed = fit(restored, max_steps=4, ckpt_path=path)  # restores and stops: max_steps reached
    assert resumed.global_step == 4
    for name, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value, msg=name)
    for original, loaded in zip(trainer.optimizers, resumed.optimizers):
        original_state, loaded_state = original.state_dict()["state"], loaded.state_dict()["state"]
        assert original_state.keys() == loaded_state.keys()
        for index in original_state:
            for key in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(loaded_state[index][key], original_state[index][key])


def test_ema_generator_gets_batch_norm_statistics_of_its_own_weights():
    """Averaged running statistics do not fit averaged weights: they are recomputed on noise."""
    model = tiny_gan(batch_norm_samples=2000, sample_batch_size=500)
    fit(model, max_steps=6)
    averaged = model.generator_ema.module.net[1].running_mean.clone()
    generator = model.eval_generator()
    first_conv, first_norm = generator.net[0], generator.net[1]
    with torch.no_grad():
        activations = first_conv(torch.randn(4000, model.latent_dim, 1, 1))
    torch.testing.assert_close(first_norm.running_mean, activations.mean(dim=(0, 2, 3)), atol=0.02, rtol=0.05)
    torch.testing.assert_close(first_norm.running_var, activations.var(dim=(0, 2, 3)), atol=0.02, rtol=0.05)
    assert not torch.allclose(first_norm.running_mean, averaged)
    # ...in a copy: the EMA's own averaged buffers, which training continues from, are left alone
    assert torch.equal(model.generator_ema.module.net[1].running_mean, averaged)
    assert model.eval_generator(raw=True) is model.generator
