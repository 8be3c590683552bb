"""Command-line entry point for every task: ``python train.py fit|validate|test|predict|export --config ...``.

The model and data classes come from the config (``class_path``/``init_args``). Besides the
Trainer's own arguments the CLI adds always-on callbacks, each configurable from YAML:
``checkpoint`` (``last.ckpt`` plus the best on ``checkpoint.monitor``), ``lr_monitor``,
``progress_bar`` (Rich), ``epoch_seed`` (per-epoch reseeding, so a run resumed at an epoch
boundary continues exactly like an uninterrupted one), ``predict_writer`` (where predict
writes its files), ``network_options`` (channels_last memory format and torch.compile of the
networks), ``budget`` (a wall-time budget for step-less runs) and ``summary`` (the validation
table and example image each task declares, printed after fit).

``--ckpt_path last`` resumes from the newest ``last.ckpt`` of the configured logger's
experiment and keeps logging into the same run folder.
"""

from __future__ import annotations

import os
import pickle
import platform
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Literal

import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from datamodules.generation import dataset_channels
from lightning_modules.budget import TimeBudget
from lightning_modules.callbacks import (
    AtomicCheckpointIO,
    ImagePredictionWriter,
    NetworkOptions,
    ProgressBar,
    RunCheckpoint,
    SeedEveryEpoch,
)
from lightning_modules.evaluation import EvaluationSummary
from lightning_modules.export import export_network
from lightning_modules.run_logging import run_dir
from lightning_modules.schedules import RunLengthSchedules


# Lightning 2.6 calls a pytree API that torch 2.14 deprecates: nothing a user can act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config next to the checkpoints, and into the W&B run's config."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "predict":
            return  # predict writes images only, and has no run folder
        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        # skip_check: the config was validated when it was parsed; checking it again costs more than writing it.
        self.parser.save(self.config, folder / self.config_filename, overwrite=True, skip_check=True)
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


#: Values that must agree between the data and the networks: set once, on the data (or the
#: model), and copied to each target that the configured classes have (others are skipped).
LINKS = [
    ("data.init_args.scale", "model.init_args.scale"),
    ("data.init_args.scale", "model.init_args.generator.init_args.scale"),
    ("data.init_args.patch_size", "model.init_args.discriminator.init_args.input_size"),
    *(("data.init_args.image_size", f"model.init_args.{net}.init_args.image_size") for net in ("generator", "discriminator", "network")),
    ("model.init_args.num_classes", "model.init_args.net.init_args.num_classes"),
    ("data.init_args.input_frames", "model.init_args.input_frames"),
    ("data.init_args.output_frames", "model.init_args.output_frames"),
]
#: The channels of generation data (the dataset's own unless given), to every network that has them.
CHANNEL_LINKS = [f"model.init_args.{net}.init_args.channels" for net in ("generator", "discriminator", "network")]


class ResearchTrainer(Trainer):
    """Lightning's Trainer with one more command, ``export``."""

    def export(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        output: str = "",
        format: Literal["onnx", "torchscript"] = "onnx",
        ckpt_path: str | None = None,
        weights_only: bool = True,
    ) -> Path:
        """Write the task's evaluation network (the EMA generator where there is one) to an ONNX or TorchScript file.

        Args:
            output: the file to write (``.onnx`` / ``.pt``); never the checkpoint itself.
            format: ``onnx`` (run with ONNX Runtime; needs the ``export`` extra) or ``torchscript``.
            ckpt_path: the Lightning checkpoint whose weights to export; without it, the config's
                weights (e.g. ``model.init_args.pretrained_generator``).
            weights_only: as for the other commands.
        """
        if not output:
            raise ValueError("export needs --output FILE (e.g. model.onnx or model.pt)")
        if not hasattr(model, "export_spec"):
            raise ValueError(f"{type(model).__name__} has no export_spec(): this task does not export")
        if ckpt_path is not None and Path(output).resolve() == Path(ckpt_path).resolve():
            raise ValueError(f"--output {output} is the checkpoint being exported: choose another file")
        if ckpt_path is not None:
            checkpoint = load_checkpoint_file(Path(ckpt_path), weights_only)
            model.on_load_checkpoint(checkpoint)
            model.load_state_dict(checkpoint["state_dict"])
        elif hasattr(model, "load_pretrained_generator"):
            model.load_pretrained_generator()
        metadata = {"model_class": f"{type(model).__module__}.{type(model).__qualname__}",
                    "weights": ckpt_path or getattr(model, "pretrained_generator", None) or "config (no checkpoint)"}
        written = export_network(model.eval().export_spec(), output, format, metadata)
        print(f"Exported {type(model).__name__} to {written} ({format}); outputs match PyTorch's")
        return written


