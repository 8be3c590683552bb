"""Inpainting end to end through the real CLI: fit (random-VGG perceptual loss, FID from a tiny
TorchScript extractor), test, predict with mask files and its bad inputs, the shipped configs,
and a 2-process CPU DDP run whose synced metrics match a single-process validation."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.embedded import SKIMAGE_DATA
from datamodules.image_io import ImageReadError, read_image
from datamodules.masks import read_hole_mask
from train import cli_main
from tiny_configs import tiny_feature_file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/inpainting/embedded.yaml"
# A 4-channel U-Net on 48x48 crops; 12 fixed validation crops in one batch; 2 steps per batch.
TINY = [
    "--config", CONFIG,
    "--model.init_args.generator.init_args.base_channels=4",
    "--model.init_args.generator.init_args.dilations=[2]",
    "--model.init_args.discriminator.init_args.base_channels=4",
    "--model.init_args.discriminator.init_args.num_layers=3",
    "--data.init_args.crop_size=48",
    "--data.init_args.batch_size=2",
    "--data.init_args.repeats=1",
    "--data.init_args.eval_batch_size=12",
    "--trainer.limit_val_batches=1",
    "--trainer.val_check_interval=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_model_summary=false",
]
RANDOM_PERCEPTUAL = [
    "--model.init_args.perceptual=lightning_modules.perceptual.PerceptualLoss",
    "--model.init_args.perceptual.init_args.pretrained=false",
    "--model.init_args.perceptual.init_args.layer_weights={relu2_2: 1.0}",
]


@pytest.fixture(scope="module")
def fid_args(tmp_path_factory) -> list[str]:
    path = tiny_feature_file(tmp_path_factory.mktemp("fid"), width=4)
    return [
        "--model.init_args.fid=lightning_modules.fid.GenerativeMetrics",
        f"--model.init_args.fid.init_args.feature_extractor={path}",
        "--model.init_args.fid.init_args.num_samples=12",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fid_args):
    """Two batches of training with validation after the second, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("inpainting_fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(sys, "argv", ["train.py"])
        cli = cli_main(["fit", *[str(ROOT / a) if a == CONFIG else a for a in TINY], *RANDOM_PERCEPTUAL, *fid_args,
                        "--trainer.max_steps=4"])
    return workdir / cli.trainer.log_dir, cli


def read_metrics(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_fit_logs_losses_metrics_grid_and_checkpoints(trained, capsys):
    log_dir, cli = trained
    assert cli.trainer.global_step == 4
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert any(p.name.startswith("best-") for p in (log_dir / "checkpoints").iterdir())
    metrics = cli.trainer.callback_metrics
    for name in ("psnr", "ssim", "masked_l1", "fid"):
        assert math.isfinite(metrics[f"val/{name}"].item())
    assert 5 < metrics["val/psnr"].item() < 60 and 0 < metrics["val/masked_l1"].item() < 100
    logged = {name for row in read_metrics(log_dir) for name, value in row.items() if value}
    assert {"train/g_hole_l1", "train/g_valid_l1", "train/g_perceptual", "train/g_adversarial", "train/d_loss"} <= logged
    grid = read_image(next((log_dir / "images").glob("val_masked_output_truth_step*.png")))
    assert grid.shape[1:] == (2 + 6 * 50, 2 + 3 * 50)  # 6 rows of masked input | output | ground truth
    assert read_image(log_dir / "inpainted_example.png").shape[1:] == (48, 3 * 48)


def test_test_command_reports_metrics_and_fid(trained, run_cli, fid_args):
    log_dir, _ = trained
    result = run_cli("test", *TINY, *fid_args, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"))
    metrics = result.trainer.callback_metrics
    assert all(math.isfinite(metrics[f"test/{name}"].item()) for name in ("psnr", "ssim", "masked_l1", "fid"))


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Two photos of odd sizes with masks of the same stem; one mask is gray-level (thresholded)."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name, size, level in (("cat", (37, 53), 255), ("cup", (50, 41), 180)):
        source = "chelsea.png" if name == "cat" else "coffee.png"
        photo = np.asarray(Image.open(SKIMAGE_DATA / source).convert("RGB"))[100 : 100 + size[0], 150 : 150 + size[1]]
        Image.fromarray(photo).save(images / f"{name}.png")
        mask = np.zeros(size, np.uint8)
        mask[8:20, 10:30] = level
        mask[25:30, 5:15] = 90  # below 0.5: known pixels
        Image.fromarray(mask).save(masks / f"{name}.png")
    return images, masks


def _predict(run_cli, log_dir: Path, images: Path, masks: Path, output: Path):
    return run_cli(
        "predict", *TINY, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"),
        f"--data.init_args.predict_path={images}", f"--data.init_args.predict_mask_dir={masks}",
        f"--predict_writer.output_dir={output}",
    )


def test_predict_fills_only_the_holes_of_each_image(trained, run_cli, tmp_path):
    log_dir, _ = trained
    images, masks = _inputs(tmp_path)
    out = tmp_path / "out"
    _predict(run_cli, log_dir, images, masks, out)
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "cup.png"]
    for name in ("cat", "cup"):
        original, result = read_image(images / f"{name}.png"), read_image(out / f"{name}.png")
        hole = read_hole_mask(masks / f"{name}.png").bool().expand_as(original)
        assert result.shape == original.shape
        assert torch.equal(result[~hole], original[~hole])
        assert not torch.equal(result[hole], original[hole])
        assert hole.sum() == 3 * 12 * 20  # the 90-level patch stayed known


@pytest.mark.parametrize("problem", ["missing_mask", "mask_size", "overwrite"])
def test_predict_bad_inputs_fail_clearly(trained, run_cli, tmp_path, problem):
    log_dir, _ = trained
    images, masks = _inputs(tmp_path)
    out = tmp_path / "out"
    if problem == "missing_mask":
        (masks / "cup.png").unlink()
        error, pattern = ImageReadError, r"images/cup\.png: no mask for this image: expected .*masks/cup\.png"
    elif problem == "mask_size":
        Image.open(masks / "cup.png").crop((0, 0, 40, 50)).save(masks / "cup.png")
        error, pattern = ImageReadError, r"masks/cup\.png: mask is 40x50 but its image .*images/cup\.png is 41x50"
    else:
        out = images
        error, pattern = FileExistsError, "refusing to overwrite"
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    with pytest.raises(error, match=pattern):
        _predict(run_cli, log_dir, images, masks, out)
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before


@pytest.mark.parametrize("config", ["configs/inpainting/celebahq_256.yaml", "configs/inpainting/places_256.yaml"])
def test_shipped_configs_build(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(
        ["--config", str(ROOT / config), "--model.init_args.perceptual.init_args.pretrained=false",
         "--model.init_args.fid=null", "--trainer.accelerator=cpu"],
        run=False,
    )
    assert cli.datamodule.hparams.crop_size == 256
    assert cli.trainer.checkpoint_callback.monitor == "val/masked_l1"
    image, mask = torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)
    mask[..., 16:32, 16:48] = 1
    output = cli.model.inpaint(image, mask)
    assert torch.equal(output[..., :16, :], image[..., :16, :])
    assert cli.model.discriminator(cli.model.discriminator_input(output, {"image": image, "mask": mask})).ndim == 4


def test_two_process_cpu_ddp_syncs_metrics(run_cli, tmp_path, fid_args):
    run_cli(
        "fit", *TINY, *fid_args, "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.strategy=ddp_fork_find_unused_parameters_true", "--trainer.max_steps=4",
    )
    log_dir = next(tmp_path.glob("runs/*/version_0"))
    rows = [row for row in read_metrics(log_dir) if row.get("val/masked_l1")]
    assert len(rows) == 1
    # Each rank validated 6 of the 12 crops; the logged values cover all 12, as one process sees them.
    single = run_cli("validate", *TINY, *fid_args, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"),
                     "--trainer.logger=false")
    for name in ("psnr", "ssim", "masked_l1"):
        assert float(rows[0][f"val/{name}"]) == pytest.approx(single.trainer.callback_metrics[f"val/{name}"].item(), rel=1e-5)
    assert math.isfinite(float(rows[0]["val/fid"]))
