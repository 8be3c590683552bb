"""Real-ESRGAN degradations: what training on them buys on degraded photos, and what they cost.

    python -m benchmarks.realesrgan                       # trains both configs, seeds 0 and 1
    python -m benchmarks.realesrgan --default-ckpt A.ckpt --seeds 0 1 2

Quality: ``configs/sr/default.yaml`` (bicubic LR) and ``configs/sr/realesrnet_embedded.yaml``
(LR from the degradations) train the same network under the same wall-time budget (each config's
``budget.minutes``), once per seed; every model is then validated on both validation sets: the
fixed degraded one (the Real-ESRNet config's: 4 degradations per photo, the same seeds in every
run) and the bicubic one (the default config's), next to bicubic upscaling of the same LR. A
checkpoint given with ``--default-ckpt`` replaces the default's training runs.

Cost: images/s of the degradation pipeline alone, on HR batches already in memory, at 256x256
(batch 16, Real-ESRGAN's patch) and at the embedded config's patches, next to the HR patches/s
that the embedded config's training step consumes (plain step, under bf16 autocast where the
config's ``auto_bf16`` picks it) and that a step of Real-ESRGAN's own generator at 256x256 does.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import argument_parser, medians, seconds_per_call, timed_fit, validated
from benchmarks.sr import _plain_step
from datamodules.degradations import RealESRGANDegradation
from networks.rrdbnet import RRDBNet
from train import cli_main, native_bf16

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "sr" / "default.yaml")
REALESRNET = str(ROOT / "configs" / "sr" / "realesrnet_embedded.yaml")
SETS = {"degraded": REALESRNET, "bicubic": DEFAULT}


def scores(ckpt: str, workdir: Path) -> dict[str, dict[str, float]]:
    """Validation metrics of the generator in ``ckpt`` on each validation set."""
    return {name: validated(config, workdir, f"--model.init_args.pretrained_generator={ckpt}")
            for name, config in SETS.items()}


def pipeline_images_per_second(degradation: RealESRGANDegradation, size: int, batch: int, scale: int) -> float:
    """Degraded images/s for random HR batches of ``batch`` x 3 x ``size`` x ``size`` (new seeds
    every call, so that every draw of sizes and kinds is averaged over)."""
    hr, calls = torch.rand(batch, 3, size, size), iter(range(10**9))

    def degrade():
        first = next(calls) * batch
        degradation(hr, range(first, first + batch), scale)

    return batch / seconds_per_call(degrade, calls=15, warmup=2)


def step_images_per_second() -> tuple[float, int, bool]:
    """HR patches/s of the Real-ESRNet config's plain training step on one degraded batch, its
    patch size, and whether it ran under bf16 autocast."""
    cli = cli_main(["--config", REALESRNET, "--trainer.logger=false"], run=False)
    data = cli.datamodule
    data.setup("fit")
    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    bf16 = cli.config.auto_bf16 and native_bf16(cli.config.trainer)
    step = _plain_step(cli.model, batch)

    def autocast_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step()

    return len(batch["hr"]) / seconds_per_call(autocast_step, calls=10, warmup=2), data.hparams.patch_size, bf16


def reference_step_images_per_second(batch: int = 2) -> float:
    """HR patches/s of a plain fp32 training step of Real-ESRGAN's generator (RRDBNet 64/23/32,
    ``configs/sr/realesrnet_div2k.yaml``) on 256x256 HR patches, L1 and Adam."""
    generator = RRDBNet(num_feat=64, num_block=23, grow_ch=32)
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-4)
    lr, hr = torch.rand(batch, 3, 64, 64), torch.rand(batch, 3, 256, 256)

    def step():
        loss = F.l1_loss(generator(lr), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch / seconds_per_call(step, calls=3, warmup=1)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--default-ckpt", help="a checkpoint of configs/sr/default.yaml (default: train it per seed)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        runs: dict[str, list[dict]] = {"default (bicubic LR)": [], "Real-ESRNet (degraded LR)": []}
        for seed in args.seeds:
            for name, config in zip(runs, (DEFAULT, REALESRNET)):
                if config == DEFAULT and args.default_ckpt:
                    if not runs[name]:
                        runs[name].append({"steps": None, "wall_min": None, **scores(args.default_ckpt, workdir)})
                    continue
                cli, ckpt, (wall, _) = timed_fit(config, workdir, f"--seed_everything={seed}")
                runs[name].append({"steps": cli.trainer.global_step, "wall_min": wall / 60, **scores(ckpt, workdir)})
                row = runs[name][-1]
                print(f"seed {seed}, {name}: {row['steps']} steps, {row['wall_min']:.1f} min; PSNR-Y degraded "
                      f"{row['degraded']['val/psnr_y']:.2f}, bicubic {row['bicubic']['val/psnr_y']:.2f}", flush=True)

    degradation = cli_main(["--config", REALESRNET, "--trainer.logger=false"], run=False).datamodule.degradation
    step, patch, bf16 = step_images_per_second()
    reference = reference_step_images_per_second()
    pipeline = {size: medians(3, lambda: pipeline_images_per_second(degradation, size, batch, 4))[0]
                for size, batch in ((256, 16), (patch, 4))}

    print(f"\n| PSNR-Y / SSIM-Y (x4, embedded val photos), torch threads {torch.get_num_threads()} "
          "| on degraded LR (4 per photo) | on bicubic LR | steps (wall min) |")
    print("|---|---|---|---|")
    for name, rows in runs.items():
        cells = []
        for validation in SETS:
            psnrs = [r[validation]["val/psnr_y"] for r in rows]
            ssim = statistics.mean(r[validation]["val/ssim_y"] for r in rows)
            spread = f" ({min(psnrs):.2f} to {max(psnrs):.2f})" if len(rows) > 1 else ""
            cells.append(f"{statistics.mean(psnrs):.2f}{spread} / {ssim:.4f}")
        steps = ", ".join("given" if r["steps"] is None else f"{r['steps']} ({r['wall_min']:.1f})" for r in rows)
        print(f"| {name}, {len(rows)} run(s) | {' | '.join(cells)} | {steps} |")
    first = next(iter(runs.values()))[0]
    print("| bicubic | " + " | ".join(f"{first[v]['val/bicubic_psnr_y']:.2f} / {first[v]['val/bicubic_ssim_y']:.4f}"
                                       for v in SETS) + " | |")

    print("\n| degradation cost | value |\n|---|---|")
    print(f"| pipeline, 256x256 HR, batch 16 | {pipeline[256]:.1f} images/s |")
    print(f"| pipeline, {patch}x{patch} HR, batch 4 (the embedded config) | {pipeline[patch]:.1f} images/s |")
    print(f"| training step of the embedded config ({patch}x{patch} HR, {'bf16' if bf16 else 'fp32'}) "
          f"| {step:.1f} HR patches/s |")
    print(f"| pipeline / training step, at the embedded config's patches | {pipeline[patch] / step:.1f}x |")
    print(f"| training step of Real-ESRGAN's generator (RRDBNet 64/23/32, 256x256 HR, fp32) | {reference:.2f} HR patches/s |")
    print(f"| pipeline / training step, at 256x256 (configs/sr/realesrnet_div2k.yaml) | {pipeline[256] / reference:.0f}x |")


if __name__ == "__main__":
    main()
