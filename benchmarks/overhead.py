"""Lightning step time against a plain PyTorch loop doing the same work on the same batch.

Both sides see one batch held in memory, so the ratio isolates what the Trainer adds (hooks,
logging, optimizer wrapping). Rounds alternate between the two sides so that a noisy,
shared machine slows both alike; the reported figure is the median over rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset


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


def plain_step_seconds(step: Callable[[], None], steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    lightning_times, plain_times = [], []
    for _ in range(rounds):
        lightning_times.append(lightning_step_seconds(make_module(), batch, steps, warmup))
        plain_times.append(plain_step_seconds(make_plain_step(), steps, warmup))
    lightning, plain = statistics.median(lightning_times), statistics.median(plain_times)
    return {"lightning_s": lightning, "plain_s": plain, "ratio": lightning / plain}
