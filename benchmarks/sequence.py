"""Video prediction benchmark: the embedded ConvLSTM against repeating the last input frame,
Lightning overhead.

    python -m benchmarks.sequence                   # trains configs/sequence/embedded.yaml first
    python -m benchmarks.sequence --ckpt last.ckpt  # evaluates an existing embedded-config checkpoint

Prints markdown tables. Quality is measured on the embedded validation clips of the config (256
clips of two held-out digits bouncing in 64x64, 10 frames in, 10 generated closed loop): MSE and
MAE per frame summed over pixels, PSNR and SSIM per frame, averaged and per horizon, for the model
and for the parameter-free baseline that repeats the last input frame. The step ratio compares the
Lightning training step with a plain PyTorch loop doing the same work (the module's network,
optimizer, scheduler, loss and scheduled-sampling draw) on the same batch, both with the config's
channels_last. CPU cost is reported as process CPU time (all threads) next to wall time, since wall
time on a shared machine depends on the other jobs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import (
    argument_parser, job_rows, per_second, pipeline_samples_per_second, trained_and_validated, training_peak_rss_mib, write_summary,
)
from benchmarks.overhead import overhead_ratio
from lightning_modules.sequence import METRIC_NAMES
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "sequence" / "embedded.yaml")


#: The scheduler's length 0 spans a run (the CLI's callback sets it when fit starts); timing
#: outside the CLI needs a length, and any length costs the same.
SCHEDULE_LENGTH = "--model.init_args.lr_scheduler.init_args.T_max=1000"


def _make_module():
    """The config's module, its network channels_last as the config's network_options set."""
    module = cli_main(["--config", CONFIG, "--trainer.logger=false", SCHEDULE_LENGTH], run=False).model
    module.network.to(memory_format=torch.channels_last)
    return module


#: Timed and untimed Lightning steps per round; the plain loop makes as many.
STEPS, WARMUP = 10, 3


def _overhead(batch: dict) -> dict[str, float]:
    def make_plain_step():
        module = _make_module()
        network, frames = module.network, module.output_frames
        optimizer = module.optimizer(network.parameters())
        scheduler = module.lr_scheduler(optimizer)
        # The module's scheduled sampling over its Lightning run (STEPS + WARMUP batches, sampling_steps 0).
        decay_steps = max(1, round(module.sampling_fraction * (STEPS + WARMUP)))
        done = [0]

        def step():
            inputs, targets = batch["input"], batch["target"]
            probability = module.teacher_forcing * max(0.0, 1.0 - done[0] / decay_steps)
            done[0] += 1
            truth = torch.rand(len(targets), frames - 1) < probability
            loss = F.mse_loss(network(inputs, frames, targets, truth).float(), targets)
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

        return step

    return overhead_ratio(_make_module, make_plain_step, batch, steps=STEPS, warmup=WARMUP, rounds=7)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--ckpt", help="checkpoint of configs/sequence/embedded.yaml (default: train one now)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        model, cost = trained_and_validated(CONFIG, args.ckpt, Path(workdir))
    cli = cli_main(["--config", CONFIG, "--trainer.logger=false"], run=False)
    module, datamodule = cli.model.eval(), cli.datamodule
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    pipeline = pipeline_samples_per_second(datamodule.train_dataloader(), 30)
    clip = datamodule.val_set[0]["input"].unsqueeze(0)
    predict = per_second(lambda: module.forecast(clip, module.output_frames), 1)
    rows = job_rows(cost)
    rows.append(("held-out clips (2 digits, 64x64, 10 -> 10, closed loop)", f"{len(datamodule.val_set)}"))
    for name in METRIC_NAMES:
        rows.append((f"{name} per frame (model / repeat last frame)",
                     f"{model[f'val/{name}']:.4g} / {model[f'val/repeat_last_{name}']:.4g}"))
    overhead = _overhead(batch)
    peak_memory = training_peak_rss_mib(CONFIG, [SCHEDULE_LENGTH])
    rows += [
        ("Lightning step / plain PyTorch step (target <= 1.05)", f"{overhead['ratio']:.3f}"),
        (f"step time Lightning / plain (batch {len(batch['input'])} clips)",
         f"{overhead['lightning_s'] * 1e3:.0f} / {overhead['plain_s'] * 1e3:.0f} ms"),
        ("peak memory while training (process RSS)", f"{peak_memory:.0f} MiB"),
        ("data pipeline throughput", f"{pipeline:.0f} clips/s"),
        (f"predict throughput ({module.output_frames} frames, closed loop)", f"{predict:.1f} clips/s"),
    ]
    print(f"\n| sequence (torch {torch.__version__}, {torch.get_num_threads()} threads) | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\n| frame | MSE model / repeat last | MAE model / repeat last | PSNR model / repeat last | SSIM model / repeat last |")
    print("|---|---|---|---|---|")
    for k in range(1, module.output_frames + 1):
        cells = [f"{model[f'val/{n}_frame{k:02d}']:.4g} / {model[f'val/repeat_last_{n}_frame{k:02d}']:.4g}"
                 for n in METRIC_NAMES]
        print(f"| {k} | " + " | ".join(cells) + " |")
    write_summary(
        args.summary, task="video prediction", config="configs/sequence/embedded.yaml",
        quality=f"MSE/frame {model['val/mse']:.1f} vs repeat last frame {model['val/repeat_last_mse']:.1f}, "
                f"SSIM {model['val/ssim']:.3f} vs {model['val/repeat_last_ssim']:.3f}",
        step_ratio=overhead["ratio"], train_samples_per_s=len(batch["input"]) / overhead["lightning_s"],
        pipeline_samples_per_s=pipeline, peak_memory_mib=peak_memory, predict=f"{predict:.1f} clips/s (10 frames)",
    )


if __name__ == "__main__":
    main()
