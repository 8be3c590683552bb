"""Image-to-image translation benchmark: the embedded pix2pix against its parameter-free baseline,
Lightning overhead.

    python -m benchmarks.translation                   # trains configs/translation/embedded.yaml first
    python -m benchmarks.translation --ckpt last.ckpt  # evaluates an existing embedded-config checkpoint

Prints a markdown table. Quality is measured on the embedded validation set of the config: the 3
held-out photos, whole, short side 192, each underexposed three stops with noise fixed per photo
(the mapping of the embedded default: dark noisy exposure -> photo), as PSNR / SSIM (8-bit RGB,
whole image) of the output against the photo. The baseline is the input amplified by the exposure
ratio, parameter-free. The step ratio compares the Lightning training step (D step + G step) with
a plain PyTorch loop doing the same work with the module's own optimizers, schedulers and losses.
CPU cost is reported as process CPU time (all threads) next to wall time, since wall time on a
shared machine depends on the other jobs.
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
from lightning_modules.translation import signed
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "translation" / "embedded.yaml")


def _make_module():
    return cli_main(["--config", CONFIG, "--trainer.logger=false"], run=False).model


def _overhead(batch: dict) -> dict[str, float]:
    def make_plain_step():
        module = _make_module()
        generator, discriminator = module.generator, module.discriminator
        # The module's own optimizers, schedulers, losses and weights, as the config sets them.
        opt_g = module.generator_optimizer(generator.parameters())
        opt_d = module.discriminator_optimizer(discriminator.parameters())
        schedulers = [module.generator_scheduler(opt_g), module.discriminator_scheduler(opt_d)]
        d_loss, g_loss = module.discriminator_loss, module.generator_loss

        def step():
            source, target = signed(batch["input"]), signed(batch["target"])
            fake = generator(source)
            real_pair, fake_pair = torch.cat([source, target], 1), torch.cat([source, fake.detach()], 1)
            loss_d = d_loss(discriminator(real_pair), discriminator(fake_pair))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            schedulers[1].step()
            discriminator.requires_grad_(False)
            loss_g = (module.adversarial_weight * g_loss(discriminator(torch.cat([source, fake], 1)))
                      + module.l1_weight * F.l1_loss(fake, target))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            schedulers[0].step()
            discriminator.requires_grad_(True)

        return step

    return overhead_ratio(_make_module, make_plain_step, batch, steps=30, rounds=7)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--ckpt", help="checkpoint of configs/translation/embedded.yaml (default: train one now)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        model, cost = trained_and_validated(CONFIG, args.ckpt, Path(workdir))
    cli = cli_main(["--config", CONFIG, "--trainer.logger=false"], run=False)
    module, datamodule = cli.model.eval(), cli.datamodule
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    pipeline = pipeline_samples_per_second(datamodule.train_dataloader(), 30)
    photo = datamodule.val_set[0]["input"].unsqueeze(0)
    predict = per_second(lambda: module.translate(photo), 1)
    rows = job_rows(cost)
    rows += [
        ("held-out photos (whole, short side 192, 3 stops under + noise)", f"{len(datamodule.val_set)}"),
        ("PSNR (model / amplified input; target: model above)",
         f"{model['val/psnr']:.2f} / {model['val/baseline_psnr']:.2f} dB"),
        ("SSIM (model / amplified input; target: model above)",
         f"{model['val/ssim']:.4f} / {model['val/baseline_ssim']:.4f}"),
    ]
    overhead = _overhead(batch)
    peak_memory = training_peak_rss_mib(CONFIG)
    size = f"{photo.shape[-2]}x{photo.shape[-1]}"
    rows += [
        ("Lightning step / plain PyTorch step (target <= 1.05)", f"{overhead['ratio']:.3f}"),
        (f"step time Lightning / plain (D + G step, batch {len(batch['input'])} x {batch['input'].shape[-1]}px)",
         f"{overhead['lightning_s'] * 1e3:.0f} / {overhead['plain_s'] * 1e3:.0f} ms"),
        ("peak memory while training (process RSS)", f"{peak_memory:.0f} MiB"),
        ("data pipeline throughput", f"{pipeline:.0f} crops/s"),
        (f"predict throughput (generator, {size} photo)", f"{predict:.1f} images/s"),
    ]
    print(f"\n| translation (torch {torch.__version__}, {torch.get_num_threads()} threads) | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    write_summary(
        args.summary, task="image-to-image translation", config="configs/translation/embedded.yaml",
        quality=f"PSNR {model['val/psnr']:.2f} / SSIM {model['val/ssim']:.3f} vs amplified input "
                f"{model['val/baseline_psnr']:.2f} / {model['val/baseline_ssim']:.3f}",
        step_ratio=overhead["ratio"], train_samples_per_s=len(batch["input"]) / overhead["lightning_s"],
        pipeline_samples_per_s=pipeline, peak_memory_mib=peak_memory, predict=f"{predict:.1f} images/s ({size})",
    )


if __name__ == "__main__":
    main()
