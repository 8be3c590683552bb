"""pix2pix end to end through the real CLI: fit on the embedded default (random-VGG perceptual
term, FID from a tiny TorchScript extractor), test, predict at the inputs' sizes and its refusals,
bad data folders, the shipped paper configs, and a 2-process CPU DDP run whose synced metrics
match a single-process validation."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules.embedded import SKIMAGE_DATA
from datamodules.image_io import ImageReadError, read_image
from lightning_modules.schedules import ConstantThenLinearLR
from train import cli_main
from tiny_configs import tiny_feature_file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/translation/embedded.yaml"
# A 3-level U-Net on 16x16 crops, a 16x16 PatchGAN; the 3 validation photos at 24 px (short side).
TINY = [
    "--config", CONFIG,
    "--model.init_args.generator.init_args.num_downs=3",
    "--model.init_args.generator.init_args.ngf=4",
    "--model.init_args.discriminator.init_args.ndf=4",
    "--model.init_args.discriminator.init_args.n_layers=1",
    "--data.init_args.load_size=24",
    "--data.init_args.crop_size=16",
    "--data.init_args.eval_size=24",
    "--data.init_args.batch_size=2",
    "--data.init_args.repeats=1",
    "--trainer.val_check_interval=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_model_summary=false",
    "--progress_bar.refresh_rate=0",
]
RANDOM_PERCEPTUAL = [
    "--model.init_args.perceptual=lightning_modules.perceptual.PerceptualLoss",
    "--model.init_args.perceptual.init_args.pretrained=false",
    "--model.init_args.perceptual.init_args.layer_weights={relu2_2: 1.0}",
]


@pytest.fixture(scope="module")
def fid_args(tmp_path_factory) -> list[str]:
    path = tiny_feature_file(tmp_path_factory.mktemp("fid"), width=4)
    return ["--model.init_args.fid=lightning_modules.fid.GenerativeMetrics",
            f"--model.init_args.fid.init_args.feature_extractor={path}", "--model.init_args.fid.init_args.num_samples=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fid_args):
    """Two batches of training with validation after the second, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("translation_fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(sys, "argv", ["train.py"])
        cli = cli_main(["fit", *[str(ROOT / a) if a == CONFIG else a for a in TINY], *RANDOM_PERCEPTUAL, *fid_args,
                        "--trainer.max_steps=4"])
    return workdir / cli.trainer.log_dir, cli


def read_metrics(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_fit_logs_losses_metrics_baseline_grid_and_checkpoints(trained):
    log_dir, cli = trained
    assert cli.trainer.global_step == 4
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = cli.trainer.callback_metrics
    for name in ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "fid"):
        assert math.isfinite(metrics[f"val/{name}"].item()), name
    assert 5 < metrics["val/baseline_psnr"].item() < 40 and 0 < metrics["val/baseline_ssim"].item() < 1
    logged = {name for row in read_metrics(log_dir) for name, value in row.items() if value}
    assert {"train/g_l1", "train/g_perceptual", "train/g_adversarial", "train/d_loss", "lr-Adam"} <= logged
    schedulers = [config.scheduler for config in cli.trainer.lr_scheduler_configs]
    assert all(isinstance(s, ConstantThenLinearLR) and s.total_iters == 2 for s in schedulers)  # the run's 2 batches
    grid = read_image(next((log_dir / "images").glob("val_input_output_target_step*.png")))
    assert grid.shape[1:] == (2 + 3 * 26, 2 + 3 * 38)  # 3 photos (24 x 36, one 24 x 35) as input | output | target
    assert read_image(log_dir / "translated_example.png").shape[1:] == (24, 3 * 36)


def test_test_command_reports_the_metrics(trained, run_cli, fid_args):
    log_dir, _ = trained
    result = run_cli("test", *TINY, *fid_args, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"))
    metrics = result.trainer.callback_metrics
    assert all(math.isfinite(metrics[f"test/{name}"].item()) for name in ("psnr", "ssim", "baseline_psnr", "fid"))


def _inputs(folder: Path) -> Path:
    """Photos of odd sizes, one in a subfolder."""
    (folder / "sub").mkdir(parents=True)
    photo = Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB")
    photo.crop((100, 50, 137, 103)).save(folder / "cat.png")
    photo.crop((0, 0, 50, 41)).save(folder / "sub" / "corner.jpg")
    return folder


def test_predict_writes_pngs_at_the_input_sizes_and_never_over_the_inputs(trained, run_cli, tmp_path):
    log_dir, _ = trained
    inputs, out = _inputs(tmp_path / "inputs"), tmp_path / "out"
    predict = ["predict", *TINY, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt")]
    run_cli(*predict, f"--data.init_args.predict_path={inputs}", f"--predict_writer.output_dir={out}")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["cat.png", "sub/corner.png"]
    assert read_image(out / "cat.png").shape == (3, 53, 37) and read_image(out / "sub" / "corner.png").shape == (3, 41, 50)
    before = (inputs / "cat.png").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        run_cli(*predict, f"--data.init_args.predict_path={inputs}", f"--predict_writer.output_dir={inputs}")
    assert (inputs / "cat.png").read_bytes() == before


def _pairs(folder: Path, widths: tuple[int, ...]) -> Path:
    folder.mkdir(parents=True)
    photo = Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB")
    for index, width in enumerate(widths):
        photo.crop((0, 0, width, 24)).save(folder / f"{index}.png")
    return folder


def test_side_by_side_folders_train_and_a_bad_file_stops_the_run_naming_it(run_cli, tmp_path):
    train, val = _pairs(tmp_path / "train", (48, 48)), _pairs(tmp_path / "val", (40,))
    folders = [f"--data.init_args.train_dir={train}", f"--data.init_args.val_dir={val}"]
    cli = run_cli("fit", *TINY, *folders, "--trainer.max_steps=2", "--data.init_args.batch_size=1")
    assert cli.trainer.global_step == 2 and "val/baseline_psnr" not in cli.trainer.callback_metrics  # no baseline here
    assert cli.datamodule.val_set[0]["input"].shape == (3, 28, 24)  # a 20 x 24 side, short side to 24
    _pairs(tmp_path / "odd", (47,))
    with pytest.raises(ImageReadError, match=r"odd/0\.png: side-by-side file is 47x24"):
        run_cli("fit", *TINY, f"--data.init_args.train_dir={tmp_path / 'odd'}", f"--data.init_args.val_dir={val}")


@pytest.mark.parametrize("config", ["configs/translation/facades_256.yaml", "configs/translation/edges2shoes_256.yaml"])
def test_paper_configs_build_with_the_recipe(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # ngf 1: the recipe without building the 54 M generator (its size is tested in test_translation.py)
    cli = cli_main(["--config", str(ROOT / config), "--model.init_args.fid=null", "--trainer.accelerator=cpu",
                    "--trainer.logger=false", "--model.init_args.generator.init_args.ngf=1"], run=False)
    model = cli.model
    assert (model.l1_weight, model.loss_name, model.generator.multiple) == (100.0, "nonsaturating", 256)
    optimizer = model.generator_optimizer(model.generator.parameters())
    assert optimizer.defaults["lr"] == 2e-4 and optimizer.defaults["betas"] == (0.5, 0.999)
    scheduler = model.generator_scheduler(optimizer)
    assert isinstance(scheduler, ConstantThenLinearLR) and scheduler.constant_fraction == 0.5
    assert cli.datamodule.hparams.crop_size == 256
    discriminator = model.discriminator.eval()
    assert discriminator(torch.zeros(1, 6, 256, 256)).shape == (1, 1, 30, 30)  # 70x70 patches


def test_two_process_cpu_ddp_syncs_metrics(run_cli, tmp_path, fid_args):
    # Four validation pairs: two per rank, none padded in. Instance norm: batch-norm running
    # statistics are each rank's own (no SyncBatchNorm on CPU) and the checkpoint holds rank 0's.
    folders = [f"--data.init_args.train_dir={_pairs(tmp_path / 'train', (48, 48, 48, 48))}",
               f"--data.init_args.val_dir={_pairs(tmp_path / 'val', (40, 44, 48, 52))}", "--data.init_args.eval_size=16"]
    instance = [f"--model.init_args.{net}.init_args.norm=instance" for net in ("generator", "discriminator")]
    run_cli("fit", *TINY, *folders, *instance, *fid_args, "--trainer.accelerator=cpu", "--trainer.devices=2",
            "--trainer.strategy=ddp_fork_find_unused_parameters_true", "--trainer.max_steps=4",
            "--data.init_args.batch_size=1")
    log_dir = next(tmp_path.glob("runs/*/version_0"))
    rows = [row for row in read_metrics(log_dir) if row.get("val/psnr")]
    assert len(rows) == 1
    # Each rank validated two of the four pairs; the logged values cover all four, as one process sees them.
    single = run_cli("validate", *TINY, *folders, *instance, *fid_args, "--trainer.logger=false",
                     "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"))
    for name in ("psnr", "ssim"):
        expected = single.trainer.callback_metrics[f"val/{name}"].item()
        assert float(rows[0][f"val/{name}"]) == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(float(rows[0]["val/fid"]))
