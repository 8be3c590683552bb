"""Super-resolution benchmark: quality at the demo budget, Lightning overhead, throughput.

    python -m benchmarks.sr                 # trains configs/sr/default.yaml first (its budget.minutes)
    python -m benchmarks.sr --ckpt last.ckpt  # evaluates an existing default-config checkpoint

Prints a markdown table. Quality = PSNR-Y (x4, 4-px border) of the model minus bicubic on the
embedded validation photos. Predict throughput in fp32 and under bf16 autocast (what
``--trainer.precision=bf16-mixed`` does in ``predict``), with how far the bf16 PNG is from the
fp32 one. Predict memory: the peak resident memory that one upscale adds, each in a fresh process
(whole image vs tiles, 512x512 and 2048x2048 inputs).
"""

from __future__ import annotations

import math
import multiprocessing
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    argument_parser,
    medians, peak_rss_mib, per_second, pipeline_samples_per_second, reset_peak_rss, seconds_per_call, timed_fit,
    training_peak_rss_mib, validated, write_summary,
)
from benchmarks.export import exported_throughput
from benchmarks.overhead import overhead_ratio
from lightning_modules.budget import TimeBudget
from lightning_modules.callbacks import NetworkOptions
from lightning_modules.tiling import tiled_forward
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "sr" / "default.yaml")


def _quality(ckpt: str | None, workdir: Path) -> tuple[dict[str, float], str | None, str]:
    """Validation metrics of the default config (training it first when no checkpoint is given),
    a line on the training run (wall time, precision, steps and why) and the checkpoint."""
    job = None
    if ckpt is None:
        cli, ckpt, (wall, _) = timed_fit(CONFIG, workdir)
        minutes = wall / 60
        budget = next(c for c in cli.trainer.callbacks if isinstance(c, TimeBudget))
        plan = budget.plan or {}
        job = (f"{minutes:.1f} min for fit (budget.minutes={budget.minutes:g}), {cli.trainer.precision}, "
               f"{cli.trainer.global_step} steps (first plan {plan.get('first_batches')} at "
               f"{plan.get('first_ms_per_batch', 0):.0f} ms/step, last {plan.get('batches')} at {plan.get('ms_per_batch', 0):.0f} ms)")
    return validated(CONFIG, workdir, "--ckpt_path", ckpt), job, ckpt


def _module_and_batch():
    cli = cli_main(["--config", CONFIG, "--trainer.logger=false"], run=False)
    datamodule = cli.datamodule
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    return cli, batch


