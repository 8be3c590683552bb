"""ESRGAN, the GAN stage of super-resolution: a PSNR-stage generator fine-tuned adversarially.

Training is :class:`~lightning_modules.adversarial.AdversarialModule`'s (D step then G step,
relativistic average loss, generator EMA); evaluation, tiled inference and predict are
:class:`~lightning_modules.super_resolution.SuperResolutionEvaluation`'s, run with the EMA
generator. This module adds the ESRGAN generator losses (pixel L1 + VGG19 perceptual), the
initialisation from the PSNR stage and LPIPS.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

from lightning_modules.adversarial import AdversarialModule
from lightning_modules.gan_losses import GANLoss
from lightning_modules.perceptual import PerceptualLoss
from lightning_modules.sr_metrics import METRIC_NAMES, SuperResolutionMetrics
from lightning_modules.super_resolution import SuperResolutionEvaluation
from lightning_modules.tiling import tiled_forward

#: torchvision ImageNet weights that torchmetrics' LPIPS backbones download.
LPIPS_BACKBONE_WEIGHTS = {
    "alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
    "squeeze": torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1,
}


class ESRGANModule(AdversarialModule, SuperResolutionEvaluation):
    """ESRGAN fine-tuning: ``pixel_weight * L1 + perceptual + adversarial_weight * RaGAN`` for G.

    Validation, test and predict use the EMA generator (``eval_generator()``); the raw
    generator's metrics are logged as ``val/raw_<metric>``. The arguments of
    :class:`~lightning_modules.adversarial.AdversarialModule` (optimizers, schedulers,
    ``ema_decay``, ``discriminator_steps``, clipping ...) are accepted too.

    Args:
        generator: the SR network (``networks.rrdbnet.RRDBNet``), [0, 1] LR -> HR.
        discriminator: e.g. ``networks.sr_discriminators.VGGStyleDiscriminator``.
        scale: upscaling factor; must equal the generator's and the data's.
        pretrained_generator: PSNR-stage weights the generator (and its EMA) start from: a
            Lightning checkpoint (its ``generator.*`` weights, or ``generator_ema.*`` when it has
            them), a BasicSR file (``params_ema``, else ``params``) or a plain state dict. Loaded
            when a run starts, unless the run restores a checkpoint (resume, validate, predict).
        pixel_weight: weight of the L1 loss between the output and the HR image (ESRGAN: 1e-2).
        perceptual_loss: VGG19 perceptual loss with its own weight (ESRGAN: conv5_4 before
            activation, L1, weight 1.0); ``null`` leaves it out (same as weight 0, and needs no
            VGG weights).
        loss / adversarial_weight: adversarial loss and its weight (ESRGAN: ``ragan``, 5e-3).
        lpips: LPIPS (torchmetrics) of model, bicubic and raw generator at validation and test.
            Its backbone needs torchvision's ImageNet weights (downloaded, or already in torch's
            cache): ``required`` stops at start-up when they cannot be loaded, ``optional`` warns and
            skips the metric, ``disabled`` never computes it.
        lpips_net: LPIPS backbone (``alex`` is the usual choice for reporting).
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
        perceptual_loss: PerceptualLoss | None = None,
        loss: GANLoss = "ragan",
        adversarial_weight: float = 5e-3,
        lpips: Literal["disabled", "optional", "required"] = "disabled",
        lpips_net: Literal["alex", "vgg", "squeeze"] = "alex",
        evaluate_raw_generator: bool = True,
        tile_size: int = 0,
        tile_overlap: int = 16,
        **kwargs,
    ):
        if getattr(generator, "scale", scale) != scale:
            raise ValueError(f"model scale={scale} but the generator upscales x{generator.scale}")
        super().__init__(
            generator=generator, discriminator=discriminator, loss=loss, adversarial_weight=adversarial_weight, **kwargs
        )
        self.scale, self.tile_size, self.tile_overlap = scale, tile_size, tile_overlap
        self.pretrained_generator = pretrained_generator
        self.pixel_weight = pixel_weight
        self.perceptual_loss = perceptual_loss
        self.evaluate_raw_generator = evaluate_raw_generator and self.generator_ema is not None
        self._init_metrics()
        if self.evaluate_raw_generator:
            for stage in ("val", "test"):
                self.metrics[f"{stage}_raw"] = SuperResolutionMetrics(crop_border=scale)
        self.lpips = _lpips_metrics(lpips, lpips_net, ["model", "bicubic"] + ["raw"] * self.evaluate_raw_generator)
        self._generator_ready = pretrained_generator is None

    # ----------------------------------------------------------------- GAN hooks
    def generate(self, batch: dict) -> Tensor:
        return self.generator(batch["lr"])

    def real_images(self, batch: dict) -> Tensor:
        return batch["hr"]

    def extra_generator_losses(self, fake: Tensor, batch: dict) -> dict[str, Tensor]:
        terms = {"pixel": self.pixel_weight * F.l1_loss(fake, batch["hr"])}
        if self.perceptual_loss is not None:
            terms["perceptual"] = self.perceptual_loss(fake, batch["hr"])
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
    @torch.no_grad()
    def upscale_raw(self, lr: Tensor) -> Tensor:
        """Like :meth:`upscale`, with the raw (non-EMA) generator."""
        return tiled_forward(self.generator, lr, self.scale, self.tile_size, self.tile_overlap).clamp(0, 1)

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> tuple[Tensor, Tensor]:
        sr, bicubic = super()._eval_step(batch, batch_idx, stage)
        outputs = {"model": sr, "bicubic": bicubic}
        if self.evaluate_raw_generator:
            outputs["raw"] = self.upscale_raw(batch["lr"])
            self.metrics[f"{stage}_raw"].update(outputs["raw"], batch["hr"])
        if self.lpips is not None:
            for kind, metric in self.lpips.items():
                metric.update(outputs[kind], batch["hr"])
        return sr, bicubic

    def _log_eval(self, stage: str) -> None:
        values = {}
        if self.evaluate_raw_generator:
            raw = self.metrics[f"{stage}_raw"].compute()
            values |= {f"{stage}/raw_{name}": raw[name] for name in METRIC_NAMES}
            self.metrics[f"{stage}_raw"].reset()
        if self.lpips is not None:
            for kind, metric in self.lpips.items():
                values[f"{stage}/{'' if kind == 'model' else kind + '_'}lpips"] = metric.compute()
                metric.reset()
        self.log_dict(values, sync_dist=False)  # already reduced across ranks by the metrics
        super()._log_eval(stage)

    def on_fit_end(self) -> None:
        super().on_fit_end()
        self._print_gan_summary()

    @rank_zero_only
    def _print_gan_summary(self) -> None:
        metrics = self.trainer.callback_metrics
        for name, label in (("val/raw_psnr_y", "raw generator psnr_y"), ("val/lpips", "lpips (EMA)")):
            if name in metrics:
                print(f"  {label}: {metrics[name].item():.4f}")


