"""How every task evaluates: per-stage hooks, its validation table and one example output on disk.

A task with :class:`StagedEvaluation` writes ``evaluate_batch`` and ``log_evaluation`` once for
validation and test. It declares what to show after training by returning a :class:`Summary`
from ``evaluation_summary()``; :class:`EvaluationSummary` (always on in the CLI, ``--summary.*``)
prints it from the logged metrics at the end of fit and writes the example into the run folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from datamodules.image_io import save_image
from lightning_modules.run_logging import run_dir


class StagedEvaluation(ABC):
    """Validation and test hooks of a LightningModule (list it before the LightningModule base),
    calling the task's ``evaluate_batch(batch, batch_idx, stage)`` and ``log_evaluation(stage)``."""

    @abstractmethod
    def evaluate_batch(self, batch: dict, batch_idx: int, stage: str) -> None:
        """Update the ``stage`` ("val" or "test") metrics with one batch."""

    @abstractmethod
    def log_evaluation(self, stage: str) -> None:
        """Log the ``stage`` metrics of the pass that ended, and reset them."""

    def start_evaluation(self, stage: str) -> None:
        """Before each validation or test pass (nothing by default)."""

    def on_validation_epoch_start(self) -> None:
        self.start_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self.start_evaluation("test")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluate_batch(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_evaluation("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluate_batch(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self.log_evaluation("test")


class PairedEvaluation(StagedEvaluation):
    """Logging for tasks that score outputs against their ground truth: ``self.metrics[stage]``
    (``compute()`` gives a dict, synced across ranks), an optional ``self.fid``
    (:class:`~lightning_modules.fid.GenerativeMetrics`) whose real side is each evaluation's
    ground truth, and an image grid ``self._grid`` (:class:`~lightning_modules.run_logging.ImageRows`)
    logged as ``<stage>/<grid_key>``."""

    grid_key: str

    def log_evaluation(self, stage: str) -> None:
        values = {f"{stage}/{name}": value for name, value in self.metrics[stage].compute().items()}
        self.metrics[stage].reset()
        self.log_dict(values, sync_dist=False, prog_bar=stage == "val")  # metrics are already synced
        if self.fid is not None:
            self.fid.log(self, f"{stage}/", prog_bar=stage == "val")
        self._grid.log(self, f"{stage}/{self.grid_key}")

    def start_evaluation(self, stage: str) -> None:
        # FID's real side is recomputed at every evaluation, so FID stays right when validate/test
        # run on other images than the training run did.
        if self.fid is not None:
            self.fid.forget_real()


@dataclass(frozen=True)
class Summary:
    """A task's validation table and example.

    Args:
        title: the heading, saying what was measured and how.
        rows: metric names, one row each (rows with no logged value are left out).
        columns: column heading -> logged key of a row's metric, ``{}`` standing for the row name
            (``{"model": "val/{}", "bicubic": "val/bicubic_{}"}``); one column prints no heading.
        example: one validation sample -> (file name, image in [0, 1]) to write into the run folder.
        example_caption: what the written image shows.
    """

    title: str
    rows: Sequence[str]
    columns: Mapping[str, str] = field(default_factory=lambda: {"value": "val/{}"})
    example: Callable[[dict], tuple[str, torch.Tensor]] | None = None
    example_caption: str = "Example"

    def table(self, metrics: Mapping[str, torch.Tensor]) -> list[str]:
        """The printed lines, from logged ``metrics``."""
        rows = [row for row in self.rows if any(key.format(row) in metrics for key in self.columns.values())]
        if not rows:
            return []
        width = max(len(row) for row in rows) + 2
        lines = [f"\n{self.title}:"]
        if len(self.columns) > 1:
            lines.append(f"  {'metric':<{width}}" + "".join(f"{name:>12}" for name in self.columns))
        for row in rows:
            values = [metrics.get(key.format(row)) for key in self.columns.values()]
            lines.append(f"  {row:<{width}}" + "".join("           -" if v is None else f"{v.item():>12.4f}" for v in values))
        return lines


class EvaluationSummary(Callback):
    """After fit, prints the module's :class:`Summary` table and writes its example image.

    Args:
        write_example: also run the model on the first validation sample and save the output
            into the run folder.
    """

    def __init__(self, write_example: bool = True):
        self.write_example = write_example

    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        declare = getattr(pl_module, "evaluation_summary", None)
        summary: Summary | None = declare() if declare is not None else None
        lines = summary.table(trainer.callback_metrics) if summary is not None else []
        if not lines:
            return
        print("\n".join(lines))
        val_set = getattr(trainer.datamodule, "val_set", None)
        if not (self.write_example and summary.example is not None and val_set is not None and len(val_set)):
            return
        with torch.no_grad():
            name, image = summary.example(val_set[0])
        # run_dir, not trainer.log_dir: the latter broadcasts, and only rank 0 runs this.
        path = save_image(image, run_dir(trainer) / name)
        print(f"{summary.example_caption} written to {path.resolve()}")
