"""GAN on digits: FID of the default config after its CPU budget, as a markdown table.

    python -m benchmarks.gan --fid-features ../shared/fid/inception-2015-12-05-features.pt
    python -m benchmarks.gan --fid-features FILE --ckpt runs/gan_digits/version_0/checkpoints/last.ckpt

Without ``--ckpt`` it first trains ``--config`` with the CLI (the same command a user runs).
Then it reports the FID of ``--fid-samples`` seeded samples of the EMA generator (and of the
raw generator) against as many held-out digits (the validation split, never trained on), next
to the floor that the sample count allows: the FID of the training digits against the same
held-out digits. Without ``--fid-features`` the standard Inception is downloaded. Last, the
time per training step (one discriminator + one generator step) in Lightning relative to a
plain PyTorch loop doing the same work on the same batch.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision

from benchmarks.common import (
    argument_parser,
    build, per_second, pipeline_samples_per_second, timed_fit, training_peak_rss_mib, write_summary,
)
from benchmarks.overhead import overhead_ratio
from datamodules.generation import GenerationDataModule
from lightning_modules.fid import GenerativeMetrics
from lightning_modules.gan import GANModule
from lightning_modules.gan_losses import LOSSES

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def fids(model: GANModule, data: GenerationDataModule, features: str, n: int, grid: str | None) -> dict[str, float]:
    """FID against ``n`` held-out digits of: EMA samples, raw samples, the training digits."""
    model.eval()
    held_out = torch.stack([data.val_set[i]["image"] for i in range(min(n, len(data.val_set)))])
    training = torch.stack([data.train_set[i]["image"] for i in range(min(n, len(data.train_set)))])
    latents = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(0))
    metrics = GenerativeMetrics(features, num_samples=n)
    metrics.add(held_out, real=True)
    results = {"held_out": len(held_out), "training": len(training)}
    for name, images in (
        ("ema", model.sample(latents)),
        ("raw", model.sample(latents, raw=True)),
        ("floor", training),
    ):
        if name == "ema" and grid:
            torchvision.utils.save_image(images[:64].add(1).div(2), grid, nrow=8, padding=2)
        results[name] = float(metrics.score(images)["fid"])
    return results


def step_overhead(config: str, data: GenerationDataModule, rounds: int, steps: int) -> dict[str, float]:
    batch = next(iter(data.train_dataloader()))

    def make_module() -> GANModule:
        return build(config)[0]

    def make_plain_step():
        """One discriminator and one generator step as a hand-written PyTorch loop would do them."""
        model = make_module()
        generator, discriminator, ema = model.generator, model.discriminator, model.generator_ema
        opt_g = model.generator_optimizer(generator.parameters())
        opt_d = model.discriminator_optimizer(discriminator.parameters())
        schedulers = [
            make(optimizer) for make, optimizer in ((model.generator_scheduler, opt_g), (model.discriminator_scheduler, opt_d))
            if make is not None
        ]
        d_loss_fn, g_loss_fn = LOSSES[model.loss_name]
        real = batch["image"]
        ema.update_parameters(generator)

        def step() -> None:
            fake = generator(torch.randn(real.shape[0], model.latent_dim))
            d_loss = d_loss_fn(discriminator(real), discriminator(fake.detach()))
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            discriminator.requires_grad_(False)
            g_loss = g_loss_fn(discriminator(fake))
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            discriminator.requires_grad_(True)
            for scheduler in schedulers:  # the config's per-step schedules
                scheduler.step()
            ema.update_parameters(generator)

        return step

    return overhead_ratio(make_module, make_plain_step, batch, steps=steps, rounds=rounds)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--fid-features", default="inception", help="TorchScript file: uint8 (N,3,H,W) -> (N,D) features")
    parser.add_argument("--config", default=str(ROOT / "configs/gan/digits.yaml"))
    parser.add_argument("--ckpt", help="evaluate this checkpoint instead of training --config first")
    parser.add_argument("--workdir", help="keep the training run (logs, checkpoints) here instead of a temporary folder")
    parser.add_argument("--fid-samples", type=int, default=1000)
    parser.add_argument("--grid", help="also write 64 EMA samples to this PNG file")
    parser.add_argument("--timing-steps", type=int, default=30)
    parser.add_argument("--timing-rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    train_seconds = train_cpu_seconds = None
    with tempfile.TemporaryDirectory() as temporary:
        ckpt = args.ckpt
        if ckpt is None:
            _, ckpt, (train_seconds, train_cpu_seconds) = timed_fit(args.config, args.workdir or temporary)
        model, data = build(args.config, ckpt)
    data.setup("fit")
    start = time.perf_counter()
    fid = fids(model, data, args.fid_features, args.fid_samples, args.grid)
    fid_seconds = time.perf_counter() - start
    timing = step_overhead(args.config, data, args.timing_rounds, args.timing_steps)
    peak_memory = training_peak_rss_mib(args.config)
    pipeline = pipeline_samples_per_second(data.train_dataloader(), 30)
    latents = torch.randn(64, model.latent_dim)
    with torch.no_grad():
        sampling = per_second(lambda: model.sample(latents), len(latents))

    n = args.fid_samples
    print(f"\nGAN on digits ({Path(args.config).name}), CPU threads: {torch.get_num_threads()}\n")
    print("| measure | value |")
    print("|---|---|")
    if train_seconds is not None:
        print(f"| training wall time (fit, incl. start-up) | {train_seconds / 60:.1f} min |")
        print(f"| training CPU time (all threads) | {train_cpu_seconds / 60:.1f} core-min |")
    print(f"| FID, EMA generator: {n} samples vs {fid['held_out']} held-out digits | {fid['ema']:.2f} |")
    print(f"| FID, raw generator: {n} samples vs {fid['held_out']} held-out digits | {fid['raw']:.2f} |")
    print(f"| FID floor: {fid['training']} training digits vs the same held-out digits | {fid['floor']:.2f} |")
    print(f"| EMA FID / floor (target <= 3) | {fid['ema'] / fid['floor']:.2f} |")
    print(f"| step time, Lightning (D + G step) | {timing['lightning_s'] * 1000:.1f} ms |")
    print(f"| step time, plain PyTorch loop | {timing['plain_s'] * 1000:.1f} ms |")
    print(f"| Lightning / plain (target <= 1.05) | {timing['ratio']:.3f} |")
    print(f"| peak memory while training (process RSS) | {peak_memory:.0f} MiB |")
    print(f"| data pipeline throughput | {pipeline:.0f} images/s |")
    print(f"| sampling throughput (EMA generator, batch 64) | {sampling:.0f} images/s |")
    print(f"\nFID features: {args.fid_features}; FID evaluation took {fid_seconds / 60:.1f} min.")
    write_summary(
        args.summary, task="GAN", config=str(Path(args.config).relative_to(ROOT)),
        quality=f"FID {fid['ema']:.1f} vs floor {fid['floor']:.1f} ({fid['ema'] / fid['floor']:.2f}x), {n} samples",
        step_ratio=timing["ratio"], train_samples_per_s=data.batch_size / timing["lightning_s"], pipeline_samples_per_s=pipeline,
        peak_memory_mib=peak_memory, predict=f"{sampling:.0f} images/s",
    )


if __name__ == "__main__":
    main()
