"""Learning-rate schedule lengths that follow the run, and the schedule torch lacks.

A step-interval scheduler configured with length 0 (``T_max: 0``, ``total_iters: 0``) spans
the whole run: :class:`RunLengthSchedules` (always on in the CLI) sets its length when training
starts, from ``trainer.max_steps`` / ``max_epochs`` and the optimizer steps a training batch
makes for it (a GAN's generator steps once every ``discriminator_steps`` batches), so no config
repeats the run length in scheduler units. Under ``budget.minutes`` the budget fits it to its plan.
A resumed run keeps the length saved in its checkpoint.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim.lr_scheduler import LRScheduler


class ConstantThenLinearLR(LRScheduler):
    """The base learning rate for the first ``constant_fraction`` of ``total_iters`` steps, then
    linear decay to 0 at ``total_iters`` (pix2pix and CycleGAN: 100 epochs constant, 100 decaying).

    Args:
        optimizer: the wrapped optimizer.
        total_iters: scheduler steps of the whole run.
        constant_fraction: share of the run at the base learning rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, constant_fraction: float = 0.5, last_epoch: int = -1):
        if total_iters < 0 or not 0.0 <= constant_fraction <= 1.0:
            raise ValueError(f"need total_iters >= 0 and constant_fraction in [0, 1], got {total_iters}, {constant_fraction}")
        self.total_iters, self.constant_fraction = total_iters, constant_fraction
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        start = self.constant_fraction * self.total_iters
        return min(1.0, max(0.0, 1.0 - (step - start) / max(self.total_iters - start, 1e-12)))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    _get_closed_form_lr = get_lr


#: Length attribute of the schedulers whose length is a number of scheduler steps.
LENGTH_ATTRIBUTE = {
    torch.optim.lr_scheduler.CosineAnnealingLR: "T_max",
    torch.optim.lr_scheduler.LinearLR: "total_iters",
    torch.optim.lr_scheduler.PolynomialLR: "total_iters",
    torch.optim.lr_scheduler.ConstantLR: "total_iters",
    ConstantThenLinearLR: "total_iters",
}


def set_length(scheduler: LRScheduler, length: int) -> str | None:
    """Give ``scheduler`` a new length, with the learning rate its closed form has at the current
    step; returns the attribute set, or ``None`` for a scheduler of unknown length."""
    attribute = LENGTH_ATTRIBUTE.get(type(scheduler))
    if attribute is None:
        return None
    setattr(scheduler, attribute, length)
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler._get_closed_form_lr()):
        group["lr"] = lr
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
    return attribute


class RunLengthSchedules(Callback):
    """Sets the length of every scheduler configured with length 0 to the run's (see the module docstring)."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        configs = [c for c in trainer.lr_scheduler_configs if getattr(c.scheduler, LENGTH_ATTRIBUTE.get(type(c.scheduler), ""), None) == 0]
        if not configs:
            return
        rates = getattr(pl_module, "optimizer_steps_per_batch", lambda: [1.0] * len(trainer.optimizers))()
        batches = math.inf
        if trainer.max_steps > 0:  # counts every optimizer's steps
            batches = trainer.max_steps / sum(rates)
        if trainer.max_epochs not in (None, -1):
            batches = min(batches, trainer.num_training_batches * trainer.max_epochs)
        for config in configs:
            if config.interval == "epoch":
                length = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
            else:
                index = next(i for i, optimizer in enumerate(trainer.optimizers) if optimizer is config.scheduler.optimizer)
                length = batches * rates[index]
            if not math.isfinite(length):
                raise ValueError(
                    f"{type(config.scheduler).__name__} has length 0, which spans the run, but the run has no length: "
                    "set trainer.max_steps or trainer.max_epochs (or budget.minutes)"
                )
            set_length(config.scheduler, max(1, round(length)))
