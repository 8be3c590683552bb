"""GAN generation: network shapes and initialisation, training/validation/predict through the
real CLI on the embedded digits (FID from a tiny TorchScript extractor), FID misconfiguration,
the shipped configs, and a 2-process CPU DDP run."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn

from datamodules.image_io import read_image
from lightning_modules.gan import slerp
from networks.dcgan import DCGANDiscriminator, DCGANGenerator
from networks.sngan import SNGANDiscriminator, SNGANGenerator
from tiny_configs import tiny_feature_file

CONFIGS = sorted(str(p.relative_to(Path(__file__).parents[1])) for p in (Path(__file__).parents[1] / "configs/gan").glob("*.yaml"))
# A few batches of a narrow DCGAN on 16 digits per batch; global steps count D and G steps.
TINY = [
    "--config", "configs/gan/digits.yaml",
    "--model.init_args.generator.init_args.base_width=8",
    "--model.init_args.discriminator.init_args.base_width=8",
    "--data.init_args.batch_size=16",
]


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory) -> str:
    path = tiny_feature_file(tmp_path_factory.mktemp("fid"), width=8)
    return str(path)


def fid_args(feature_file: str) -> list[str]:
    return [
        "--model.init_args.fid=lightning_modules.fid.GenerativeMetrics",
        f"--model.init_args.fid.init_args.feature_extractor={feature_file}",
        "--model.init_args.fid.init_args.num_samples=48",
        "--model.init_args.fid.init_args.kid=true",
        "--model.init_args.fid.init_args.kid_subset_size=16",
        "--checkpoint.monitor=val/fid",
        "--checkpoint.mode=min",
    ]


def read_metrics(root: Path) -> list[dict[str, str]]:
    (path,) = root.glob("runs/**/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------ networks
@pytest.mark.parametrize("size", [32, 64])
def test_dcgan_shapes_ranges_and_paper_init(size):
    generator = DCGANGenerator(latent_dim=100, image_size=size, channels=3, base_width=16)
    images = generator(torch.randn(5, 100))
    assert images.shape == (5, 3, size, size) and images.abs().max() <= 1
    assert len([m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]) == int(math.log2(size)) - 1
    for normalization in ("batch", "spectral", "none"):
        discriminator = DCGANDiscriminator(image_size=size, channels=3, base_width=16, normalization=normalization)
        assert discriminator(images).shape == (5,)
    conv = generator.net[3]
    assert isinstance(conv, nn.ConvTranspose2d) and abs(conv.weight.std().item() - 0.02) < 0.002
    bn = generator.net[1]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and bn.weight.std().item() < 0.05
    with pytest.raises(ValueError, match="power-of-two"):
        DCGANGenerator(image_size=48)


def test_dcgan_discriminator_follows_the_paper_layout():
    discriminator = DCGANDiscriminator(image_size=64, channels=3, base_width=8)
    layers = list(discriminator.net)
    assert isinstance(layers[1], nn.LeakyReLU) and layers[1].negative_slope == 0.2, "no BN on the first layer"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == 3


def test_sngan_shapes_and_spectral_norm():
    generator = SNGANGenerator(latent_dim=16, image_size=32, channels=3, width=32)
    images = generator(torch.randn(4, 16))
    assert images.shape == (4, 3, 32, 32) and images.abs().max() <= 1
    discriminator = SNGANDiscriminator(image_size=32, channels=3, width=32)
    assert discriminator(images).shape == (4,)
    weighted = [m for m in discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weighted and all(hasattr(m, "parametrizations") for m in weighted), "every D layer is spectrally normalised"
    # After power iterations the largest singular value of each normalised weight is about 1.
    for _ in range(20):
        discriminator(images)
    discriminator.eval()
    sigma = torch.linalg.matrix_norm(discriminator.head.weight.detach(), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=0.05)
    assert SNGANGenerator(image_size=64, width=8)(torch.randn(2, 128)).shape == (2, 3, 64, 64)
    assert SNGANDiscriminator(image_size=64, width=8)(torch.randn(2, 3, 64, 64)).shape == (2,)


def test_slerp_keeps_the_end_points():
    a, b = torch.randn(8), torch.randn(8)
    path = slerp(a, b, 5)
    assert path.shape == (5, 8)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)


# ------------------------------------------------------------------------------------ CLI
def test_fit_with_fid_then_predict_distinct_seeded_samples(run_cli, tmp_path, feature_file):
    cli = run_cli(
        "fit", *TINY, *fid_args(feature_file),
        "--trainer.max_steps=8", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=2",
    )
    assert cli.trainer.global_step == 8  # 4 batches x (D step + G step)
    rows = read_metrics(tmp_path)
    fids = [float(r["val/fid"]) for r in rows if r.get("val/fid")]
    assert len(fids) == 2 and all(math.isfinite(v) and v > 0 for v in fids)
    assert all(r["val/kid_mean"] for r in rows if r.get("val/fid"))
    assert [float(r["train/g_loss"]) for r in rows if r.get("train/g_loss")]
    grids = sorted(tmp_path.glob("runs/**/images/val_samples_step*.png"))
    assert len(grids) == 2
    # Real statistics were computed once (32 validation images) and kept.
    assert int(cli.model.fid.fid.real_features_num_samples) == 32
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.name.startswith("best-")

    out = tmp_path / "samples"
    run_cli(
        "predict", *TINY, f"--ckpt_path={best}", "--data.init_args.num_predict=10",
        f"--predict_writer.output_dir={out}", "--model.init_args.interpolation_seeds=[3,7]",
        "--model.init_args.interpolation_steps=5",
    )
    samples = sorted(out.glob("sample_*.png"))
    assert [p.name for p in samples] == [f"sample_{i:06d}.png" for i in range(10)]
    images = [read_image(p) for p in samples]
    assert all(image.shape == (3, 32, 32) for image in images)
    assert len({image.numpy().tobytes() for image in images}) == 10, "samples must be distinct"
    assert read_image(out / "grid.png").shape[1:] == (2 + 2 * 34, 2 + 8 * 34)
    assert read_image(out / "interpolation_3_7.png").shape[2] == 2 + 5 * 34
    # Seeds are reproducible: sample 3 equals the first frame of the interpolation from seed 3.
    strip = read_image(out / "interpolation_3_7.png")
    assert torch.equal(strip[:, 2:34, 2:34], images[3])


def test_fid_without_weights_fails_before_training(run_cli, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", offline)
    # jsonargparse wraps the error of the FID constructor into its own ValueError, message kept.
    with pytest.raises((RuntimeError, ValueError), match="cannot load the FID Inception weights .*weights_path"):
        run_cli("fit", *TINY, "--model.init_args.fid=lightning_modules.fid.GenerativeMetrics")


def test_data_channels_reach_both_networks(run_cli):
    cli = run_cli("fit", *TINY, "--data.init_args.channels=3", "--trainer.max_steps=2")
    assert cli.model.generator.channels == 3 and cli.trainer.global_step == 2


@pytest.mark.parametrize("config", CONFIGS)
def test_shipped_configs_build(config, tmp_path, monkeypatch):
    from train import cli_main

    monkeypatch.chdir(tmp_path)
    root = Path(__file__).parents[1]
    cli = cli_main(["--config", str(root / config), "--model.init_args.fid=null"], run=False)
    generator, data = cli.model.generator, cli.datamodule
    assert (generator.channels, generator.image_size) == (data.channels, data.image_size)
    images = generator(torch.randn(2, generator.latent_dim))
    assert cli.model.discriminator(images).shape == (2,)


def test_two_process_cpu_ddp(run_cli_subprocess, run_cli, tmp_path, feature_file):
    run_cli_subprocess(
        "fit", *TINY, *fid_args(feature_file),
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true",
        "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
        "--trainer.enable_model_summary=false", timeout=240,
    )
    rows = read_metrics(tmp_path)
    fids = [float(r["val/fid"]) for r in rows if r.get("val/fid")]
    assert len(fids) == 1 and math.isfinite(fids[0])
    (ckpt,) = tmp_path.glob("runs/**/checkpoints/last.ckpt")
    ddp_state = torch.load(ckpt, weights_only=True)["state_dict"]
    # The real statistics gathered from both ranks equal one process's on the same images.
    single = run_cli(
        "fit", *TINY, *fid_args(feature_file), "--trainer.max_steps=4", "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=2", "--trainer.logger.init_args.name=single",
    )
    for name in ("real_features_num_samples", "real_features_sum", "real_features_cov_sum"):
        torch.testing.assert_close(ddp_state[f"fid.fid.{name}"], getattr(single.model.fid.fid, name), rtol=1e-5, atol=1e-5)


def test_resume_restores_networks_ema_optimizers_schedulers_and_fid_statistics(run_cli, feature_file):
    """Interrupted at an epoch boundary and resumed with --ckpt_path last == one uninterrupted run."""
    common = [
        *TINY, *fid_args(feature_file), "--trainer.max_steps=-1", "--trainer.limit_train_batches=3",
        "--trainer.val_check_interval=null", "--trainer.check_val_every_n_epoch=1", "--trainer.limit_val_batches=2",
    ]
    full = run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=full")
    run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=split",
            "--trainer.callbacks=tiny_configs.StopAfterEpochs")  # the same run length: schedules span it
    resumed = run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=split", "--ckpt_path=last")
    assert resumed.trainer.global_step == full.trainer.global_step == 12
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    assert any(k.startswith("generator_ema.") for k in full_state) and "fid.fid.real_features_sum" in full_state
    for name, value in full_state.items():
        torch.testing.assert_close(resumed_state[name], value, rtol=0, atol=1e-6, msg=name)
    for opt_full, opt_resumed in zip(full.trainer.optimizers, resumed.trainer.optimizers, strict=True):
        torch.testing.assert_close(opt_resumed.state_dict()["state"], opt_full.state_dict()["state"], rtol=0, atol=1e-6)
    for config_full, config_resumed in zip(full.trainer.lr_scheduler_configs, resumed.trainer.lr_scheduler_configs, strict=True):
        assert config_resumed.scheduler.last_epoch == config_full.scheduler.last_epoch == 6  # one step per batch
    torch.testing.assert_close(resumed.trainer.callback_metrics["val/fid"], full.trainer.callback_metrics["val/fid"])
