"""Where a run writes (its folder) and how it logs images, for every logger and every task."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from datamodules.image_io import save_image


def run_dir(trainer: Trainer) -> Path:
    """The folder of this run, ``<save_dir>/<name>/<version>``, whose ``checkpoints/`` Lightning fills.

    Unlike ``trainer.log_dir`` this is per run for every logger, W&B included.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version


def log_image_grid(module: LightningModule, key: str, images: torch.Tensor, nrow: int = 8) -> None:
    """Log a grid of (N, 3, H, W) images in [0, 1] to every active logger, from rank 0 only.

    W&B gets ``log_image``, TensorBoard ``add_image``; loggers without image support (CSV)
    get a PNG in ``<log_dir>/images/``.
    """
    trainer = module.trainer
    if not trainer.is_global_zero or trainer.sanity_checking:
        return
    grid = torchvision.utils.make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2)
    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=step)
        elif logger.log_dir is not None:
            save_image(grid, Path(logger.log_dir) / "images" / f"{key.replace('/', '_')}_step{step:07d}.png")


class ImageRows:
    """Up to ``limit`` rows of images (e.g. input | output | target) gathered over an evaluation
    pass and logged as one grid, one row per sample; images of different sizes are padded."""

    def __init__(self, limit: int):
        self.limit = limit
        self.rows: list[tuple[torch.Tensor, ...]] = []

    def add(self, *columns: torch.Tensor) -> None:
        """One batch: each column (N, 3, H, W) in [0, 1]."""
        take = self.limit - len(self.rows)
        if take > 0:
            self.rows.extend(zip(*(column[:take] for column in columns)))

    def log(self, module: LightningModule, key: str) -> None:
        if self.rows:
            images = [image for row in self.rows for image in row]
            height, width = max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)
            padded = torch.stack([F.pad(i, (0, width - i.shape[-1], 0, height - i.shape[-2])) for i in images])
            log_image_grid(module, key, padded, nrow=len(self.rows[0]))
        self.rows = []
