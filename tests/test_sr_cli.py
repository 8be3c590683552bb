"""Super-resolution end to end through the real CLI: fit, test, predict, bad inputs."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.embedded import SKIMAGE_DATA
from datamodules.image_io import ImageReadError, read_image
from datamodules.super_resolution import SRTrainDataset, make_lr, mod_crop
from tiny_configs import SR_TINY
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]

CONFIG = "configs/sr/default.yaml"
TINY = [*SR_TINY, "--trainer.val_check_interval=3"]


def _photos(folder: Path, names=("chelsea.png", "coffee.png")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.open(SKIMAGE_DATA / name).convert("RGB").crop((0, 0, 96, 80)).save(folder / Path(name).with_suffix(".png"))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny fit on the embedded photos, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("sr_fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(sys, "argv", ["train.py"])
        cli = cli_main(["fit", "--config", str(ROOT / CONFIG), *TINY, "--trainer.max_steps=6"])
    return workdir / cli.trainer.log_dir, cli


def test_fit_leaves_checkpoints_grid_config_and_example(trained, capsys):
    log_dir, cli = trained
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert any(p.name.startswith("best-") for p in (log_dir / "checkpoints").iterdir())
    assert (log_dir / "config.yaml").is_file()
    grids = list((log_dir / "images").glob("val_bicubic_model_gt_step*.png"))
    assert grids, "validation grid not written for the CSV logger"
    example = next(log_dir.glob("upscaled_x4_*.png"))
    assert read_image(example).shape[1:] == (300 // 4 * 4, 451 // 4 * 4)
    metrics = cli.trainer.callback_metrics
    for name in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
        assert math.isfinite(metrics[f"val/{name}"].item()) and math.isfinite(metrics[f"val/bicubic_{name}"].item())
    # Bicubic on the embedded chelsea photo at x4 (Y channel, 4-px border): a sane, fixed baseline.
    assert 24.0 < metrics["val/bicubic_psnr_y"].item() < 32.0


def test_rerun_does_not_crash_on_existing_config(trained, run_cli):
    log_dir, _ = trained
    run_cli("validate", "--config", CONFIG, *TINY, "--ckpt_path", str(log_dir / "checkpoints/last.ckpt"))


def test_test_on_a_folder_prints_model_and_bicubic(trained, run_cli, tmp_path):
    log_dir, _ = trained
    ckpt = str(log_dir / "checkpoints" / "last.ckpt")
    folder = _photos(tmp_path / "set")
    result = run_cli("test", "--config", CONFIG, *TINY, "--ckpt_path", ckpt, f"--data.init_args.test_dir={folder}")
    metrics = result.trainer.callback_metrics
    assert {"test/psnr_y", "test/bicubic_psnr_y", "test/ssim_rgb", "test/bicubic_ssim_rgb"} <= set(metrics)


def test_predict_writes_upscaled_pngs_and_tiles_match(trained, run_cli, tmp_path):
    log_dir, _ = trained
    ckpt = str(log_dir / "checkpoints" / "last.ckpt")
    inputs = _photos(tmp_path / "inputs")
    outputs = {}
    for tile in (0, 24):
        out = tmp_path / f"out_tile{tile}"
        run_cli(
            "predict", "--config", CONFIG, *TINY, "--ckpt_path", ckpt, f"--data.init_args.predict_path={inputs}",
            f"--predict_writer.output_dir={out}", f"--model.init_args.tile_size={tile}", "--model.init_args.tile_overlap=6",
        )
        outputs[tile] = {p.name: read_image(p).double() for p in sorted(out.glob("*.png"))}
    assert set(outputs[0]) == {"chelsea.png", "coffee.png"}
    for name, whole in outputs[0].items():
        assert whole.shape == (3, 80 * 4, 96 * 4)
        mse = (whole - outputs[24][name]).pow(2).mean().item()
        psnr = 10 * math.log10(255**2 / mse) if mse > 0 else math.inf
        assert psnr >= 50, f"tiled vs whole-image output differ: {psnr:.1f} dB"


def test_bf16_predict_matches_fp32(trained, run_cli, tmp_path):
    log_dir, _ = trained
    inputs = _photos(tmp_path / "inputs", names=("chelsea.png",))
    outputs = {}
    for precision in ("32-true", "bf16-mixed"):
        out = tmp_path / precision
        run_cli(
            "predict", "--config", CONFIG, *TINY, "--ckpt_path", str(log_dir / "checkpoints/last.ckpt"),
            f"--data.init_args.predict_path={inputs}", f"--predict_writer.output_dir={out}",
            f"--trainer.precision={precision}",
        )
        outputs[precision] = read_image(out / "chelsea.png").double()
    mse = (outputs["32-true"] - outputs["bf16-mixed"]).pow(2).mean().item()
    assert 0 < mse and 10 * math.log10(255**2 / mse) >= 40, "bf16 output far from fp32 (or autocast did not run)"


def test_predict_never_overwrites_inputs(trained, run_cli, tmp_path):
    log_dir, _ = trained
    inputs = _photos(tmp_path / "inputs", names=("chelsea.png",))
    before = (inputs / "chelsea.png").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        run_cli(
            "predict", "--config", CONFIG, *TINY, "--ckpt_path", str(log_dir / "checkpoints/last.ckpt"),
            f"--data.init_args.predict_path={inputs}", f"--predict_writer.output_dir={inputs}",
        )
    assert (inputs / "chelsea.png").read_bytes() == before


@pytest.mark.parametrize("cache", [True, False])
def test_training_patches_equal_crops_of_whole_image_lr(tmp_path, cache):
    hr = read_image(SKIMAGE_DATA / "astronaut.png")[:, :200, :200]
    Image.fromarray(hr.permute(1, 2, 0).numpy()).save(tmp_path / "crop.png")
    whole_lr = make_lr(mod_crop(hr, 4), 4)
    dataset = SRTrainDataset([tmp_path / "crop.png"], 4, 64, 1, augment=False, cache=cache, max_pixels=10**8)
    torch.manual_seed(0)
    for _ in range(5):
        sample = dataset[0]
        lr = (sample["lr"] * 255).round().to(torch.uint8)
        hr_patch = (sample["hr"] * 255).round().to(torch.uint8)
        # find the patch position from HR, then compare LR with the whole-image LR there
        matches = [
            (t, l) for t in range(0, 200 - 63, 4) for l in range(0, 200 - 63, 4)
            if torch.equal(hr[:, t : t + 64, l : l + 64], hr_patch)
        ]
        t, l = matches[0]
        reference = whole_lr[:, t // 4 : t // 4 + 16, l // 4 : l // 4 + 16]
        # cached: a crop of the whole-image LR; uncached: the crop (plus margin) downscaled,
        # equal up to the 8-bit rounding of values that sit on a rounding boundary
        assert (lr.int() - reference.int()).abs().max() <= (0 if cache else 1)


@pytest.mark.parametrize("problem", ["corrupt", "too_small", "empty"])
def test_bad_training_folders_fail_with_the_file_name(run_cli, tmp_path, problem):
    folder = _photos(tmp_path / "train", names=("chelsea.png",))
    if problem == "corrupt":
        bad = folder / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif problem == "too_small":
        bad = folder / "tiny.png"
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(bad)
    else:
        for p in folder.iterdir():
            p.unlink()
        bad = folder
    with pytest.raises(ImageReadError, match=bad.name):
        run_cli("fit", "--config", CONFIG, *TINY, "--trainer.max_steps=1", f"--data.init_args.train_dir={folder}")


def test_unusual_modes_train_fine(run_cli, tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    rgb = np.asarray(Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB"))[:64, :64]
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(folder / "sixteen.png")
    cli = run_cli(
        "fit", "--config", CONFIG, *TINY, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
        f"--data.init_args.train_dir={folder}",
    )
    assert cli.trainer.global_step == 2


def test_min_patch_std_redraws_flat_crops(tmp_path):
    """A mostly flat image with one textured corner: flat crops are redrawn, textured ones kept."""
    image = np.full((96, 96, 3), 128, np.uint8)
    image[:40, :40] = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "corner.png")

    def crop_stds(min_patch_std: float) -> list[float]:
        dataset = SRTrainDataset([tmp_path / "corner.png"], 4, 32, 20, augment=False, cache=True,
                                 max_pixels=10**8, min_patch_std=min_patch_std)
        torch.manual_seed(0)
        return [float((dataset[i]["hr"] * 255).std()) for i in range(len(dataset))]

    assert min(crop_stds(0.0)) < 1.0, "without the option some crops are flat"
    assert min(crop_stds(30.0)) >= 30.0
