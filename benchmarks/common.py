"""What several benchmarks share: building a task from its config, and timing a DataLoader."""

from __future__ import annotations

import time

import torch
from lightning.pytorch import LightningDataModule, LightningModule

from lightning_modules.fid import match_fid_state
from train import cli_main


def build(config: str, ckpt: str | None = None) -> tuple[LightningModule, LightningDataModule]:
    """Model and data exactly as the CLI builds them from ``config`` (weights from ``ckpt``)."""
    cli = cli_main(["--config", config], run=False)
    model, data = cli.model, cli.datamodule
    if ckpt is not None:
        state = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
        match_fid_state(state, getattr(model, "fid", None))
        model.load_state_dict(state)
    return model, data


def batch_length(batch) -> int:
    """Samples in a batch: the length of its first tensor."""
    values = batch.values() if isinstance(batch, dict) else batch
    return next(len(value) for value in values if isinstance(value, torch.Tensor))


def pipeline_samples_per_second(loader, batches: int) -> float:
    """Samples/s from a DataLoader alone (decode, transforms, collate), no model. The first
    batch (worker start-up, cached decoding) is not counted."""
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        count += batch_length(batch)
    return count / (time.perf_counter() - start)
