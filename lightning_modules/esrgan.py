"""ESRGAN, the GAN stage of super-resolution: a PSNR-stage generator fine-tuned adversarially.

Training is :class:`~lightning_modules.adversarial.AdversarialModule`'s (D step then G step,
relativistic average loss, generator EMA); evaluation and tiled inference are those of the PSNR
stage (the :class:`~lightning_modules.super_resolution.SuperResolutionEvaluation` it holds), run
with the EMA generator. This module adds the ESRGAN generator losses (pixel L1 + VGG19 perceptual), the
initialisation from the PSNR stage and LPIPS.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.adversarial import AdversarialModule
from lightning_modules.evaluation import StagedEvaluation, Summary
from lightning_modules.export import ExportSpec
from lightning_modules.gan_losses import GANLoss
from lightning_modules.generator_weights import LoadsPretrainedGenerator
from lightning_modules.perceptual import FeatureLoss
from lightning_modules.super_resolution import SuperResolutionEvaluation


class ESRGANModule(LoadsPretrainedGenerator, StagedEvaluation, AdversarialModule):
    """ESRGAN fine-tuning: ``pixel_weight * L1 + perceptual + adversarial_weight * RaGAN`` for G.

    Validation, test and predict use the EMA generator (``eval_generator()``); the raw
    generator's metrics are logged as ``val/raw_<metric>``. The arguments of
    :class:`~lightning_modules.adversarial.AdversarialModule` (optimizers, schedulers,
    ``ema_decay``, ``discriminator_steps``, clipping ...) are accepted too.

    Args:
        generator: the SR network (``networks.rrdbnet.RRDBNet``), [0, 1] LR -> HR.
        discriminator: e.g. ``networks.sr_discriminators.VGGStyleDiscriminator``.
        scale: upscaling factor (linked to ``data.init_args.scale``, as the generator's).
        pretrained_generator: PSNR-stage weights the generator (and its EMA) start from: a
            Lightning checkpoint (its ``generator.*`` weights, or ``generator_ema.*`` when it has
            them), a BasicSR file (``params_ema``, else ``params``) or a plain state dict, RRDBNet
            keys in any ESRGAN/BasicSR layout (:mod:`lightning_modules.generator_weights`). Loaded
            when a run starts, unless the run restores a checkpoint (resume, validate, predict).
        pixel_weight: weight of the L1 loss between the output and the HR image (ESRGAN: 1e-2).
        perceptual: feature loss with its own weight (ESRGAN: VGG19 conv5_4 before activation,
            L1, weight 1.0; or LPIPS, see :mod:`lightning_modules.perceptual`); ``null`` leaves it
            out (same as weight 0, and needs no VGG weights).
        loss / adversarial_weight: adversarial loss and its weight (ESRGAN: ``ragan``, 5e-3).
        lpips / lpips_net: LPIPS (torchmetrics) of model, bicubic and raw generator at validation
            and test, see :class:`~lightning_modules.super_resolution.SuperResolutionEvaluation`.
        evaluate_raw_generator: also evaluate the raw (non-EMA) generator (``val/raw_psnr_y`` ...).
        tile_size / tile_overlap: tiled inference for validation, test and predict (0 = whole image).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        scale: int = 4,
        pretrained_generator: str | None = None,
        pixel_weight: float = 1e-2,
        perceptual: FeatureLoss | None = None,
        loss: GANLoss = "ragan",
        adversarial_weight: float = 5e-3,
        lpips: Literal["disabled", "optional", "required"] = "disabled",
        lpips_net: Literal["alex", "vgg", "squeeze"] = "alex",
        evaluate_raw_generator: bool = True,
        tile_size: int = 0,
        tile_overlap: int = 16,
        **kwargs,
    ):
        super().__init__(
            generator=generator, discriminator=discriminator, loss=loss, adversarial_weight=adversarial_weight, **kwargs
        )
        self.scale = scale
        self.pretrained_generator = pretrained_generator
        self.pixel_weight = pixel_weight
        self.perceptual = perceptual
        self.evaluate_raw_generator = evaluate_raw_generator and self.generator_ema is not None
        variants = ("model", "raw") if self.evaluate_raw_generator else ("model",)
        self.evaluation = SuperResolutionEvaluation(scale, tile_size, tile_overlap, variants, lpips, lpips_net)

    # ----------------------------------------------------------------- GAN hooks
    def generate(self, batch: dict) -> Tensor:
        return self.generator(batch["lr"])

    def real_images(self, batch: dict) -> Tensor:
        return batch["hr"]

    def extra_generator_losses(self, fake: Tensor, batch: dict) -> dict[str, Tensor]:
        terms = {"pixel": self.pixel_weight * F.l1_loss(fake, batch["hr"])}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(fake, batch["hr"])
        return terms

    # ----------------------------------------------------------------- PSNR-stage initialisation
    pretrained_generator_kind = "PSNR-stage generator"
    pretrained_generator_hint = (
        "; train the PSNR stage first (e.g. python train.py fit --config configs/sr/default.yaml) or point the "
        "option at its last.ckpt"
    )

    # ----------------------------------------------------------------- evaluation
    def upscale(self, lr: Tensor) -> Tensor:
        return self.evaluation.upscale(self.eval_generator(), lr)

    def evaluate_batch(self, batch: dict, batch_idx: int, stage: str) -> None:
        # The EMA generator, and the raw one when it is evaluated too.
        generators = {"model": self.eval_generator()} | ({"raw": self.generator} if self.evaluate_raw_generator else {})
        self.evaluation.update(self, batch, batch_idx, stage, generators)

    def log_evaluation(self, stage: str) -> None:
        self.evaluation.log(self, stage)

    def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[str, Tensor]]:
        return list(zip(batch["output_name"], self.upscale(batch["lr"])))

    def evaluation_summary(self) -> Summary:
        return self.evaluation.summary(self.eval_generator(), self.device)

    def export_spec(self) -> ExportSpec:
        return self.evaluation.export_spec(self.eval_generator())

