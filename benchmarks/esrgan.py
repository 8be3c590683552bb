"""ESRGAN GAN-stage benchmark: quality after the embedded budget, Lightning overhead, precision.

    python -m benchmarks.esrgan                          # trains the PSNR stage (configs/sr/default.yaml) first
    python -m benchmarks.esrgan --psnr-ckpt last.ckpt    # GAN stage from an existing PSNR-stage checkpoint
    python -m benchmarks.esrgan --psnr-ckpt A --gan-ckpt B  # evaluation only

On a machine shared with other jobs run it with ``OMP_NUM_THREADS=1``: process CPU time then
measures the work, while two spinning threads would inflate it.

Prints markdown tables:

* quality on the embedded validation photos (x4, Y channel with a 4-px border, and RGB) of
  bicubic, the PSNR-stage starting point, and the GAN stage (EMA and raw generator) after the
  budget of ``configs/sr/esrgan_embedded.yaml``, with its wall and process CPU time;
* the Lightning GAN-stage step (D step + G step + EMA update) against a plain PyTorch loop doing
  the same work on the same batch (``benchmarks/overhead.py``);
* on a GPU only: training throughput with ``trainer.precision`` 32-true / bf16-mixed and
  ``network_options.channels_last``, at the DIV2K config's network sizes (random weights, VGG
  included, for timing only).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from benchmarks.common import argument_parser, pipeline_samples_per_second, timed_fit, training_peak_rss_mib, validated, write_summary
from benchmarks.overhead import RepeatBatch, overhead_ratio
from benchmarks.sr import predict_throughput
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
PSNR_CONFIG = str(ROOT / "configs" / "sr" / "default.yaml")
GAN_CONFIG = str(ROOT / "configs" / "sr" / "esrgan_embedded.yaml")
DIV2K_CONFIG = str(ROOT / "configs" / "sr" / "esrgan_div2k.yaml")


def _quality(psnr_ckpt: str | None, gan_ckpt: str | None, workdir: Path) -> tuple[list[tuple[str, str]], dict, dict]:
    timings = []
    if psnr_ckpt is None:
        _, psnr_ckpt, seconds = timed_fit(PSNR_CONFIG, workdir)
        timings.append(("PSNR stage (configs/sr/default.yaml) fit", _minutes(*seconds)))
    pretrained = f"--model.init_args.pretrained_generator={psnr_ckpt}"
    # No checkpoint: validation of the PSNR-stage weights just loaded (generator and EMA alike).
    start = validated(GAN_CONFIG, workdir, pretrained)
    if gan_ckpt is None:
        _, gan_ckpt, seconds = timed_fit(GAN_CONFIG, workdir, pretrained)
        timings.append(("GAN stage (configs/sr/esrgan_embedded.yaml) fit", _minutes(*seconds)))
    gan = validated(GAN_CONFIG, workdir, pretrained, "--ckpt_path", str(gan_ckpt))
    return timings, start, gan


def _minutes(wall: float, cpu: float) -> str:
    return f"{wall / 60:.1f} min wall, {cpu / 60:.1f} min process CPU"


def _quality_rows(start: dict, gan: dict) -> list[str]:
    rows = ["| metric (embedded val, x4) | bicubic | PSNR stage (start) | GAN stage, EMA | GAN stage, raw G |",
            "|---|---|---|---|---|"]
    for name in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
        values = (start[f"val/bicubic_{name}"], start[f"val/{name}"], gan[f"val/{name}"], gan[f"val/raw_{name}"])
        digits = 2 if name.startswith("psnr") else 4
        rows.append(f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in values) + " |")
    if "val/lpips" in gan:
        rows.append(f"| lpips | {gan['val/bicubic_lpips']:.4f} | {start['val/lpips']:.4f} | {gan['val/lpips']:.4f} "
                    f"| {gan['val/raw_lpips']:.4f} |")
    return rows


def _gan_cli():
    """The embedded GAN-stage config, built but not run (random generator weights)."""
    return cli_main(["--config", GAN_CONFIG, "--model.init_args.pretrained_generator=null", "--trainer.logger=false"],
                    run=False)


def _overhead(batch: dict) -> dict[str, float]:
    def make_module():
        return _gan_cli().model

    def make_plain_step():
        module = make_module()
        generator, discriminator = module.generator, module.discriminator
        # The module's own optimizers, loss weights and EMA decay, as the config sets them.
        opt_g = module.generator_optimizer(generator.parameters())
        opt_d = module.discriminator_optimizer(discriminator.parameters())
        ema = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(module.ema_decay), use_buffers=True).requires_grad_(False)
        d_loss, g_loss = module.discriminator_loss, module.generator_loss
        lr, hr = batch["lr"], batch["hr"]

        def step():
            fake = generator(lr)
            loss_d = d_loss(discriminator(hr), discriminator(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            discriminator.requires_grad_(False)
            with torch.no_grad():
                real_logits = discriminator(hr)
            loss_g = module.adversarial_weight * g_loss(discriminator(fake), real_logits) + module.pixel_weight * F.l1_loss(fake, hr)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            discriminator.requires_grad_(True)
            ema.update_parameters(generator)

        return step

    return overhead_ratio(make_module, make_plain_step, batch)


class _Throughput(Callback):
    """Images per second between batch ``warmup`` and the end of training (device synchronised)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.batches, self.batch_size = warmup, 0.0, 0, 0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync()
            self.start = time.perf_counter()
        self.batches = batch_idx + 1 - self.warmup
        self.batch_size = len(batch["hr"])

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync()
        self.images_per_second = self.batches * self.batch_size / (time.perf_counter() - self.start)


