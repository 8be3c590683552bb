"""Inpainting benchmark: the embedded model against biharmonic inpainting, Lightning overhead.

    python -m benchmarks.inpainting                   # trains configs/inpainting/embedded.yaml first
    python -m benchmarks.inpainting --ckpt last.ckpt  # evaluates an existing embedded-config checkpoint

Prints a markdown table. Quality is measured on the embedded validation set of the config: 4
fixed 128x128 crops of each validation photo with fixed LaMa "medium" masks (1 = hole), on the
composited outputs: PSNR / SSIM (8-bit RGB, whole crop) and masked L1 (hole MAE x 100 on [0, 1]).
The classical baseline is scikit-image's biharmonic inpainting on the same crops and masks; the
push-pull fill that the embedded generator starts from (``initial_fill: push_pull``) is reported
too, so that what training adds on top of it is visible.
CPU cost is reported as process CPU time (all threads) next to wall time, since wall time on a
shared machine depends on the other jobs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from skimage.restoration import inpaint_biharmonic

from benchmarks.common import (
    argument_parser,
    per_second, pipeline_samples_per_second, job_rows, trained_and_validated, training_peak_rss_mib, write_summary,
)
from benchmarks.overhead import overhead_ratio
from lightning_modules.gan_losses import hinge_d_loss, hinge_g_loss
from lightning_modules.inpainting import InpaintingMetrics, composite, masked_l1
from networks.inpainting import push_pull_fill
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "inpainting" / "embedded.yaml")


def biharmonic(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """scikit-image's biharmonic inpainting of a (3, H, W) image in [0, 1] with a (1, H, W) mask."""
    filled = inpaint_biharmonic(image.permute(1, 2, 0).double().numpy(), mask[0].bool().numpy(), channel_axis=-1)
    return torch.from_numpy(filled).permute(2, 0, 1).float().clamp(0, 1)


def _classical(val_set, method) -> tuple[dict[str, float], float]:
    """Metrics of a classical fill on every validation crop, and its CPU seconds per crop."""
    metrics = InpaintingMetrics()
    seconds = 0.0
    for index in range(len(val_set)):
        item = val_set[index]
        image, mask = item["image"].unsqueeze(0), item["mask"].unsqueeze(0)
        start = time.process_time()
        filled = method(image[0], mask[0]).unsqueeze(0)
        seconds += time.process_time() - start
        metrics.update(composite(filled, image, mask), image, mask)
    return {k: v.item() for k, v in metrics.compute().items()}, seconds / len(val_set)


def _setup():
    """The embedded config's module (untrained: same speed), datamodule and first training batch."""
    cli = cli_main(["--config", CONFIG, "--trainer.logger=false"], run=False)
    datamodule = cli.datamodule
    datamodule.setup("fit")
    return cli.model, datamodule, next(iter(datamodule.train_dataloader()))


def _overhead(batch: dict) -> dict[str, float]:
    def make_module():
        return cli_main(["--config", CONFIG, "--trainer.logger=false"], run=False).model

    def make_plain_step():
        module = make_module()
        generator, discriminator = module.generator, module.discriminator
        opt_g = module.generator_optimizer(generator.parameters())
        opt_d = module.discriminator_optimizer(discriminator.parameters())
        image, mask = batch["image"], batch["mask"]
        module.generator_ema.update_parameters(generator)

        def judge(images):
            return discriminator(torch.cat([composite(images, image, mask), mask], dim=1))

        def step():
            fake = generator(image, mask)
            discriminator.requires_grad_(True)
            d_loss = hinge_d_loss(judge(image), judge(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            discriminator.requires_grad_(False)
            g_loss = (
                module.adversarial_weight * hinge_g_loss(judge(fake))
                + module.hole_l1_weight * masked_l1(fake, image, mask)
                + module.valid_l1_weight * masked_l1(fake, image, 1 - mask)
            )
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            module.generator_ema.update_parameters(generator)

        return step

    return overhead_ratio(make_module, make_plain_step, batch, steps=10, warmup=2)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--ckpt", help="checkpoint of configs/inpainting/embedded.yaml (default: train one now)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        model, cost = trained_and_validated(CONFIG, args.ckpt, Path(workdir))
    module, datamodule, batch = _setup()
    pipeline = pipeline_samples_per_second(datamodule.train_dataloader(), 30)
    image, mask = batch["image"], batch["mask"]
    inpainting = per_second(lambda: module.inpaint(image, mask), len(image))
    datamodule.setup("validate")
    baseline, biharmonic_seconds = _classical(datamodule.val_set, biharmonic)
    pull, _ = _classical(datamodule.val_set, lambda image, mask: push_pull_fill(image[None], mask[None])[0])
    rows = job_rows(cost)
    rows += [
        ("validation crops (128x128, LaMa medium masks)", f"{len(datamodule.val_set)}"),
        ("masked L1, hole MAE x100 (model / biharmonic / push-pull; target: model below biharmonic)",
         f"{model['val/masked_l1']:.2f} / {baseline['masked_l1']:.2f} / {pull['masked_l1']:.2f}"),
        ("PSNR (model / biharmonic / push-pull)",
         f"{model['val/psnr']:.2f} / {baseline['psnr']:.2f} / {pull['psnr']:.2f} dB"),
        ("SSIM (model / biharmonic / push-pull)",
         f"{model['val/ssim']:.4f} / {baseline['ssim']:.4f} / {pull['ssim']:.4f}"),
        ("biharmonic CPU time per crop", f"{biharmonic_seconds:.2f} s"),
    ]
    overhead = _overhead(batch)
    peak_memory = training_peak_rss_mib(CONFIG)
    size = f"{image.shape[-2]}x{image.shape[-1]}"
    rows += [
        ("Lightning step / plain PyTorch step", f"{overhead['ratio']:.3f}"),
        (f"step time Lightning / plain (D + G step, batch {len(image)})",
         f"{overhead['lightning_s'] * 1e3:.0f} / {overhead['plain_s'] * 1e3:.0f} ms"),
        ("peak memory while training (process RSS)", f"{peak_memory:.0f} MiB"),
        ("data pipeline throughput", f"{pipeline:.0f} crops/s"),
        (f"predict throughput (EMA generator + composite, {size})", f"{inpainting:.1f} images/s"),
    ]
    print(f"\n| inpainting (torch {torch.__version__}, {torch.get_num_threads()} threads) | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    write_summary(
        args.summary, task="inpainting", config="configs/inpainting/embedded.yaml",
        quality=f"masked L1 {model['val/masked_l1']:.2f} vs biharmonic {baseline['masked_l1']:.2f} "
                f"(push-pull fill {pull['masked_l1']:.2f})",
        step_ratio=overhead["ratio"], train_samples_per_s=len(image) / overhead["lightning_s"], pipeline_samples_per_s=pipeline,
        peak_memory_mib=peak_memory, predict=f"{inpainting:.1f} images/s ({size})",
    )


if __name__ == "__main__":
    main()
