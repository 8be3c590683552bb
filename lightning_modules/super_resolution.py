"""Super-resolution, PSNR-oriented stage: a generator trained with a pixel loss.

Evaluation, tiled inference and the summary live in :class:`SuperResolutionEvaluation`, an
object that both SR modules hold, so that the GAN stage (ESRGAN) evaluates and upscales exactly
the same way.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

from datamodules.matlab_resize import imresize
from lightning_modules.checks import checked_sum
from lightning_modules.evaluation import StagedEvaluation, Summary
from lightning_modules.export import IMAGE_AXES, ExportSpec, ImageNetwork, checked_sizes, image_inputs
from lightning_modules.generator_weights import LoadsPretrainedGenerator
from lightning_modules.perceptual import LPIPS_BACKBONE_WEIGHTS, exclude_from_checkpoints
from lightning_modules.run_logging import log_image_grid
from lightning_modules.sr_metrics import METRIC_NAMES, SuperResolutionMetrics
from lightning_modules.tiling import tiled_forward



class SuperResolutionEvaluation(nn.Module):
    """Validation/test of SR generators against bicubic, as SR papers report them.

    Each evaluated generator (``model``; ESRGAN adds ``raw``) and MATLAB bicubic get the
    paper-protocol PSNR/SSIM (``val/<metric>``, ``val/bicubic_<metric>``, ``val/raw_<metric>``),
    optionally LPIPS (``val/lpips``...), plus ``val/psnr_y_gain_over_bicubic`` and an image grid.

    Args:
        scale: upscaling factor; also the border cropped before measuring.
        tile_size / tile_overlap: tiled inference (0 = whole image).
        variants: names of the evaluated generators, the first one being the reported model.
        lpips: LPIPS (torchmetrics); its backbone needs torchvision's ImageNet weights
            (downloaded, or already in torch's cache): ``required`` stops at start-up when they
            cannot be loaded, ``optional`` warns and skips the metric, ``disabled`` never computes it.
        lpips_net: LPIPS backbone (``alex`` is the usual choice for reporting).
    """

    def __init__(
        self,
        scale: int,
        tile_size: int = 0,
        tile_overlap: int = 16,
        variants: tuple[str, ...] = ("model",),
        lpips: Literal["disabled", "optional", "required"] = "disabled",
        lpips_net: Literal["alex", "vgg", "squeeze"] = "alex",
    ):
        super().__init__()
        self.scale, self.tile_size, self.tile_overlap = scale, tile_size, tile_overlap
        self.kinds = (*variants, "bicubic")
        # Papers crop `scale` pixels from every edge before computing PSNR/SSIM.
        self.metrics = nn.ModuleDict(
            {f"{stage}_{kind}": SuperResolutionMetrics(crop_border=scale) for stage in ("val", "test") for kind in self.kinds}
        )
        self.lpips = _lpips_metrics(lpips, lpips_net, self.kinds)

    @torch.no_grad()
    def upscale(self, generator: nn.Module, lr: Tensor) -> Tensor:
        """Upscale (N, 3, h, w) LR in [0, 1] with ``generator``, tiled if configured. Returned in
        float32 also under bf16/fp16 autocast, so metrics and PNGs see no extra rounding."""
        return tiled_forward(generator, lr, self.scale, self.tile_size, self.tile_overlap).clamp(0, 1).float()

    def bicubic(self, lr: Tensor) -> Tensor:
        return imresize(lr.double(), scale=self.scale).clamp(0, 1).to(lr.dtype)

    def update(self, module: LightningModule, batch: dict, batch_idx: int, stage: str, generators: dict[str, nn.Module]) -> None:
        """Add one batch, upscaled by each of ``generators`` (one per variant) and by bicubic."""
        lr, hr = batch["lr"], batch["hr"]
        outputs = {kind: self.upscale(generator, lr) for kind, generator in generators.items()}
        outputs["bicubic"] = self.bicubic(lr)
        for kind, output in outputs.items():
            self.metrics[f"{stage}_{kind}"].update(output, hr)
            if self.lpips is not None:
                self.lpips[kind].update(output, hr)
        if stage == "val" and batch_idx == 0:
            size = min(hr.shape[-2], hr.shape[-1], 192)
            top, left = (hr.shape[-2] - size) // 2, (hr.shape[-1] - size) // 2
            crops = [img[0, :, top : top + size, left : left + size] for img in (outputs["bicubic"], outputs[self.kinds[0]], hr)]
            log_image_grid(module, "val/bicubic_model_gt", torch.stack(crops), nrow=3)

    def log(self, module: LightningModule, stage: str) -> None:
        values = {}
        for kind in self.kinds:
            prefix = f"{stage}/" if kind == self.kinds[0] else f"{stage}/{kind}_"
            results = self.metrics[f"{stage}_{kind}"].compute()
            self.metrics[f"{stage}_{kind}"].reset()
            if self.lpips is not None:
                results["lpips"] = self.lpips[kind].compute()
                self.lpips[kind].reset()
            values |= {f"{prefix}{name}": value for name, value in results.items()}
        values[f"{stage}/psnr_y_gain_over_bicubic"] = values[f"{stage}/psnr_y"] - values[f"{stage}/bicubic_psnr_y"]
        module.log_dict(values, sync_dist=False)  # already reduced across ranks by the metrics

    def summary(self, generator: nn.Module, device: torch.device) -> Summary:
        """Every variant and bicubic on the validation set, and ``generator``'s upscaled first photo."""

        def example(sample: dict) -> tuple[str, Tensor]:
            sr = self.upscale(generator, sample["lr"].unsqueeze(0).to(device))[0]
            return f"upscaled_x{self.scale}_{Path(sample['path']).stem}.png", sr

        columns = {kind: "val/{}" if kind == self.kinds[0] else f"val/{kind}_{{}}" for kind in self.kinds}
        return Summary(
            f"Validation (x{self.scale}, Y channel with {self.scale}-px border crop, and RGB)",
            rows=(*METRIC_NAMES, "lpips"), columns=columns, example=example, example_caption="Upscaled example",
        )


    def export_spec(self, generator: nn.Module) -> ExportSpec:
        """``generator`` as a file: whole-image upscaling (no tiling), any batch and LR size (for
        RRDBNet x2/x1, multiples of its pixel-unshuffle factor)."""
        multiple = getattr(generator, "unshuffle", 1)
        return ExportSpec(
            ImageNetwork(generator), ("lr",), "sr", image_inputs(3), checked_sizes(multiple), {"lr": IMAGE_AXES},
            {"task": "super-resolution", "scale": str(self.scale),
             "lr": "(N, 3, h, w) RGB in [0, 1]", "sr": f"(N, 3, {self.scale}h, {self.scale}w) RGB in [0, 1]"},
            multiple,
        )


def _lpips_metrics(mode: str, net: str, kinds: tuple[str, ...]) -> nn.ModuleDict | None:
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
    exclude_from_checkpoints(metrics)  # so that a checkpoint loads whether or not LPIPS is on
    return metrics


class SuperResolutionModule(LoadsPretrainedGenerator, StagedEvaluation, LightningModule):
    """PSNR-oriented training (ESRGAN stage 1, EDSR, SRResNet): pixel loss on (LR, HR) pairs.

    Args:
        generator: the SR network (e.g. ``networks.rrdbnet.RRDBNet``), mapping [0, 1] LR to HR.
        scale: upscaling factor (linked to ``data.init_args.scale``, as the generator's).
        pretrained_generator: generator weights to start from or to evaluate: a Lightning
            checkpoint (``generator_ema.*``, else ``generator.*``), a BasicSR / Real-ESRGAN file
            (``params_ema``, else ``params``) or a plain state dict, RRDBNet keys in any
            ESRGAN/BasicSR layout (:mod:`lightning_modules.generator_weights`). Loaded when fit,
            validate, test or predict starts, unless the run restores a checkpoint.
        pixel_loss: ``l1`` (the reference) or ``mse``.
        optimizer / lr_scheduler: from the config; the scheduler steps every ``scheduler_interval``.
        tile_size / tile_overlap: tiled inference for validation, test and predict (0 = whole image).
    """

    def __init__(
        self,
        generator: nn.Module,
        scale: int = 4,
        pretrained_generator: str | None = None,
        pixel_loss: Literal["l1", "mse"] = "l1",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        tile_size: int = 0,
        tile_overlap: int = 16,
    ):
        super().__init__()
        self.generator = generator
        self.scale = scale
        self.pretrained_generator = pretrained_generator
        self.evaluation = SuperResolutionEvaluation(scale, tile_size, tile_overlap)
        self.pixel_loss = F.l1_loss if pixel_loss == "l1" else F.mse_loss
        self.optimizer, self.lr_scheduler, self.scheduler_interval = optimizer, lr_scheduler, scheduler_interval

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.generator(lr)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = checked_sum(self, {"pixel": self.pixel_loss(self(batch["lr"]), batch["hr"])})
        self.log("train/pixel_loss", loss, prog_bar=True)
        return loss

    # ----------------------------------------------------------------- evaluation
    def upscale(self, lr: Tensor) -> Tensor:
        return self.evaluation.upscale(self.generator, lr)

    def evaluate_batch(self, batch: dict, batch_idx: int, stage: str) -> None:
        self.evaluation.update(self, batch, batch_idx, stage, {"model": self.generator})

    def log_evaluation(self, stage: str) -> None:
        self.evaluation.log(self, stage)

    def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[str, Tensor]]:
        return list(zip(batch["output_name"], self.upscale(batch["lr"])))

    def evaluation_summary(self) -> Summary:
        return self.evaluation.summary(self.generator, self.device)

    def export_spec(self) -> ExportSpec:
        return self.evaluation.export_spec(self.generator)

    def configure_optimizers(self):
        optimizer = self.optimizer(self.generator.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