def precision_throughput(accelerator: str, config: str = DIV2K_CONFIG, extra: list[str] = (), batches: int = 30,
                         warmup: int = 5) -> dict[str, float]:
    """GAN-stage training images/s for each precision / memory-format switch of the config."""
    results = {}
    for precision, channels_last in (("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)):
        cli = cli_main(["--config", config, "--model.init_args.pretrained_generator=null",
                        "--model.init_args.lpips=disabled",
                        "--model.init_args.perceptual.init_args.pretrained=false",  # timing only
                        f"--network_options.channels_last={channels_last}", f"--trainer.accelerator={accelerator}",
                        "--trainer.logger=false", *extra], run=False)
        datamodule = cli.datamodule
        size, scale = datamodule.hparams.patch_size, datamodule.hparams.scale
        batch = {"lr": torch.rand(datamodule.hparams.batch_size, 3, size // scale, size // scale),
                 "hr": torch.rand(datamodule.hparams.batch_size, 3, size, size)}
        timer = _Throughput(warmup)
        trainer = Trainer(accelerator=accelerator, devices=1, precision=precision, max_epochs=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[timer], limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(cli.model, train_dataloaders=DataLoader(RepeatBatch(batch, batches + warmup), batch_size=None))
        results[f"{precision}{' + channels_last' if channels_last else ''}"] = timer.images_per_second
    return results


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--psnr-ckpt", help="PSNR-stage checkpoint of configs/sr/default.yaml (default: train one now)")
    parser.add_argument("--gan-ckpt", help="checkpoint of configs/sr/esrgan_embedded.yaml (default: train one now)")
    parser.add_argument("--skip-quality", action="store_true", help="only the overhead (and GPU) measurements")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}")
    gan = None
    if not args.skip_quality:
        with tempfile.TemporaryDirectory() as workdir:
            timings, start, gan = _quality(args.psnr_ckpt, args.gan_ckpt, Path(workdir))
        print("\n" + "\n".join(_quality_rows(start, gan)))
        if timings:
            print("\n| run | time |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in timings))

    cli = _gan_cli()
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    overhead = _overhead(batch)
    peak_memory = training_peak_rss_mib(GAN_CONFIG, ["--model.init_args.pretrained_generator=null"])
    print("\n| GAN-stage step (embedded config, batch "
          f"{len(batch['hr'])} x {batch['hr'].shape[-1]}px HR) | value |\n|---|---|")
    print(f"| Lightning step / plain PyTorch step (target <= 1.05) | {overhead['ratio']:.3f} |")
    print(f"| step time Lightning / plain | {overhead['lightning_s'] * 1e3:.0f} / {overhead['plain_s'] * 1e3:.0f} ms |")
    print(f"| training throughput | {len(batch['hr']) / overhead['lightning_s']:.1f} HR patches/s |")
    print(f"| peak memory while training (process RSS) | {peak_memory:.0f} MiB |")
    pipeline = pipeline_samples_per_second(cli.datamodule.train_dataloader(), 20)
    print(f"| data pipeline throughput | {pipeline:.0f} HR patches/s |")
    predict = predict_throughput(cli.model.eval(), tile=0)
    print(f"| predict throughput, whole image (EMA generator) | {predict:.3f} MP/s |")

    if torch.cuda.is_available():
        results = precision_throughput("gpu")
        base = results["32-true"]
        print("\n| DIV2K-size GAN stage on GPU (RRDBNet 23 blocks, VGG D, VGG19 loss) | images/s | vs fp32 |")
        print("|---|---|---|")
        for name, value in results.items():
            print(f"| {name} | {value:.1f} | {value / base:.2f}x |")
    else:
        print("\nbf16-mixed / channels_last throughput: not measured (no GPU in this run).")
    quality = "-" if gan is None else (
        f"PSNR-Y {gan['val/psnr_y']:.2f} (bicubic {start['val/bicubic_psnr_y']:.2f}, PSNR stage {start['val/psnr_y']:.2f})"
        + (f", LPIPS {gan['val/lpips']:.3f}" if "val/lpips" in gan else "")
    )
    write_summary(
        args.summary, task="ESRGAN GAN stage", config="configs/sr/esrgan_embedded.yaml", quality=quality,
        step_ratio=overhead["ratio"], train_samples_per_s=len(batch["hr"]) / overhead["lightning_s"],
        pipeline_samples_per_s=pipeline, peak_memory_mib=peak_memory, predict=f"{predict:.2f} MP/s",
    )


if __name__ == "__main__":
    main()
