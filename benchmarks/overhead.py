"""Lightning step time against a plain PyTorch loop doing the same work on the same batch.

Both sides see one batch held in memory, so the ratio isolates what the Trainer adds (hooks,
logging, optimizer wrapping). Rounds alternate between the two sides so that a noisy,
shared machine slows both alike; the reported figure is the median over rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import clock, medians, seconds_per_call


class RepeatBatch(Dataset):
    """The same batch ``length`` times (use with ``batch_size=None``): timing without data loading."""

    def __init__(self, batch, length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.batch


class _StepTimer(Callback):
    """Wall time between consecutive batch starts: everything the loop does per step."""

    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())


def lightning_step_seconds(module: LightningModule, batch, steps: int, warmup: int) -> float:
    timer = _StepTimer()
    loader = DataLoader(RepeatBatch(batch, steps + warmup), batch_size=None)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    gaps = [b - a for a, b in zip(timer.starts[warmup:], timer.starts[warmup + 1 :])]
    return statistics.median(gaps)


class _BlockClock(Callback):
    """:func:`~benchmarks.common.clock` at the start of step ``warmup`` and at the end of each step."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start = self.end = clock()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = clock()


def lightning_step_clock(module: LightningModule, loader: DataLoader, warmup: int, steps: int) -> np.ndarray:
    """(wall, process CPU) seconds per ``Trainer.fit`` step on ``loader``, over the ``steps`` steps
    after ``warmup``: with the CPU time, which other jobs on the machine do not inflate."""
    timer = _BlockClock(warmup)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=warmup + steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    return (timer.end - timer.start) / steps


def overhead_ratio(
    make_module: Callable[[], LightningModule],
    make_plain_step: Callable[[], Callable[[], None]],
    batch,
    steps: int = 20,
    warmup: int = 3,
    rounds: int = 3,
) -> dict[str, float]:
    """Median Lightning and plain step times (seconds) and their ratio, over alternating rounds."""
    torch.manual_seed(0)
    lightning, plain = medians(
        rounds,
        lambda: lightning_step_seconds(make_module(), batch, steps, warmup),
        lambda: seconds_per_call(make_plain_step(), steps, warmup),
    )
    return {"lightning_s": float(lightning), "plain_s": float(plain), "ratio": float(lightning / plain)}
