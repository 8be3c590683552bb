"""ESRGAN, the GAN stage of super-resolution: a PSNR-stage generator fine-tuned adversarially.

Training is :class:`~lightning_modules.adversarial.AdversarialModule`'s (D step then G step,
relativistic average loss, generator EMA); evaluation and tiled inference are those of the PSNR
stage (the :class:`~lightning_modules.super_resolution.SuperResolutionEvaluation` it holds), run
with the EMA generator. This module adds the ESRGAN generator losses (pixel L1 + VGG19 perceptual), the
initialisation from the PSNR stage and LPIPS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.adversarial import AdversarialModule
from lightning_modules.evaluation import StagedEvaluation, Summary
from lightning_modules.gan_losses import GANLoss
from lightning_modules.perceptual import PerceptualLoss
from lightning_modules.super_resolution import SuperResolutionEvaluation


class ESRGANModule(StagedEvaluation, AdversarialModule):
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
            them), a BasicSR file (``params_ema``, else ``params``) or a plain state dict. Loaded
            when a run starts, unless the run restores a checkpoint (resume, validate, predict).
        pixel_weight: weight of the L1 loss between the output and the HR image (ESRGAN: 1e-2).
        perceptual: VGG19 perceptual loss with its own weight (ESRGAN: conv5_4 before
            activation, L1, weight 1.0); ``null`` leaves it out (same as weight 0, and needs no
            VGG weights).
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
        perceptual: PerceptualLoss | None = None,
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
        self._generator_ready = pretrained_generator is None

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
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._generator_ready = True  # the checkpoint's weights win over pretrained_generator

    def _load_pretrained_generator(self) -> None:
        if self._generator_ready:
            return
        load_generator_weights(self.generator, self.pretrained_generator)
        if self.generator_ema is not None:
            self.generator_ema.module.load_state_dict(self.generator.state_dict())
        self._generator_ready = True

    def on_fit_start(self) -> None:
        self._load_pretrained_generator()
        super().on_fit_start()

    def on_validation_start(self) -> None:
        self._load_pretrained_generator()

    def on_test_start(self) -> None:
        self._load_pretrained_generator()

    def on_predict_start(self) -> None:
        self._load_pretrained_generator()

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


def load_generator_weights(generator: nn.Module, path: str) -> None:
    """Load PSNR-stage weights into ``generator`` (formats: see ``ESRGANModule.pretrained_generator``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: PSNR-stage generator not found (model.init_args.pretrained_generator); train the PSNR "
            "stage first (e.g. python train.py fit --config configs/sr/default.yaml) or point the option at "
            "its last.ckpt"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state, source = _generator_state(checkpoint, path)
    try:
        generator.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: its {source} weights do not fit the configured {type(generator).__name__} "
            f"(model.init_args.pretrained_generator); the generator's init_args must match the PSNR stage's. {err}"
        ) from err


def _generator_state(checkpoint: object, path: str) -> tuple[dict[str, Tensor], str]:
    """The generator's state dict inside a Lightning, BasicSR or plain state-dict file, and its source."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a checkpoint or state dict, found a {type(checkpoint).__name__}")
    if "state_dict" in checkpoint:
        for prefix in ("generator_ema.module.", "generator."):
            state = {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
            if state:
                return state, f"Lightning checkpoint '{prefix}*'"
        raise ValueError(
            f"{path}: a Lightning checkpoint without 'generator.*' weights (model.init_args.pretrained_generator)"
        )
    for key in ("params_ema", "params"):
        if key in checkpoint:
            return _strip_module_prefix(checkpoint[key]), f"BasicSR '{key}'"
    if not all(isinstance(value, Tensor) for value in checkpoint.values()):
        raise ValueError(f"{path}: neither a Lightning checkpoint, a BasicSR file nor a state dict of tensors")
    return _strip_module_prefix(checkpoint), "state dict"


def _strip_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights saved from ``DataParallel``/DDP carry a ``module.`` prefix."""
    return {key.removeprefix("module."): value for key, value in state.items()}