def _plain_step(module, batch: dict):
    """One plain PyTorch training step of the module's generator, with its loss and optimizer, on ``batch``."""
    generator = module.generator
    optimizer = module.optimizer(generator.parameters())

    def step():
        loss = module.pixel_loss(generator(batch["lr"]), batch["hr"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _module(channels_last: bool):
    """The default config's module, its networks in the memory format ``--network_options`` sets."""
    module = cli_main(["--config", CONFIG, "--trainer.logger=false"], run=False).model
    NetworkOptions(channels_last=channels_last).setup(None, module, "fit")
    return module


def _overhead(batch: dict, channels_last: bool) -> dict[str, float]:
    return overhead_ratio(
        lambda: _module(channels_last), lambda: _plain_step(_module(channels_last), batch), batch
    )


def _channels_last_speedup(batch: dict, rounds: int = 3) -> float:
    """Plain training step time with contiguous (NCHW) over channels_last (NHWC) weights, alternating rounds."""

    def step_seconds(channels_last: bool) -> float:
        return seconds_per_call(_plain_step(_module(channels_last), batch), calls=10, warmup=2)

    contiguous, channels_last = medians(rounds, lambda: step_seconds(False), lambda: step_seconds(True))
    return float(contiguous / channels_last)


def predict_throughput(model, tile: int, bf16: bool = False, lr_size: int = 128) -> float:
    """Output megapixels per second upscaling one lr_size x lr_size image (bf16: under autocast,
    as ``--trainer.precision=bf16-mixed`` runs predict)."""
    model.tile_size, model.tile_overlap = tile, 16
    image = torch.rand(1, 3, lr_size, lr_size)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return per_second(lambda: model.upscale(image), (lr_size * model.scale) ** 2 / 1e6)


def _bf16_fidelity(model, lr: torch.Tensor) -> float:
    """PSNR (8-bit RGB, dB) of the bf16-autocast upscale of ``lr`` against the fp32 one."""
    model.tile_size = 0
    reference = model.upscale(lr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.upscale(lr)
    mse = (reference.mul(255).round() - bf16.mul(255).round()).pow(2).mean().item()  # as PNGs store them
    return 10 * math.log10(255**2 / mse) if mse > 0 else math.inf


def _upscale_peak_memory(generator, scale: int, lr_size: int, tile: int, results) -> None:
    """In a fresh process: peak resident memory (MiB) added by upscaling one lr_size^2 image on CPU."""
    torch.set_num_threads(1)
    image = torch.rand(1, 3, lr_size, lr_size)
    reset_peak_rss()
    before = peak_rss_mib()
    with torch.no_grad():
        output = tiled_forward(generator, image, scale, tile, 16)
    results.put((peak_rss_mib() - before, output.numel() * output.element_size() / 2**20))


def _predict_memory(generator, scale: int, lr_size: int, tile: int) -> str:
    """Peak memory of one upscale, and how much of it is the output tensor itself."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_upscale_peak_memory, args=(generator.eval(), scale, lr_size, tile, results))
    process.start()
    added, output = results.get()
    process.join()
    return f"{added:.0f} MiB (output tensor {output:.0f} MiB, rest {added - output:.0f} MiB)"


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--ckpt", help="checkpoint of configs/sr/default.yaml (default: train one now)")
    parser.add_argument("--workdir", help="keep the training run here instead of in a temporary folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        metrics, job, ckpt = _quality(args.ckpt, Path(args.workdir or temporary))
        trained = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    cli, batch = _module_and_batch()
    channels_last = cli.config.network_options.channels_last
    overhead = _overhead(batch, channels_last)
    channels_last_speedup = _channels_last_speedup(batch)
    peak_memory = training_peak_rss_mib(CONFIG)
    model = cli.model.eval()
    model.load_state_dict(trained)  # the trained weights: bf16 fidelity depends on them
    NetworkOptions(channels_last=channels_last).setup(None, model, "predict")  # as in a predict run
    gain = metrics["val/psnr_y"] - metrics["val/bicubic_psnr_y"]
    pipeline = pipeline_samples_per_second(cli.datamodule.train_dataloader(), 20)
    predict = {tile: predict_throughput(model, tile) for tile in (0, 64)}
    predict_bf16 = predict_throughput(model, 0, bf16=True)
    exported = exported_throughput(model)
    cli.datamodule.setup("validate")
    fidelity = _bf16_fidelity(model, cli.datamodule.val_set[0]["lr"][None])
    rows = [
        ("PSNR-Y model (embedded val, x4)", f"{metrics['val/psnr_y']:.2f} dB"),
        ("PSNR-Y bicubic", f"{metrics['val/bicubic_psnr_y']:.2f} dB"),
        ("PSNR-Y gain over bicubic", f"{gain:+.2f} dB"),
        ("SSIM-Y model / bicubic", f"{metrics['val/ssim_y']:.4f} / {metrics['val/bicubic_ssim_y']:.4f}"),
        ("PSNR-RGB model / bicubic", f"{metrics['val/psnr_rgb']:.2f} / {metrics['val/bicubic_psnr_rgb']:.2f} dB"),
        ("Lightning step / plain PyTorch step (target <= 1.05)", f"{overhead['ratio']:.3f}"),
        ("step time Lightning / plain", f"{overhead['lightning_s'] * 1e3:.1f} / {overhead['plain_s'] * 1e3:.1f} ms"),
        ("training throughput", f"{len(batch['hr']) / overhead['lightning_s']:.1f} HR patches/s"),
        ("memory format of the config's weights", "channels_last" if channels_last else "contiguous"),
        ("training step, contiguous / channels_last time", f"{channels_last_speedup:.2f}x"),
        ("peak memory while training (process RSS)", f"{peak_memory:.0f} MiB"),
        ("data pipeline throughput", f"{pipeline:.0f} HR patches/s"),
        ("predict throughput, whole image", f"{predict[0]:.3f} MP/s"),
        ("predict throughput, tiles of 64", f"{predict[64]:.3f} MP/s"),
        ("predict throughput, whole image, bf16 autocast", f"{predict_bf16:.3f} MP/s ({predict_bf16 / predict[0]:.2f}x fp32)"),
        ("bf16 vs fp32 output (8-bit PSNR, first val photo)", f"{fidelity:.1f} dB"),
        ("predict throughput, exported: ONNX Runtime / TorchScript / PyTorch (128x128 LR)",
         f"{exported['onnxruntime']:.3f} / {exported['torchscript']:.3f} / {exported['pytorch']:.3f} MP/s"),
    ]
    generator, scale = model.generator, model.scale
    for lr_size, tile in ((512, 0), (512, 128), (2048, 128)):
        how = "whole image" if tile == 0 else f"tiles of {tile}"
        rows.append((f"predict peak memory, {lr_size}x{lr_size} input, {how}", _predict_memory(generator, scale, lr_size, tile)))
    if job is not None:
        rows.insert(0, ("default job (fit incl. validation)", job))
    print(f"\n| super-resolution (torch {torch.__version__}, {torch.get_num_threads()} threads) | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    write_summary(
        args.summary, task="super-resolution (PSNR stage)", config="configs/sr/default.yaml", checkpoint=ckpt,
        quality=f"PSNR-Y {gain:+.2f} dB over bicubic ({metrics['val/psnr_y']:.2f} vs {metrics['val/bicubic_psnr_y']:.2f})",
        step_ratio=overhead["ratio"], train_samples_per_s=len(batch["hr"]) / overhead["lightning_s"],
        pipeline_samples_per_s=pipeline, peak_memory_mib=peak_memory,
        predict=f"{predict[0]:.2f} MP/s ({predict_bf16:.2f} bf16, {exported['onnxruntime']:.2f} ONNX Runtime)",
    )


if __name__ == "__main__":
    main()
