"""VAE on digits: the default config's result after its CPU budget, as a markdown table.

    python -m benchmarks.vae --fid-features ../shared/fid/inception-2015-12-05-features.pt
    python -m benchmarks.vae --fid-features FILE --ckpt runs/vae_digits/version_0/checkpoints/last.ckpt

Without ``--ckpt`` it first trains ``--config`` with the CLI (the same command a user runs).
Then it reports, on the 297 held-out digits, the ELBO (nats per image) and the PSNR/SSIM of
posterior-mean reconstructions; the FID of ``--fid-samples`` prior samples against as many
training digits (TorchScript feature file, e.g. the TF-Inception one, so the figures compare
with the GAN's); with ``--fid-floor``, the FID between two disjoint sets of real digits, the
floor that the sample count allows; and the time per training step in Lightning relative to a plain
PyTorch loop running the same model, loss, data and optimizer.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from benchmarks.common import (
    argument_parser,
    build, clock, medians, per_second, pipeline_samples_per_second, timed_fit, training_peak_rss_mib, write_summary,
)
from benchmarks.overhead import lightning_step_clock
from datamodules.generation import GenerationDataModule
from lightning_modules.fid import GenerativeMetrics
from lightning_modules.vae import VAEModule

ROOT = Path(__file__).resolve().parents[1]


def held_out_scores(model: VAEModule, data: GenerationDataModule) -> dict[str, float]:
    """The module's own test metrics (ELBO, PSNR, SSIM, ...) on the held-out digits."""
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(model, dataloaders=data.val_dataloader(), verbose=False)[0]
    return {key.removeprefix("test/"): value for key, value in results.items()}


@torch.no_grad()
def sample_fid(model: VAEModule, data: GenerationDataModule, features: str, n: int, floor: bool) -> tuple[float, float | None]:
    """FID of n prior samples vs n training digits; with ``floor``, also FID of the other real digits vs the same n."""
    model.eval()
    train_images = torch.stack([data.train_set[i]["image"] for i in range(len(data.train_set))])
    metrics = GenerativeMetrics(features, num_samples=n)
    metrics.add(train_images[:n], real=True)
    generator = torch.Generator().manual_seed(0)
    samples = torch.cat([model.sample(min(100, n - start), generator) for start in range(0, n, 100)])
    model_fid = float(metrics.score(samples)["fid"])
    if not floor:
        return model_fid, None
    others = torch.cat([train_images[n:], torch.stack([item["image"] for item in data.val_set])])[:n]
    return model_fid, float(metrics.score(others)["fid"])


def plain_step_time(config: str, loader: DataLoader, warmup: int, steps: int) -> np.ndarray:
    """(wall, CPU) seconds per step of the same model, loss, optimizer and batches in a plain loop."""
    model, _ = build(config)
    model.train()
    optimizer = model.configure_optimizers()
    step, start = 0, clock()
    while step < warmup + steps:
        for batch in loader:
            if step == warmup:
                start = clock()
            recon_nll, kl, _ = model.elbo_terms(batch["image"])
            loss = (recon_nll + model.beta * kl).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == warmup + steps:
                break
    return (clock() - start) / steps


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--fid-features", help="TorchScript file: uint8 (N,3,H,W) -> (N,D) features; no FID without it")
    parser.add_argument("--config", default=str(ROOT / "configs/vae/digits.yaml"))
    parser.add_argument("--ckpt", help="evaluate this checkpoint instead of training --config first")
    parser.add_argument("--save-dir", default="runs/benchmark", help="where the training run (and its checkpoint) goes")
    parser.add_argument("--fid-samples", type=int, default=1000)
    parser.add_argument("--fid-floor", action="store_true", help="also the FID between two disjoint sets of real digits")
    parser.add_argument("--timing-steps", type=int, default=40)
    parser.add_argument("--timing-repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    ckpt, train_seconds = args.ckpt, None
    if ckpt is None:
        _, ckpt, (train_seconds, _) = timed_fit(args.config, args.save_dir)
    model, data = build(args.config, ckpt)
    data.setup("fit")
    scores = held_out_scores(model, data)
    start = time.perf_counter()
    model_fid, real_fid = None, None
    if args.fid_features:
        model_fid, real_fid = sample_fid(model, data, args.fid_features, args.fid_samples, args.fid_floor)
    fid_seconds = time.perf_counter() - start

    loader = data.train_dataloader()
    pipeline = pipeline_samples_per_second(loader, 30)
    with torch.no_grad():
        sampling = per_second(lambda: model.sample(64), 64)
    plain, lightning = medians(
        args.timing_repeats,
        lambda: plain_step_time(args.config, loader, 5, args.timing_steps),
        lambda: lightning_step_clock(build(args.config)[0], loader, 5, args.timing_steps),
    )
    ratio = lightning / plain
    peak_memory = training_peak_rss_mib(args.config)

    n = args.fid_samples
    print(f"\nMachine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"config {Path(args.config).name}; checkpoint {ckpt}\n")
    print(f"| | train time | held-out ELBO (nats) | PSNR (dB) | SSIM | FID ({n} vs {n} train digits) |")
    print("|---|---|---|---|---|---|")
    budget = f"{train_seconds / 60:.1f} min" if train_seconds else "-"
    print(f"| VAE, {Path(args.config).name} | {budget} | {scores['elbo']:.1f} | {scores['psnr']:.2f} | {scores['ssim']:.3f} | {'-' if model_fid is None else f'{model_fid:.2f}'} |")
    if real_fid is not None:
        others = min(n, len(data.train_set) + len(data.val_set) - n)
        print(f"| real digits ({others} held-out vs the {n}) | | | | | {real_fid:.2f} |")
    fid_time = f"FID time: {fid_seconds:.0f} s. " if model_fid is not None else ""
    print(f"\n{fid_time}Step time (median of {args.timing_repeats} alternating rounds x {args.timing_steps} steps, "
          f"batch {data.batch_size}), Lightning / plain PyTorch: CPU time {lightning[1] * 1e3:.1f} / {plain[1] * 1e3:.1f} ms "
          f"= {ratio[1]:.3f}; wall time {lightning[0] * 1e3:.1f} / {plain[0] * 1e3:.1f} ms = {ratio[0]:.3f}")
    print(f"Peak memory while training (process RSS): {peak_memory:.0f} MiB; data pipeline {pipeline:.0f} images/s; "
          f"sampling {sampling:.0f} images/s (batch 64).")
    quality = f"held-out ELBO {scores['elbo']:.1f} nats, recon. PSNR {scores['psnr']:.2f}"
    if model_fid is not None:
        quality += f", FID {model_fid:.1f}" + (f" (real-vs-real {real_fid:.1f})" if real_fid is not None else "")
    write_summary(
        args.summary, task="VAE", config=str(Path(args.config).relative_to(ROOT)), quality=quality,
        step_ratio=float(ratio[0]), train_samples_per_s=data.batch_size / float(lightning[0]),
        pipeline_samples_per_s=pipeline, peak_memory_mib=peak_memory, predict=f"{sampling:.0f} images/s",
    )


if __name__ == "__main__":
    main()