class ResearchCLI(LightningCLI):
    def __init__(self, *args, **kwargs):
        # A parser per subcommand takes seconds to build, and a command line that names its
        # subcommand needs only that one (`python train.py --help` still lists them all).
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        if isinstance(argv, list) and argv and argv[0] in self.subcommands():
            chosen = argv[0]
            self.subcommands = lambda: {chosen: ResearchCLI.subcommands()[chosen]}
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return LightningCLI.subcommands() | {"export": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in LINKS:
            parser.link_arguments(source, target)
        for target in CHANNEL_LINKS:
            parser.link_arguments(("data.init_args.channels", "data.init_args.dataset"), target, compute_fn=dataset_channels)
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch:03d}-{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(ProgressBar, "progress_bar")
        parser.add_lightning_class_args(SeedEveryEpoch, "epoch_seed")
        parser.add_lightning_class_args(ImagePredictionWriter, "predict_writer")
        parser.add_lightning_class_args(NetworkOptions, "network_options")
        parser.add_lightning_class_args(TimeBudget, "budget")
        parser.add_lightning_class_args(EvaluationSummary, "summary")
        parser.add_lightning_class_args(RunLengthSchedules, "run_length_schedules")
        parser.add_argument(
            "--auto_bf16", type=bool, default=False,
            help="Unless trainer.precision is given: bf16-mixed where the hardware runs bfloat16 natively (a CUDA "
            "GPU with bf16, an x86 CPU with AMX or AVX512-BF16), float32 elsewhere.",
        )

    def _dump_config(self) -> None:
        """Lightning's (the config that goes into the checkpoints' hparams), without validating again
        the config it has just parsed, which takes longer than the dump itself."""
        if hasattr(self, "config_dump"):
            return
        dump = self.parser.dump(self.config, skip_link_targets=False, skip_none=False, skip_check=True, format="yaml")
        self.config_dump = yaml.safe_load(dump)
        if "subcommand" in self.config:
            self.config_dump = self.config_dump[self.config.subcommand]

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``ckpt_path`` while parsing, always with ``weights_only=True``: read it with the
        run's ``--weights_only``, say plainly when the file is no checkpoint or belongs to another task."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is None or not config.get("ckpt_path") or not Path(config.ckpt_path).is_file():
            return
        checkpoint = load_checkpoint_file(Path(config.ckpt_path), weights_only=config.get("weights_only") is not False)
        written_by = checkpoint.get("module_class")
        wanted = config.model.class_path if "class_path" in config.model else None
        if written_by and wanted and written_by != wanted:
            raise ValueError(
                f"--ckpt_path {config.ckpt_path} is a checkpoint of {written_by}, but this run's model is {wanted}: "
                "pass the config of the task that wrote it, or a checkpoint of this task"
            )
        hparams = dict(checkpoint.get("hyper_parameters") or {})  # as Lightning does: saved hparams win
        hparams.pop("_instantiator", None)
        if hparams:
            if "_class_path" in hparams:
                hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in ("predict", "export"):
            config.trainer.logger = False  # these write only their outputs: no run folder per call
        if config.auto_bf16 and config.trainer.precision is None and native_bf16(config.trainer):
            config.trainer.precision = "bf16-mixed"
            print("auto_bf16: this machine runs bfloat16 natively, so trainer.precision=bf16-mixed")
        if self.subcommand != "fit" or config.ckpt_path != "last":
            return
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

    def _instantiate_trainer(self, config, callbacks):
        if config.get("enable_progress_bar") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
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


def load_checkpoint_file(path: Path, weights_only: bool = True) -> dict:
    """``torch.load`` a Lightning checkpoint, with errors that say what the file is and what to do."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"--ckpt_path {path} is not a checkpoint (not a file written by torch.save / Lightning)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"--ckpt_path {path} holds objects beyond tensors and plain containers, so it cannot be loaded with "
            f"weights_only=True ({str(err).splitlines()[0]}). Only if you trust its source, pass --weights_only=false."
        ) from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"--ckpt_path {path} is not a readable checkpoint (truncated or corrupt): {err}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"--ckpt_path {path} is not a Lightning checkpoint (no state_dict inside)")
    return checkpoint


def native_bf16(trainer_config) -> bool:
    """Whether the run's accelerator has native bfloat16: a CUDA GPU that supports it, or a CPU where
    :func:`cpu_bf16_is_emulated` is False on x86. Other accelerators and CPUs are not assumed to."""
    accelerator = str(trainer_config.accelerator)
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if accelerator in ("auto", "cpu"):
        return platform.machine().lower() in ("x86_64", "amd64") and not cpu_bf16_is_emulated()
    return False


def cpu_bf16_is_emulated() -> bool:
    """True on an x86 CPU without bfloat16 instructions (AVX512-BF16 or AMX), or where oneDNN is told
    not to use them (``ONEDNN_MAX_CPU_ISA``), since bf16 autocast is then several times slower than
    float32; False with them, and on other architectures (not checked)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if not any(isa in limit for isa in ("BF16", "AMX", "AVX10", "FP16", "ALL")):
        return True
    return not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cli_main(args: list[str] | None = None, run: bool = True) -> ResearchCLI:
    try:
        cli = ResearchCLI(
            LightningModule,
            LightningDataModule,
            trainer_class=ResearchTrainer,
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
