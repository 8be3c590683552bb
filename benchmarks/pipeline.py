"""Data pipeline vs model, every task: ``python -m benchmarks.pipeline``.

For each embedded-default config, with its own batch size and worker count, prints one markdown
row: training samples/s the DataLoader alone delivers (decode, crops, augmentation, masks,
collate; the first batch, which includes worker start-up and cached decoding, not counted), the
samples/s one Lightning training step consumes (the module on one batch held in memory), and
their ratio. The target is a ratio of at least 5: the model never waits for data.

The ESRGAN row times the GAN stage from a randomly initialised generator
(``pretrained_generator=null``), which costs the same per step as the PSNR-stage checkpoint.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from benchmarks.common import batch_length, pipeline_samples_per_second
from benchmarks.overhead import lightning_step_seconds
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "super-resolution": ("configs/sr/default.yaml", []),
    "ESRGAN GAN stage": ("configs/sr/esrgan_embedded.yaml", ["--model.init_args.pretrained_generator=null"]),
    "GAN": ("configs/gan/digits.yaml", []),
    "VAE": ("configs/vae/digits.yaml", []),
    "inpainting": ("configs/inpainting/embedded.yaml", []),
    "segmentation": ("configs/segmentation/embedded.yaml", []),
}


def measure(config: str, overrides: list[str], batches: int, steps: int) -> dict[str, float]:
    cli = cli_main(["--config", str(ROOT / config), *overrides], run=False)
    cli.datamodule.setup("fit")
    loader = cli.datamodule.train_dataloader()
    pipeline = pipeline_samples_per_second(loader, batches)
    batch = next(iter(loader))
    step = lightning_step_seconds(cli.model, batch, steps=steps, warmup=2)
    size = batch_length(batch)
    return {"batch": size, "workers": loader.num_workers, "pipeline": pipeline, "model": size / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help=f"any of: {', '.join(CONFIGS)} (default: all)")
    parser.add_argument("--batches", type=int, default=30, help="batches timed per DataLoader")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed per model")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    for task in args.tasks or CONFIGS:
        config, overrides = CONFIGS[task]
        rows.append((task, config, measure(config, overrides, args.batches, args.steps)))
    print(f"\n{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| task (config) | batch / workers | data pipeline samples/s | training consumes samples/s | ratio (target >= 5) |")
    print("|---|---|---|---|---|")
    for task, config, m in rows:
        print(f"| {task} (`{config}`) | {m['batch']} / {m['workers']} | {m['pipeline']:.0f} | {m['model']:.1f} "
              f"| {m['pipeline'] / m['model']:.0f}x |")


if __name__ == "__main__":
    main()
