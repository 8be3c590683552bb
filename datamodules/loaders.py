"""DataLoaders whose order and randomness survive a resume.

A plain ``shuffle=True`` loader draws its order (and its worker seed) from the global torch
RNG when the epoch's iterator is created, which Lightning does at different points in a fresh
and in a resumed run. Here the order comes from a generator seeded with (seed + epoch) through
``set_epoch``, which Lightning calls before every epoch, and the loader's own generator keeps the
global RNG untouched, so a run resumed at an epoch boundary sees the same batches as an
uninterrupted one. Under DDP Lightning swaps the sampler for a ``DistributedSampler`` as usual.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


class EpochShuffleSampler(RandomSampler):
    """Random order that depends only on ``seed`` and the epoch number."""

    def __init__(self, data_source: Dataset, seed: int):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """The loader of every DataModule: reproducible shuffling, persistent workers, pinned memory on GPUs."""
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed) if shuffle else None,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_fn,
    )


class SplitLoaders:
    """The four loaders of a DataModule with ``train_set``/``val_set``/``test_set``/``predict_set``
    and the hyperparameters ``batch_size``, ``eval_batch_size`` and ``num_workers``: shuffled,
    full training batches; evaluation in order; predict one input at a time."""

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.train_set, hp.batch_size, shuffle=True, num_workers=hp.num_workers, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.hparams.eval_batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        return make_loader(self.test_set, self.hparams.eval_batch_size, num_workers=self.hparams.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self.predict_set, 1, num_workers=self.hparams.num_workers)
