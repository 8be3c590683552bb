"""Scheduler lengths from the run (length 0 in a config) and the constant-then-linear schedule."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.schedules import ConstantThenLinearLR
from test_gan import TINY as GAN_TINY


def test_constant_then_linear_lr_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = ConstantThenLinearLR(optimizer, total_iters=8, constant_fraction=0.25)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.0, 2.0, 2.0, 5 / 3, 4 / 3, 1.0, 2 / 3, 1 / 3, 0.0, 0.0])


@pytest.mark.parametrize("discriminator_steps, generator_length", [(1, 4), (2, 2)])
def test_zero_length_spans_each_optimizers_steps_of_the_run(run_cli, discriminator_steps, generator_length):
    # 4 batches: max_steps counts D and G steps (2 per batch, or 1.5 with a G step every 2nd batch).
    max_steps = 4 + generator_length
    cli = run_cli("fit", *GAN_TINY, f"--trainer.max_steps={max_steps}", f"--model.init_args.discriminator_steps={discriminator_steps}",
                  "--trainer.limit_val_batches=0")
    generator, discriminator = (config.scheduler for config in cli.trainer.lr_scheduler_configs)
    assert (generator.total_iters, discriminator.total_iters) == (generator_length, 4)
    assert cli.trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.0)  # decayed to the end


def test_zero_length_without_a_run_length_names_the_options(run_cli):
    with pytest.raises(ValueError, match="set trainer.max_steps or trainer.max_epochs"):
        run_cli("fit", *GAN_TINY, "--trainer.max_steps=-1", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0")
