"""Super-resolution, PSNR-oriented stage: a generator trained with a pixel loss.

Evaluation, tiled inference and predict live in :class:`SuperResolutionEvaluation` so that
the GAN stage (ESRGAN) evaluates and upscales exactly the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from datamodules.image_io import save_image
from datamodules.matlab_resize import imresize
from lightning_modules.checks import checked_sum
from lightning_modules.callbacks import log_image_grid, run_dir
from lightning_modules.sr_metrics import METRIC_NAMES, SuperResolutionMetrics
from lightning_modules.tiling import tiled_forward

class SuperResolutionEvaluation(LightningModule):
    """Validation/test metrics (model and bicubic), image grids, tiled predict.

    Subclasses set ``self.scale``, ``self.tile_size``, ``self.tile_overlap`` and implement
    :meth:`eval_generator` (the network used for evaluation, e.g. the EMA generator).
    """

    scale: int
    tile_size: int
    tile_overlap: int

    def _init_metrics(self) -> None:
        # Papers crop `scale` pixels from every edge before computing PSNR/SSIM.
        self.metrics = nn.ModuleDict(
            {f"{stage}_{kind}": SuperResolutionMetrics(crop_border=self.scale)
             for stage in ("val", "test") for kind in ("model", "bicubic")}
        )

    def eval_generator(self) -> nn.Module:
        raise AttributeError(f"{type(self).__name__} must define eval_generator()")

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        """Upscale (N, 3, h, w) LR in [0, 1] with the evaluation generator, tiled if configured.
        Returned in float32 also under bf16/fp16 autocast, so metrics and PNGs see no extra rounding."""
        generator = self.eval_generator()
        return tiled_forward(generator, lr, self.scale, self.tile_size, self.tile_overlap).clamp(0, 1).float()

    def bicubic(self, lr: torch.Tensor) -> torch.Tensor:
        return imresize(lr.double(), scale=self.scale).clamp(0, 1).to(lr.dtype)

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the metrics with one batch; returns the model's and bicubic's upscaled images."""
        lr, hr = batch["lr"], batch["hr"]
        sr, bicubic = self.upscale(lr), self.bicubic(lr)
        self.metrics[f"{stage}_model"].update(sr, hr)
        self.metrics[f"{stage}_bicubic"].update(bicubic, hr)
        if stage == "val" and batch_idx == 0:
            size = min(hr.shape[-2], hr.shape[-1], 192)
            top, left = (hr.shape[-2] - size) // 2, (hr.shape[-1] - size) // 2
            crops = [img[0, :, top : top + size, left : left + size] for img in (bicubic, sr, hr)]
            log_image_grid(self, "val/bicubic_model_gt", torch.stack(crops), nrow=3)
        return sr, bicubic

    def _log_eval(self, stage: str) -> None:
        model = self.metrics[f"{stage}_model"].compute()
        bicubic = self.metrics[f"{stage}_bicubic"].compute()
        values = {f"{stage}/{name}": model[name] for name in METRIC_NAMES}
        values |= {f"{stage}/bicubic_{name}": bicubic[name] for name in METRIC_NAMES}
        values[f"{stage}/psnr_y_gain_over_bicubic"] = model["psnr_y"] - bicubic["psnr_y"]
        self.log_dict(values, sync_dist=False)  # already reduced across ranks by the metric
        self.metrics[f"{stage}_model"].reset()
        self.metrics[f"{stage}_bicubic"].reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[str, torch.Tensor]]:
        sr = self.upscale(batch["lr"])
        return list(zip(batch["output_name"], sr))

    def on_fit_end(self) -> None:
        self._print_summary()

    @rank_zero_only
    def _print_summary(self) -> None:
        """After training: model vs bicubic on the validation set, and one upscaled example on disk."""
        metrics = self.trainer.callback_metrics
        if "val/psnr_y" not in metrics:
            return
        print(f"\nValidation (x{self.scale}, Y channel with {self.scale}-px border crop, and RGB):")
        print(f"  {'metric':<10}{'model':>10}{'bicubic':>10}")
        for name in METRIC_NAMES:
            print(f"  {name:<10}{metrics[f'val/{name}'].item():>10.4f}{metrics[f'val/bicubic_{name}'].item():>10.4f}")
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_set"):
            return
        example = datamodule.val_set[0]
        sr = self.upscale(example["lr"].unsqueeze(0).to(self.device))[0]
        path = save_image(sr, run_dir(self.trainer) / f"upscaled_x{self.scale}_{Path(example['path']).stem}.png")
        print(f"Upscaled example written to {path.resolve()}")


class SuperResolutionModule(SuperResolutionEvaluation):
    """PSNR-oriented training (ESRGAN stage 1, EDSR, SRResNet): pixel loss on (LR, HR) pairs.

    Args:
        generator: the SR network (e.g. ``networks.rrdbnet.RRDBNet``), mapping [0, 1] LR to HR.
        scale: must equal the generator's and the data's scale.
        pixel_loss: ``l1`` (the reference) or ``mse``.
        optimizer / lr_scheduler: from the config; the scheduler steps every ``scheduler_interval``.
        tile_size / tile_overlap: tiled inference for validation, test and predict (0 = whole image).
    """

    def __init__(
        self,
        generator: nn.Module,
        scale: int = 4,
        pixel_loss: Literal["l1", "mse"] = "l1",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        tile_size: int = 0,
        tile_overlap: int = 16,
    ):
        super().__init__()
        self.generator = generator
        self.scale, self.tile_size, self.tile_overlap = scale, tile_size, tile_overlap
        self.pixel_loss = F.l1_loss if pixel_loss == "l1" else F.mse_loss
        self.optimizer, self.lr_scheduler, self.scheduler_interval = optimizer, lr_scheduler, scheduler_interval
        self._init_metrics()

    def eval_generator(self) -> nn.Module:
        return self.generator

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.generator(lr)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = checked_sum(self, {"pixel": self.pixel_loss(self(batch["lr"]), batch["hr"])})
        self.log("train/pixel_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer(self.generator.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
