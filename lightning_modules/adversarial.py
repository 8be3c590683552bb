"""Shared GAN training: alternating discriminator/generator steps, losses, generator EMA.

:class:`AdversarialModule` owns everything that every GAN in this project does the same way;
a task subclasses it and only says how a batch becomes images:

* :meth:`~AdversarialModule.generate`: the fake images for a batch (noise, LR image, masked image);
* :meth:`~AdversarialModule.real_images`: the real images of the batch;
* :meth:`~AdversarialModule.discriminator_input` (optional): what the discriminator sees of an
  image, e.g. the image concatenated with the inpainting mask;
* :meth:`~AdversarialModule.extra_generator_losses` (optional): weighted extra terms such as
  L1 and perceptual losses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lightning_modules.augment import DiffAugment
from lightning_modules.checks import checked_sum
from lightning_modules.gan_losses import LOSSES, GANLoss, gradient_penalty, r1_penalty


class AdversarialModule(LightningModule, ABC):
    """Manual-optimization GAN training shared by generation, ESRGAN and inpainting.

    Each training batch runs one discriminator step (the generator frozen) and, every
    ``discriminator_steps`` batches, one generator step (the discriminator frozen) on the same
    fake images. Both optimizers count as Lightning optimizer steps, so ``trainer.global_step``
    (and ``max_steps``, ``val_check_interval`` in steps, checkpoint step numbers) advances by 2
    per batch with ``discriminator_steps=1``, by ``1 + 1/k`` per batch with ``k`` steps.

    Args:
        generator / discriminator: the networks; the discriminator returns logits of any shape.
        generator_optimizer / discriminator_optimizer: optimizer classes and arguments from the config.
        generator_scheduler / discriminator_scheduler: optional LR schedulers, stepped by this module
            after every step of their optimizer (``scheduler_interval: step``) or every epoch.
        loss: adversarial loss (see :mod:`lightning_modules.gan_losses`).
        adversarial_weight: weight of the adversarial term in the generator loss (ESRGAN: 5e-3).
        gradient_penalty_weight: WGAN-GP penalty on the discriminator (10 in the paper; required
            with ``loss: wgan-gp``, also usable with the other losses).
        r1_weight: gamma of the R1 penalty ``gamma/2 * E||grad D(real)||^2`` (0 = off).
        discriminator_steps: discriminator steps per generator step (WGAN-GP: 5), one per batch.
        gradient_clip_val / gradient_clip_algorithm: clipping for both networks (``Trainer``
            clipping is not available with manual optimization).
        ema_decay: decay of the generator's exponential moving average (parameters and
            buffers), used for validation and predict; ``null`` turns it off.
        augment: differentiable augmentation of every discriminator input, real and fake, in both
            steps (:class:`~lightning_modules.augment.DiffAugment`, optionally adaptive as ADA);
            ``null`` = none.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        generator_optimizer: OptimizerCallable = torch.optim.Adam,
        discriminator_optimizer: OptimizerCallable = torch.optim.Adam,
        generator_scheduler: LRSchedulerCallable | None = None,
        discriminator_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        loss: GANLoss = "nonsaturating",
        adversarial_weight: float = 1.0,
        gradient_penalty_weight: float = 0.0,
        r1_weight: float = 0.0,
        discriminator_steps: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        ema_decay: float | None = 0.999,
        augment: DiffAugment | None = None,
    ):
        super().__init__()
        if loss == "wgan-gp" and gradient_penalty_weight <= 0:
            raise ValueError("loss 'wgan-gp' needs gradient_penalty_weight > 0 (10 in Gulrajani et al.)")
        if discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be >= 1, got {discriminator_steps}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, got {ema_decay}")
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.generator_optimizer, self.discriminator_optimizer = generator_optimizer, discriminator_optimizer
        self.generator_scheduler, self.discriminator_scheduler = generator_scheduler, discriminator_scheduler
        self.scheduler_interval = scheduler_interval
        self.loss_name = loss
        self.discriminator_loss, self.generator_loss = LOSSES[loss]
        self.adversarial_weight = adversarial_weight
        self.ema_decay = ema_decay
        self.gradient_penalty_weight = gradient_penalty_weight
        self.r1_weight = r1_weight
        self.discriminator_steps = discriminator_steps
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.augment = augment
        self.generator_ema: AveragedModel | None = None
        if ema_decay is not None:
            self.generator_ema = AveragedModel(
                generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            ).requires_grad_(False)

    # ----------------------------------------------------------------- task-specific hooks
    @abstractmethod
    def generate(self, batch: dict) -> Tensor:
        """The fake images for ``batch``, from ``self.generator`` (with gradients)."""

    @abstractmethod
    def real_images(self, batch: dict) -> Tensor:
        """The real images of ``batch`` that the discriminator compares the fakes with."""

    def discriminator_input(self, images: Tensor, batch: dict) -> Tensor:
        """What the discriminator sees of real or fake ``images`` (default: the images)."""
        return images

    def extra_generator_losses(self, fake: Tensor, batch: dict) -> dict[str, Tensor]:
        """Weighted generator terms added to the adversarial one, by name (logged as ``train/g_<name>``)."""
        return {}

    # ----------------------------------------------------------------- generators for evaluation
    def eval_generator(self, raw: bool = False) -> nn.Module:
        """The generator used for validation and predict: the EMA one unless ``raw`` or EMA is off."""
        if raw or self.generator_ema is None:
            return self.generator
        return self.generator_ema.module

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        generator_turn = (batch_idx + 1) % self.discriminator_steps == 0
        real = self.real_images(batch)
        # One generator forward per batch: detached for the discriminator step, reused with its
        # graph for the generator step (built only when that step happens).
        with torch.set_grad_enabled(generator_turn):
            fake = self.generate(batch)
        logs = self.discriminator_step(opt_d, real, fake.detach(), batch)
        if generator_turn:
            logs |= self.generator_step(opt_g, real, fake, batch)
            if self.generator_ema is not None:
                self.generator_ema.update_parameters(self.generator)
        # Only on the steps Lightning hands to the loggers (every `log_every_n_steps` batches):
        # each `log` call costs a visible share of a small network's step.
        if self.trainer._logger_connector.should_update_logs:
            self.log_dict(logs)

    def discriminator_step(self, optimizer, real: Tensor, fake: Tensor, batch: dict) -> dict[str, Tensor]:
        with self.toggled_optimizer(optimizer):
            real_input = self.discriminator_input(real, batch)
            fake_input = self.discriminator_input(fake, batch)
            if self.r1_weight > 0:
                real_input = real_input.detach().requires_grad_(True)
            real_logits = self.judge(real_input)
            fake_logits = self.judge(fake_input)
            terms = {"adversarial": self.discriminator_loss(real_logits, fake_logits)}
            if self.gradient_penalty_weight > 0:
                penalty = gradient_penalty(self.judge, real_input, fake_input)
                terms["gradient_penalty"] = self.gradient_penalty_weight * penalty
            if self.r1_weight > 0:
                terms["r1"] = self.r1_weight * r1_penalty(real_logits, real_input)
            loss = self._checked_sum(terms, "discriminator")
            self._optimize(optimizer, loss)
        logs = _term_logs("train/d_", terms, loss)
        logs["train/d_real_logit"] = real_logits.detach().mean()
        logs["train/d_fake_logit"] = fake_logits.detach().mean()
        if self.augment is not None:
            self.augment.observe(real_logits.detach(), len(real))
            logs["train/augment_p"] = self.augment.p
        return logs

    def generator_step(self, optimizer, real: Tensor, fake: Tensor, batch: dict) -> dict[str, Tensor]:
        with self.toggled_optimizer(optimizer):
            fake_logits = self.judge(self.discriminator_input(fake, batch))
            real_logits = None
            if self.loss_name == "ragan":
                with torch.no_grad():
                    real_logits = self.judge(self.discriminator_input(real, batch))
            terms = {"adversarial": self.adversarial_weight * self.generator_loss(fake_logits, real_logits)}
            terms |= self.extra_generator_losses(fake, batch)
            loss = self._checked_sum(terms, "generator")
            self._optimize(optimizer, loss)
        logs = _term_logs("train/g_", terms, loss)
        return logs

    def judge(self, discriminator_input: Tensor) -> Tensor:
        """The discriminator's logits for an input, augmented first when ``augment`` is set."""
        if self.augment is not None:
            discriminator_input = self.augment(discriminator_input)
        return self.discriminator(discriminator_input)

    def _optimize(self, optimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.gradient_clip_val is not None:
            self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
        optimizer.step()
        if self.scheduler_interval == "step":
            self._step_schedulers(optimizer.optimizer)

    def _checked_sum(self, terms: dict[str, Tensor], network: str) -> Tensor:
        return checked_sum(self, terms, network, hint="lower the learning rates or set gradient_clip_val")

    def _step_schedulers(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if optimizer is None or config.scheduler.optimizer is optimizer:
                config.scheduler.step()

    def on_train_epoch_end(self) -> None:
        if self.scheduler_interval == "epoch":
            self._step_schedulers()

    def on_fit_start(self) -> None:
        # The first update copies the weights, so an EMA created before the generator was
        # loaded (e.g. from a PSNR-stage checkpoint) starts from the loaded weights.
        if self.generator_ema is not None and self.generator_ema.n_averaged == 0:
            self.generator_ema.update_parameters(self.generator)

    def optimizer_steps_per_batch(self) -> list[float]:
        """Generator and discriminator steps per training batch, in ``configure_optimizers`` order."""
        return [1 / self.discriminator_steps, 1.0]

    def configure_optimizers(self):
        configs = []
        for network, make_optimizer, make_scheduler in (
            (self.generator, self.generator_optimizer, self.generator_scheduler),
            (self.discriminator, self.discriminator_optimizer, self.discriminator_scheduler),
        ):
            optimizer = make_optimizer(network.parameters())
            config = {"optimizer": optimizer}
            if make_scheduler is not None:
                config["lr_scheduler"] = {"scheduler": make_scheduler(optimizer), "interval": self.scheduler_interval}
            configs.append(config)
        return configs


def _term_logs(prefix: str, terms: dict[str, Tensor], total: Tensor) -> dict[str, Tensor]:
    """The total loss, plus each term when there are several (every logged value costs step time)."""
    logs = {f"{prefix}{name}": value.detach() for name, value in terms.items()} if len(terms) > 1 else {}
    return logs | {f"{prefix}loss": total.detach()}
