"""Command-line entry point for every task: ``python train.py fit|validate|test|predict --config ...``.

The model and data classes come from the config (``class_path``/``init_args``). Besides the
Trainer's own arguments the CLI adds four always-on callbacks, each configurable from YAML:
``checkpoint`` (``last.ckpt`` plus the best on ``checkpoint.monitor``), ``lr_monitor``,
``progress_bar`` (Rich) and ``predict_writer`` (where predict writes its files).
"""

from __future__ import annotations

import sys

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_modules.callbacks import ImagePredictionWriter


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
        parser.add_lightning_class_args(ImagePredictionWriter, "predict_writer")


def cli_main(args: list[str] | None = None, run: bool = True) -> ResearchCLI:
    return ResearchCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        },
        args=args,
        run=run,
    )


if __name__ == "__main__":
    cli_main(sys.argv[1:])
