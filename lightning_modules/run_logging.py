"""Where a run writes (its folder) and how it logs images, for every logger and every task."""

from __future__ import annotations

from pathlib import Path

import torch
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