def _lpips_metrics(mode: str, net: str, kinds: list[str]) -> nn.ModuleDict | None:
    """One LPIPS metric on [0, 1] images per kind of output, or ``None`` (disabled, or optional without weights)."""
    if mode == "disabled":
        return None
    try:
        metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
    except (OSError, RuntimeError) as err:  # download refused (offline) or a damaged cached file
        weights = LPIPS_BACKBONE_WEIGHTS[net]
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        message = (
            f"LPIPS ({net}) needs torchvision's ImageNet backbone weights, which could not be loaded "
            f"({type(err).__name__}: {err}). Put {weights.url} at {cache}, or run once with network access; "
            "or set model.init_args.lpips to 'optional' (skip LPIPS with a warning) or 'disabled'."
        )
        if mode == "required":
            raise RuntimeError(message) from err
        rank_zero_warn(message + " LPIPS is skipped (model.init_args.lpips=optional).")
        return None
    metrics = nn.ModuleDict({kind: copy.deepcopy(metric) for kind in kinds})
    # Fixed published networks: kept out of checkpoints, so that a checkpoint loads whether or
    # not LPIPS is on.
    metrics.register_state_dict_post_hook(_drop_entries)
    metrics.register_load_state_dict_pre_hook(_keep_current_entries)
    return metrics


def _drop_entries(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]


def _keep_current_entries(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    for name, child in module.named_children():
        for key, value in child.state_dict(prefix=f"{prefix}{name}.").items():
            state_dict.setdefault(key, value)


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
