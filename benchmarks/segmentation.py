"""Segmentation benchmark: the embedded default config after its CPU budget, as a markdown table.

    python -m benchmarks.segmentation                     # trains configs/segmentation/embedded.yaml first
    python -m benchmarks.segmentation --ckpt last.ckpt    # evaluates an existing checkpoint of that config

Reports, on the embedded validation scenes (unseen handwriting and background regions): mIoU,
pixel accuracy and the worst class IoU; the training time; training samples/s; how many samples/s
the data pipeline alone delivers; and the time per training step in Lightning relative to a plain
PyTorch loop running the same model, loss, optimizer, schedule and batch. The two sides alternate
for ``--timing-repeats`` rounds and the median round of each counts, so load from other jobs on a
shared machine disturbs the ratio as little as possible.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.common import (
    argument_parser,
    build, clock, medians, per_second, pipeline_samples_per_second, timed_fit, training_peak_rss_mib, validated,
    write_summary,
)
from benchmarks.overhead import RepeatBatch, lightning_step_clock
from lightning_modules.segmentation import SegmentationModule

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "segmentation" / "embedded.yaml")


def lightning_step(model: SegmentationModule, batch: dict, warmup: int, steps: int) -> np.ndarray:
    """(wall, CPU) seconds per ``Trainer.fit`` step on one batch held in memory."""
    return lightning_step_clock(model, DataLoader(RepeatBatch(batch, warmup + steps), batch_size=None), warmup, steps)


def plain_step(model: SegmentationModule, batch: dict, warmup: int, steps: int) -> np.ndarray:
    """(wall, CPU) seconds per step of the same forward, loss, backward, optimizer and poly schedule."""
    model.train()
    optimizer = model.optimizer(model.parameters())
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=warmup + steps, power=model.poly_power or 1.0)
    start = clock()
    for step in range(warmup + steps):
        if step == warmup:
            start = clock()
        loss = sum(model.loss_terms(model._outputs(batch["image"]), batch["mask"]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if model.poly_power is not None:
            scheduler.step()
    return (clock() - start) / steps


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--ckpt", help="evaluate this checkpoint instead of training --config first")
    parser.add_argument("--save-dir", default="runs/benchmark", help="where the training run (and its checkpoint) goes")
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument("--timing-repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    ckpt, train_time, samples = args.ckpt, None, None
    if ckpt is None:
        cli, ckpt, train_time = timed_fit(args.config, args.save_dir)
        samples = cli.trainer.global_step * cli.datamodule.batch_size
    scores = validated(args.config, args.save_dir, "--ckpt_path", ckpt)
    per_class = {k.removeprefix("val/iou_"): v for k, v in scores.items() if k.startswith("val/iou_")}
    worst = min(per_class, key=per_class.get)

    model, data = build(args.config, ckpt)
    data.setup("fit")
    pipeline = pipeline_samples_per_second(data.train_dataloader(), batches=30)
    batch = next(iter(data.train_dataloader()))
    model.eval()
    with torch.no_grad():
        predict = per_second(lambda: model(batch["image"]).argmax(dim=1), len(batch["image"]))

    def timed(step):
        torch.manual_seed(0)
        return step(build(args.config)[0], batch, 3, args.timing_steps)

    plain, lightning = medians(args.timing_repeats, lambda: timed(plain_step), lambda: timed(lightning_step))
    ratio = lightning / plain
    peak_memory = training_peak_rss_mib(args.config)
    batch_size = len(batch["image"])

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nMachine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load} (shared machine: timings are noisy); config {Path(args.config).name}; checkpoint {ckpt}\n")
    print("| val mIoU | pixel acc. | worst class IoU | train time (wall / CPU) | train samples/s (fit, wall) "
          "| data pipeline samples/s | step Lightning / plain (CPU) | (wall) |")
    print("|---|---|---|---|---|---|---|---|")
    budget = f"{train_time[0] / 60:.1f} / {train_time[1] / 60:.1f} min" if train_time is not None else "-"
    throughput = f"{samples / train_time[0]:.0f}" if train_time is not None else "-"
    print(f"| {scores['val/miou']:.3f} | {scores['val/pixel_acc']:.3f} | {per_class[worst]:.3f} ({worst}) | {budget} "
          f"| {throughput} | {pipeline:.0f} | {lightning[1] * 1e3:.0f} / {plain[1] * 1e3:.0f} ms = {ratio[1]:.3f} "
          f"| {lightning[0] * 1e3:.0f} / {plain[0] * 1e3:.0f} ms = {ratio[0]:.3f} |")
    print("\nPer-class IoU: " + ", ".join(f"{name} {value:.3f}" for name, value in per_class.items()))
    print(f"Step times: median of {args.timing_repeats} alternating rounds x {args.timing_steps} steps, batch {batch_size}, "
          f"one batch held in memory (Lightning-only samples/s: {batch_size / lightning[0]:.0f}).")
    size = "x".join(str(n) for n in batch["image"].shape[-2:])
    print(f"Peak memory while training (process RSS): {peak_memory:.0f} MiB; predict (network + argmax, {size}): "
          f"{predict:.0f} images/s.")
    write_summary(
        args.summary, task="segmentation", config=str(Path(args.config).relative_to(ROOT)),
        quality=f"mIoU {scores['val/miou']:.3f}, pixel acc. {scores['val/pixel_acc']:.3f}",
        step_ratio=float(ratio[0]), train_samples_per_s=batch_size / float(lightning[0]), pipeline_samples_per_s=pipeline,
        peak_memory_mib=peak_memory, predict=f"{predict:.0f} images/s ({size})",
    )


if __name__ == "__main__":
    main()
