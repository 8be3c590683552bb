"""Command-line entry point for every task: ``python train.py fit|validate|test|predict --config ...``.

The model and data classes come from the config (``class_path``/``init_args``). Besides the
Trainer's own arguments the CLI adds always-on callbacks, each configurable from YAML:
``checkpoint`` (``last.ckpt`` plus the best on ``checkpoint.monitor``), ``lr_monitor``,
``progress_bar`` (Rich), ``epoch_seed`` (per-epoch reseeding, so a run resumed at an epoch
boundary continues exactly like an uninterrupted one), ``predict_writer`` (where predict
writes its files) and ``network_options`` (channels_last memory format and torch.compile of the
networks).

``--ckpt_path last`` resumes from the newest ``last.ckpt`` of the configured logger's
experiment and keeps logging into the same run folder.
"""

from __future__ import annotations

import pickle
import platform
import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from lightning_modules.callbacks import ImagePredictionWriter, NetworkOptions, SeedEveryEpoch, run_dir


# Lightning 2.6 calls a pytree API that torch 2.14 deprecates: nothing a user can act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config next to the checkpoints, and into the W&B run's config."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, folder / self.config_filename, overwrite=True)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


def _latest_last_checkpoint(logger_config) -> tuple[Path, str] | None:
    """Newest ``<save_dir>/<name>/<version>/checkpoints/last.ckpt`` for the configured logger."""
    if not logger_config or logger_config is True:
        return None
    args = logger_config.init_args
    save_dir = Path(args.get("save_dir") or ".")
    name = args.get("project") or args.get("name") or "lightning_logs"
    candidates = sorted((save_dir / name).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return (candidates[-1], candidates[-1].parent.parent.name) if candidates else None


def _keep_previous_metrics(folder: Path) -> None:
    """CSVLogger deletes an existing metrics.csv when it reopens a run folder: set it aside first."""
    metrics = folder / "metrics.csv"
    if metrics.is_file():
        parts = len(list(folder.glob("metrics.part*.csv")))
        metrics.rename(folder / f"metrics.part{parts}.csv")


class ResearchCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch:03d}-{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(RichProgressBar, "progress_bar")
        parser.add_lightning_class_args(SeedEveryEpoch, "epoch_seed")
        parser.add_lightning_class_args(ImagePredictionWriter, "predict_writer")
        parser.add_lightning_class_args(NetworkOptions, "network_options")

    def before_instantiate_classes(self) -> None:
        if self.subcommand != "fit" or self.config.fit.ckpt_path != "last":
            return
        config = self.config.fit
        found = _latest_last_checkpoint(config.trainer.logger)
        if found is None:
            return  # Lightning then looks in the checkpoint folder and says when there is nothing
        checkpoint, version = found
        config.ckpt_path = str(checkpoint)
        logger_args = config.trainer.logger.init_args
        if "WandbLogger" in config.trainer.logger.class_path:
            logger_args["id"], logger_args["resume"] = version, "allow"
        else:
            logger_args["version"] = int(version.removeprefix("version_")) if version.startswith("version_") else version
            _keep_previous_metrics(checkpoint.parent.parent)
        print(f"Resuming from {checkpoint}")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        precision = str(self.trainer.precision)
        on_cpu = isinstance(self.trainer.accelerator, CPUAccelerator)
        if precision.startswith("bf16") and on_cpu and cpu_bf16_is_emulated():
            rank_zero_warn(
                f"trainer.precision={precision} on a CPU without native bfloat16 (no AVX512-BF16, no AMX): "
                "oneDNN emulates it, and the SR training step measured 2.5x (AVX-512) to 10x (AVX2) slower "
                "than float32. On this machine use --trainer.precision=32-true."
            )

    def before_fit(self) -> None:
        if self.config.fit.trainer.sync_batchnorm and isinstance(self.trainer.accelerator, CPUAccelerator):
            raise ValueError(
                "trainer.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm does not run on CPU. "
                "Leave it false for CPU runs (each process then normalises with its own batch)."
            )


def cpu_bf16_is_emulated() -> bool:
    """True on an x86 CPU without bfloat16 instructions (AVX512-BF16 or AMX), where bf16 autocast is
    several times slower than float32; False with them, and on other architectures (not checked)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cli_main(args: list[str] | None = None, run: bool = True) -> ResearchCLI:
    try:
        cli = ResearchCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
            trainer_defaults={
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            },
            args=args,
            run=run,
        )
    except pickle.UnpicklingError as err:
        _finish_wandb(failed=True)
        raise pickle.UnpicklingError(
            f"{err}\nThe checkpoint holds objects beyond tensors and plain containers, so it cannot be "
            "loaded with weights_only=True. Only if you trust its source, pass --weights_only=false."
        ) from err
    except BaseException:
        _finish_wandb(failed=True)
        raise
    if run:
        _finish_wandb(failed=False)
    return cli


def _finish_wandb(failed: bool) -> None:
    """Close the W&B run (WandbLogger never does), marking it failed when the command raised."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _destroy_process_group() -> None:
    """Shut a DDP process group down before the interpreter does. Lightning only does it for NCCL;
    a gloo group left to interpreter shutdown can abort a finished run ("terminate called without
    an active exception", exit -6)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    try:
        cli_main()
    finally:
        _destroy_process_group()
