"""What the benchmarks share: building, fitting and validating a task from its config, timing
(every timing is a median, see :func:`medians`), timing a DataLoader, peak memory, and the summary
row each task contributes to the combined table of ``python -m benchmarks``."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from train import cli_main


def build(config: str, ckpt: str | None = None) -> tuple[LightningModule, LightningDataModule]:
    """Model and data exactly as the CLI builds them from ``config`` (weights from ``ckpt``)."""
    cli = cli_main(["--config", config], run=False)
    model, data = cli.model, cli.datamodule
    if ckpt is not None:
        model.load_state_dict(torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"])
    return model, data


def _run_args(command: str, config: str, save_dir: str | Path, overrides: Sequence[str]) -> list[str]:
    return [command, "--config", config, *overrides, f"--trainer.logger.init_args.save_dir={save_dir}",
            "--progress_bar.refresh_rate=0"]


def timed_fit(config: str, save_dir: str | Path, *overrides: str) -> tuple[LightningCLI, str, np.ndarray]:
    """Fit ``config`` with the CLI, the command a user runs, logging under ``save_dir``: the CLI (its
    trainer and datamodule), the last checkpoint, and (wall, process CPU) seconds of the whole fit."""
    start = clock()
    cli = cli_main(_run_args("fit", config, save_dir, overrides))
    return cli, cli.trainer.checkpoint_callback.last_model_path, clock() - start


def validated(config: str, save_dir: str | Path, *overrides: str) -> dict[str, float]:
    """The metrics of ``validate`` run from the CLI (``"--ckpt_path", ckpt`` among ``overrides``
    validates trained weights)."""
    cli = cli_main(_run_args("validate", config, save_dir, overrides))
    return {key: float(value) for key, value in cli.trainer.callback_metrics.items()}


def trained_and_validated(config: str, ckpt: str | None, workdir: Path) -> tuple[dict[str, float], dict | None]:
    """Validation metrics of ``config`` for ``ckpt``, training it first when no checkpoint is
    given (then also the fit's wall and CPU seconds, optimizer steps and precision)."""
    cost = None
    if ckpt is None:
        cli, ckpt, (wall, cpu) = timed_fit(config, workdir)
        cost = {"wall_s": wall, "cpu_s": cpu, "steps": cli.trainer.global_step, "precision": str(cli.trainer.precision)}
    return validated(config, workdir, "--ckpt_path", ckpt), cost


def job_rows(cost: dict | None) -> list[tuple[str, str]]:
    """Table rows for the fit of :func:`trained_and_validated` (none when a checkpoint was given)."""
    if cost is None:
        return []
    return [
        ("embedded job: wall time (fit incl. validation)", f"{cost['wall_s'] / 60:.1f} min"),
        ("embedded job: process CPU time (all threads)",
         f"{cost['cpu_s'] / 60:.1f} min ({cost['steps']} optimizer steps, {cost['precision']})"),
    ]


def clock() -> np.ndarray:
    """(wall, process CPU) seconds; CPU time does not count the time other jobs hold the cores."""
    return np.array([time.perf_counter(), time.process_time()])


def medians(rounds: int, *measures: Callable[[], object]) -> list:
    """The median of each of ``measures`` (numbers or arrays, element-wise) over ``rounds`` rounds.

    The measures alternate within a round, so that load from other jobs on a shared machine hits
    them alike, and the median leaves out the rounds it disturbed most. Every benchmark timing is
    such a median.
    """
    results: list[list] = [[] for _ in measures]
    for _ in range(rounds):
        for values, measure in zip(results, measures):
            values.append(measure())
    return [np.median(values, axis=0) for values in results]


def seconds_per_call(run: Callable[[], object], calls: int, warmup: int = 1) -> float:
    """Median wall seconds of one ``run()`` over ``calls`` timed calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()

    def timed() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    return float(medians(calls, timed)[0])


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


def reset_peak_rss() -> None:
    """Restart this process's resident-set peak (VmHWM) at its current size (Linux)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB) since start or ``reset_peak_rss``."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def training_peak_rss_mib(config: str, overrides: Sequence[str] = (), steps: int = 3) -> float:
    """Peak resident memory (MiB) of a fresh process that builds ``config`` and runs ``steps``
    Lightning training steps on CPU at its batch size: libraries, cached data, weights,
    optimizer state and activations, what a user's machine must hold. A fresh process, so that
    nothing from earlier measurements counts."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_training_peak_rss, args=(config, list(overrides), steps, results))
    process.start()
    peak = results.get()
    process.join()
    return peak


def _training_peak_rss(config: str, overrides: list[str], steps: int, results) -> None:
    from benchmarks.overhead import lightning_step_seconds  # imports this module

    torch.set_num_threads(1)
    cli = cli_main(["--config", config, *overrides, "--trainer.logger=false"], run=False)
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    lightning_step_seconds(cli.model, batch, steps=steps, warmup=1)
    results.put(peak_rss_mib())


def per_second(run: Callable[[], object], items: int, repeats: int = 3) -> float:
    """Items per second of ``run()`` (which handles ``items``): the median of ``repeats`` calls, after
    one warm-up call."""
    return items / seconds_per_call(run, repeats)


SUMMARY_FIELDS = {
    "task": "task (config)",
    "config": "config",
    "quality": "quality of the embedded default after its budget",
    "step_ratio": "Lightning / plain PyTorch step",
    "train_samples_per_s": "training samples/s",
    "pipeline_samples_per_s": "data pipeline samples/s",
    "predict": "predict throughput (network, no file I/O)",
    "peak_memory_mib": "peak memory, training (process RSS)",
}


def write_summary(path: str | None, **row: object) -> None:
    """Write one task's row of the combined table of ``python -m benchmarks`` as JSON to ``path``."""
    missing = set(SUMMARY_FIELDS) - set(row)
    if missing:
        raise ValueError(f"summary row lacks {sorted(missing)}")
    if path is not None:
        Path(path).write_text(json.dumps(row))


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring as help, and ``--summary`` for ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", help="also write this task's row of the combined table here (JSON)")
    return parser
