"""Callbacks shared by every task: checkpoints, predict files, progress, seeding, network options."""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint, RichProgressBar
from PIL import Image
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchmetrics import Metric, MetricCollection

from datamodules.image_io import save_image
from lightning_modules.checks import non_finite_tensors


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always the newest state, whatever the monitor says.

    Lightning rewrites ``last.ckpt`` only when a top-k checkpoint was saved at the same step, so a
    run whose monitored metric stopped improving resumed from an old step. Here ``last.ckpt`` is
    written at every validation, at the end of every training epoch, at the end of fit and, with
    ``last_every_n_steps``, every that many optimizer steps. A module holding NaN or infinite
    weights is never written: the save raises instead, so no checkpoint holds them.
    """

    def __init__(self, *args: Any, last_every_n_steps: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.last_every_n_steps = last_every_n_steps
        self._last_written_step = -1

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)  # older checkpoints load

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Lets a run given another task's checkpoint say so (train.py), instead of listing state-dict keys.
        checkpoint["module_class"] = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        bad = non_finite_tensors(trainer.lightning_module)
        if bad:
            raise FloatingPointError(
                f"not saving {filepath}: non-finite values at global step {trainer.global_step} in "
                f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; the earlier checkpoints are kept as they were"
            )
        super()._save_checkpoint(trainer, filepath)

    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written_step = trainer.global_step

    def _refresh_last(self, trainer: Trainer) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        if (
            self.save_last
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and not trainer.fast_dev_run
            and self._last_written_step != trainer.global_step
        ):
            saved = self._last_global_step_saved  # a last-only save must not stop a best-* save at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = saved

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):  # else the epoch end saves, after the epoch
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if self.last_every_n_steps > 0 and trainer.global_step % self.last_every_n_steps == 0:
            self._refresh_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._refresh_last(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file next to its target, then renames it over the target.

    The rename is atomic on one filesystem (fsspec's transaction stages in the system temp folder,
    whose move onto another filesystem is a copy). Remote paths (``s3://``...) go through fsspec. A kill mid-save leaves the previous file intact
    and at most a ``.<name>.partial-<pid>`` file, which the next save in that folder removes.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's fsspec path
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(".*.partial-*"):
            stale.unlink(missing_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


class ImagePredictionWriter(BasePredictionWriter):
    """Writes what ``predict_step`` returns into ``output_dir``.

    ``predict_step`` returns a list of ``(relative_path, image)`` pairs, where ``image`` is a
    (3, H, W) tensor in [0, 1] (or uint8) or a PIL image (e.g. a palette mask). Files that are
    inputs of the predict run (the ``files`` of every predict dataset) are never overwritten.
    """

    def __init__(self, output_dir: str = "predictions"):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._inputs: set[Path] = set()
        self.written: list[Path] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loaders = trainer.predict_dataloaders
        loaders = loaders if isinstance(loaders, Sequence) else [loaders]
        self._inputs = {Path(f).resolve() for dl in loaders for f in getattr(dl.dataset, "files", [])}
        self.written = []
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"--predict_writer.output_dir {self.output_dir}: cannot create the output folder ({err})") from err

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for relative_path, image in prediction:
            path = self.output_dir / relative_path
            if path.resolve() in self._inputs:
                raise FileExistsError(
                    f"{path}: refusing to overwrite an input file of this predict run; "
                    "set --predict_writer.output_dir to another folder"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(image, Image.Image):
                image.save(path)
            else:
                save_image(image, path)
            self.written.append(path)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.written:
            print(f"predict: wrote {len(self.written)} file(s) to {self.output_dir.resolve()}")


class ProgressBar(RichProgressBar):
    """Rich progress bar; a step-based run (``max_steps``, no ``max_epochs``) gets one bar over all
    its optimizer steps instead of a bar per epoch of an endless epoch count."""

    def _step_based(self) -> bool:
        return self.trainer.max_steps > 0 and self.trainer.max_epochs in (None, -1)

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self._step_based() else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if not self._step_based():
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch} steps':{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._step_based() and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, description=self._get_train_description(trainer.current_epoch))
            self.refresh()
            return
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._step_based():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, total=trainer.max_steps)  # a time budget sets it late
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


class SeedEveryEpoch(Callback):
    """Reseeds every RNG at each epoch start from (``--seed_everything`` + epoch).

    Shuffling, random crops and noise of an epoch then depend only on the seed and the epoch
    number, so a run resumed from an epoch-boundary checkpoint repeats exactly what the
    uninterrupted run would have done. Datasets may derive per-sample randomness from
    ``torch.initial_seed()`` and the index, which then changes every epoch.
    """

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        base = os.environ.get("PL_GLOBAL_SEED")
        if base is not None:
            seed_everything(int(base) + trainer.current_epoch, workers=True, verbose=False)
            os.environ["PL_GLOBAL_SEED"] = base  # seed_everything overwrites it


class NetworkOptions(Callback):
    """Memory format and compilation of the networks, for every task: ``--network_options.*``.

    Applies to each direct child module of the LightningModule that has parameters of its own
    (outside torchmetrics metrics): generator, discriminator, generator EMA, net, perceptual
    loss... Metrics and containers of metrics (LPIPS) are left alone.

    Args:
        channels_last: NHWC memory format for the networks' weights: convolutions on recent
            GPUs (tensor cores, cuDNN) run faster with it, and inputs follow the weights' format.
        compile: ``torch.compile`` each network in place (``nn.Module.compile``, so state_dict
            keys and checkpoints are unchanged): fuses elementwise ops into the convolutions'
            neighbours. For an EMA copy (``AveragedModel``) the averaged network is compiled.
        compile_mode: ``mode`` of ``torch.compile`` (``default``, ``reduce-overhead``,
            ``max-autotune``...; ``null`` = torch's default).

    Both are off by default. channels_last can pay on a CPU too (oneDNN convolutions prefer NHWC:
    the default SR config's RRDBNet trains 1.27x faster with it on the 2-core EPYC of the
    README's benchmarks); compiling costs start-up time (and a recompilation for every new
    input shape).
    """

    def __init__(self, channels_last: bool = False, compile: bool = False, compile_mode: str | None = None):
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self._done: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # setup runs once per stage

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not (self.channels_last or self.compile):
            return
        for child in networks(pl_module):
            if child in self._done:
                continue
            if self.channels_last:
                child.to(memory_format=torch.channels_last)  # 4D weights only; others are unchanged
            if self.compile:
                (child.module if isinstance(child, AveragedModel) else child).compile(mode=self.compile_mode)
            self._done.add(child)


def networks(module: nn.Module) -> list[nn.Module]:
    """The direct children of ``module`` with parameters outside torchmetrics metrics."""
    found = []
    for child in module.children():
        if isinstance(child, (Metric, MetricCollection)):
            continue
        in_metrics = {
            id(p) for m in child.modules() if isinstance(m, (Metric, MetricCollection)) for p in m.parameters()
        }
        if any(id(p) not in in_metrics for p in child.parameters()):
            found.append(child)
    return found
