"""ESRGAN GAN stage through the real CLI: from a PSNR-stage checkpoint, checkpoint round trip,
predict, the VGG/LPIPS start-up rules, pretrained-generator formats and precision switches."""

from __future__ import annotations

import math
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

from datamodules.embedded import SKIMAGE_DATA
from datamodules.image_io import read_image
from lightning_modules.generator_weights import load_generator_weights
from networks.rrdbnet import RRDBNet
from networks.sr_discriminators import UNetDiscriminatorSN, VGGStyleDiscriminator
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/sr/esrgan_embedded.yaml"
GENERATOR = ["--model.init_args.generator.init_args.num_feat=8", "--model.init_args.generator.init_args.num_block=1",
             "--model.init_args.generator.init_args.grow_ch=4"]
DATA = ["--data.init_args.patch_size=32", "--data.init_args.batch_size=2", "--data.init_args.repeats=1",
        "--progress_bar.refresh_rate=0"]
TINY = [*GENERATOR, *DATA, "--model.init_args.discriminator.init_args.num_feat=4"]
RANDOM_VGG = ["--model.init_args.perceptual=lightning_modules.perceptual.PerceptualLoss",
              "--model.init_args.perceptual.init_args.pretrained=false"]


def tiny_rrdbnet() -> RRDBNet:
    return RRDBNet(num_feat=8, num_block=1, grow_ch=4)


def _offline(*args, **kwargs):
    raise urllib.error.URLError("no network (simulated by the test)")


def _random_backbone_weights(url: str, *args, **kwargs) -> dict:
    """Stand-in for torchvision's download in tests: explicitly random AlexNet weights."""
    assert "alexnet" in url
    return torchvision.models.alexnet().state_dict()


def _cli(workdir: Path, *args: str, run: bool = True):
    resolved = [str(ROOT / a) if a.startswith("configs/") else a for a in args]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(sys, "argv", ["train.py"])
        return cli_main(resolved, run=run)


@pytest.fixture(scope="module")
def psnr_checkpoint(tmp_path_factory) -> Path:
    """A PSNR-stage (configs/sr/default.yaml) Lightning checkpoint of a tiny RRDBNet."""
    workdir = tmp_path_factory.mktemp("psnr")
    cli = _cli(workdir, "fit", "--config", "configs/sr/default.yaml", *GENERATOR, *DATA, "--trainer.max_steps=1",
               "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1")
    return workdir / cli.trainer.checkpoint_callback.dirpath / "last.ckpt"


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, psnr_checkpoint):
    """One GAN-stage batch (D step + G step) from the PSNR checkpoint, with a random-weight VGG
    perceptual loss and LPIPS on random backbone weights, both injected by the test."""
    workdir = tmp_path_factory.mktemp("esrgan")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torchvision.models._api, "load_state_dict_from_url", _random_backbone_weights)
        cli = _cli(workdir, "fit", "--config", CONFIG, *TINY, *RANDOM_VGG, "--model.init_args.lpips=required",
                   f"--model.init_args.pretrained_generator={psnr_checkpoint}", "--trainer.max_steps=2",
                   "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1")
    return cli, workdir / cli.trainer.log_dir


