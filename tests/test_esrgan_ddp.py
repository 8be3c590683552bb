"""The ESRGAN GAN stage under 2-process CPU DDP (gloo): it trains, and its validation metrics
equal those of one process on the same checkpoint and data."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

from datamodules.embedded import SKIMAGE_DATA
from networks.rrdbnet import RRDBNet
from test_esrgan import CONFIG, TINY


def test_two_process_ddp_run_matches_one_process_validation(run_cli, tmp_path):
    torch.manual_seed(0)
    torch.save(RRDBNet(num_feat=8, num_block=1, grow_ch=4).state_dict(), tmp_path / "psnr_stage.pth")
    val_dir = tmp_path / "val"  # an even number of images: no sample is padded in on the second rank
    val_dir.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        Image.open(SKIMAGE_DATA / name).convert("RGB").crop((0, 0, 96, 64)).save(val_dir / name)
    common = [*TINY, f"--data.init_args.val_dir={val_dir}",
              f"--model.init_args.pretrained_generator={tmp_path / 'psnr_stage.pth'}"]

    # Two batches per rank, then validation on the final weights (also saved as last.ckpt).
    run_cli(
        "fit", "--config", CONFIG, *common, "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.strategy=ddp_fork_find_unused_parameters_true", "--trainer.max_steps=4", "--trainer.val_check_interval=2",
        "--trainer.num_sanity_val_steps=0", "--trainer.logger.init_args.version=ddp",
    )
    log_dir = tmp_path / "runs" / "esrgan_embedded" / "ddp"
    with open(log_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    ddp = {key: float(value) for row in rows for key, value in row.items() if key.startswith("val/") and value}
    assert {"val/psnr_y", "val/raw_psnr_y"} <= ddp.keys()

    single = run_cli("validate", "--config", CONFIG, *common, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"),
                     "--trainer.logger.init_args.version=single")
    metrics = single.trainer.callback_metrics
    names = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "raw_psnr_y", "raw_ssim_rgb", "bicubic_psnr_y")
    for name in names:
        assert ddp[f"val/{name}"] == pytest.approx(metrics[f"val/{name}"].item(), rel=1e-5, abs=1e-5), name