def test_gan_stage_starts_from_the_psnr_checkpoint_and_logs_its_metrics(gan_run, psnr_checkpoint):
    cli, log_dir = gan_run
    model = cli.model
    assert cli.trainer.global_step == 2
    psnr_state = torch.load(psnr_checkpoint, weights_only=True)["state_dict"]
    # The EMA started as a copy of the PSNR-stage generator and took one update with decay 0.999.
    for name, ema in model.generator_ema.module.named_parameters():
        start, now = psnr_state[f"generator.{name}"], model.generator.get_parameter(name)
        torch.testing.assert_close(ema, 0.999 * start + 0.001 * now)
    assert any(not torch.equal(psnr_state[f"generator.{n}"], p) for n, p in model.generator.named_parameters())
    metrics = cli.trainer.callback_metrics
    for name in ("train/d_loss", "train/g_adversarial", "train/g_pixel", "train/g_perceptual",
                 "val/psnr_y", "val/ssim_rgb", "val/bicubic_psnr_y", "val/raw_psnr_y", "val/raw_ssim_y",
                 "val/lpips", "val/bicubic_lpips", "val/raw_lpips"):
        assert math.isfinite(metrics[name].item()), name
    assert model.adversarial_weight == 5e-3 and model.loss_name == "ragan"
    assert [opt.param_groups[0]["lr"] for opt in cli.trainer.optimizers] == [1e-4, 1e-4]
    assert list((log_dir / "images").glob("val_bicubic_model_gt_step*.png"))
    # Neither the fixed VGG nor the LPIPS networks go into checkpoints.
    keys = torch.load(log_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"].keys()
    assert not [k for k in keys if k.startswith(("perceptual.", "evaluation.lpips."))]
    assert {k.split(".")[0] for k in keys} >= {"generator", "discriminator", "generator_ema"}


def test_checkpoint_round_trip_keeps_g_d_ema_and_both_optimizers(gan_run, tmp_path):
    cli, log_dir = gan_run
    # Resuming restores the checkpoint, never the PSNR-stage file (which may be gone by then);
    # LPIPS and the perceptual loss may differ from the saved run.
    resumed = _cli(tmp_path, "fit", "--config", CONFIG, *TINY, "--trainer.max_steps=2",
                   "--model.init_args.pretrained_generator=gone.ckpt",
                   "--ckpt_path", str(log_dir / "checkpoints/last.ckpt"))
    original, restored = cli.model.state_dict(), resumed.model.state_dict()
    prefixes = ("generator.", "discriminator.", "generator_ema.")
    assert {k for k in original if k.startswith(prefixes)} == {k for k in restored if k.startswith(prefixes)}
    for name, value in original.items():
        if name.startswith(prefixes):
            torch.testing.assert_close(restored[name], value, msg=name)
    assert int(resumed.model.generator_ema.n_averaged) == 2
    for before, after in zip(cli.trainer.optimizers, resumed.trainer.optimizers):
        before_state, after_state = before.state_dict()["state"], after.state_dict()["state"]
        assert before_state.keys() == after_state.keys() and before_state
        for index in before_state:
            for key in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(after_state[index][key], before_state[index][key])


def test_predict_uses_the_ema_generator(gan_run, tmp_path):
    cli, log_dir = gan_run
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB").crop((0, 0, 40, 32)).save(inputs / "coffee.png")
    out = tmp_path / "out"
    _cli(tmp_path, "predict", "--config", CONFIG, *TINY, "--ckpt_path", str(log_dir / "checkpoints/last.ckpt"),
         "--model.init_args.pretrained_generator=gone.ckpt", f"--data.init_args.predict_path={inputs}",
         f"--predict_writer.output_dir={out}")
    written = read_image(out / "coffee.png")
    with torch.no_grad():
        lr = read_image(inputs / "coffee.png").float().div(255).unsqueeze(0)
        expected = cli.model.generator_ema.module(lr).clamp(0, 1).mul(255).round()[0]
    assert written.shape == (3, 128, 160)
    assert (written.float() - expected).abs().max() <= 1


def test_pretrained_generator_formats(tmp_path, psnr_checkpoint):
    reference = tiny_rrdbnet()
    state = reference.state_dict()
    files = {
        "lightning.ckpt": torch.load(psnr_checkpoint, weights_only=True),
        "plain.pth": state,
        "dataparallel.pth": {f"module.{k}": v for k, v in state.items()},
        "basicsr.pth": {"params": {k: torch.zeros_like(v) for k, v in state.items()}, "params_ema": state},
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        generator = tiny_rrdbnet()
        load_generator_weights(generator, str(tmp_path / name))
        expected = files["lightning.ckpt"]["state_dict"] if name == "lightning.ckpt" else None
        for key, value in generator.state_dict().items():
            torch.testing.assert_close(value, expected[f"generator.{key}"] if expected else state[key], msg=name)

    with pytest.raises(FileNotFoundError, match="pretrained_generator"):
        load_generator_weights(tiny_rrdbnet(), str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="pretrained_generator.*must match"):
        load_generator_weights(RRDBNet(num_feat=16, num_block=1, grow_ch=4), str(tmp_path / "plain.pth"))
    torch.save({"epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        load_generator_weights(tiny_rrdbnet(), str(tmp_path / "other.pth"))


def test_missing_psnr_checkpoint_stops_the_run_at_start(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained_generator"):
        _cli(tmp_path, "fit", "--config", CONFIG, *TINY, "--trainer.max_steps=2",
             "--model.init_args.pretrained_generator=nowhere/last.ckpt")


def test_div2k_config_without_weights_stops_at_start_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _offline)
    config = "configs/sr/esrgan_div2k.yaml"
    # jsonargparse reports errors of nested classes inside a ValueError that quotes them.
    with pytest.raises((RuntimeError, ValueError), match="VGG19 ImageNet weights could not be.*weights_path"):
        _cli(tmp_path, "--config", config, *GENERATOR, run=False)
    with pytest.raises((RuntimeError, ValueError), match="LPIPS.*model.init_args.lpips"):
        _cli(tmp_path, "--config", config, *GENERATOR, *RANDOM_VGG[1:], run=False)
    cli = _cli(tmp_path, "--config", config, *GENERATOR, *RANDOM_VGG[1:], "--model.init_args.lpips=optional",
               "--trainer.accelerator=cpu", "--trainer.logger=false", run=False)
    model = cli.model
    assert model.evaluation.lpips is None and model.perceptual.vgg.layers == ["conv5_4"]
    # The reference recipe: L1 1e-2, perceptual 1.0 (L1 on features), RaGAN 5e-3, Adam 1e-4 (0.9, 0.99).
    assert (model.pixel_weight, model.perceptual.weight, model.adversarial_weight) == (1e-2, 1.0, 5e-3)
    assert model.loss_name == "ragan" and model.generator_ema is not None
    for make_optimizer, network in ((model.generator_optimizer, model.generator),
                                    (model.discriminator_optimizer, model.discriminator)):
        defaults = make_optimizer(network.parameters()).defaults
        assert defaults["lr"] == 1e-4 and tuple(defaults["betas"]) == (0.9, 0.99)


def test_discriminators_follow_the_reference_layouts():
    vgg = VGGStyleDiscriminator()
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert [c.stride for c in convs][1::2] == [(2, 2)] * 5 and vgg.classifier[1].in_features == 8192
    assert vgg(torch.rand(2, 3, 128, 128)).shape == (2, 1)
    with pytest.raises(ValueError, match="input_size"):
        vgg(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="power of two"):
        VGGStyleDiscriminator(input_size=96)
    unet = UNetDiscriminatorSN(num_feat=8)
    assert unet(torch.rand(2, 3, 32, 48)).shape == (2, 1, 32, 48)
    assert sum(parametrize.is_parametrized(m, "weight") for m in unet.modules()) == 8


def test_gan_stage_with_the_unet_discriminator(psnr_checkpoint, tmp_path):
    cli = _cli(tmp_path, "fit", "--config", CONFIG, *GENERATOR, *DATA,
               "--model.init_args.discriminator=networks.sr_discriminators.UNetDiscriminatorSN",
               "--model.init_args.discriminator.init_args.num_feat=4", "--model.init_args.loss=nonsaturating",
               f"--model.init_args.pretrained_generator={psnr_checkpoint}", "--trainer.max_steps=2",
               "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1")
    assert cli.trainer.global_step == 2 and math.isfinite(cli.trainer.callback_metrics["train/g_loss"].item())
