"""VAE: the ELBO terms, sampling/reconstruction/interpolation, and the real CLI on digits."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributions import Normal, kl_divergence

from datamodules.generation import load_digits_tensor
from lightning_modules.vae import VAEModule, interpolate_latents, kl_to_standard_normal
from networks.vae import ConvVAE
from tiny_configs import tiny_feature_file

TINY_NET = ["--model.init_args.network.init_args.widths=[8, 16, 16, 16]", "--model.init_args.network.init_args.latent_dim=8"]


@pytest.fixture(scope="module")
def features_file(tmp_path_factory) -> str:
    return tiny_feature_file(tmp_path_factory.mktemp("fid"), width=8)


def fid_args(features_file: str, num_samples: int = 64) -> list[str]:
    return [
        "--model.init_args.fid=lightning_modules.fid.GenerativeMetrics",
        f"--model.init_args.fid.init_args.feature_extractor={features_file}",
        f"--model.init_args.fid.init_args.num_samples={num_samples}",
        "--model.init_args.fid.init_args.kid=true",
    ]


def tiny_module(likelihood: str = "bernoulli", channels: int = 1, **kwargs) -> VAEModule:
    torch.manual_seed(0)
    return VAEModule(ConvVAE(channels, 16, latent_dim=4, widths=(8, 16)), likelihood=likelihood, **kwargs)


def read_metrics(log_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(log_dir / "metrics.csv")))


def last_value(rows: list[dict[str, str]], key: str) -> float:
    return [float(r[key]) for r in rows if r.get(key)][-1]


def test_kl_matches_the_closed_form():
    mu = torch.tensor([[0.0, 1.0, -2.0], [0.5, 0.0, 0.0]])
    var = torch.tensor([[1.0, 0.5, 4.0], [1.0, 2.0, 0.25]])
    expected_first = 0.0 + 0.5 * (1 + 0.5 - 1 - math.log(0.5)) + 0.5 * (4 + 4 - 1 - math.log(4))
    kl = kl_to_standard_normal(mu, var.log())
    assert kl[0].item() == pytest.approx(expected_first, rel=1e-6)
    reference = kl_divergence(Normal(mu, var.sqrt()), Normal(0.0, 1.0)).sum(dim=1)
    assert torch.allclose(kl, reference, atol=1e-6)


@pytest.mark.parametrize("likelihood, learn_scale", [("bernoulli", False), ("gaussian", True)])
def test_elbo_of_a_fixed_batch_is_finite_and_decreases(likelihood, learn_scale):
    module = tiny_module(likelihood, learn_scale=learn_scale)
    images = load_digits_tensor(16)[:32]
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)

    def negative_elbo() -> torch.Tensor:
        recon_nll, kl, _ = module.elbo_terms(images)
        return (recon_nll + kl).mean()

    start = negative_elbo()
    assert torch.isfinite(start)
    for _ in range(15):
        optimizer.zero_grad()
        negative_elbo().backward()
        optimizer.step()
    end = negative_elbo()
    assert torch.isfinite(end) and end < 0.9 * start


def test_gaussian_nll_is_the_summed_log_density():
    module = tiny_module("gaussian", gaussian_scale=0.3)
    images, means = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    expected = -Normal(means, 0.3).log_prob(images).flatten(1).sum(dim=1)
    assert torch.allclose(module.reconstruction_nll(means, images), expected, rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_sampling_and_reconstruction_shapes(channels):
    module = tiny_module(channels=channels).eval()
    with torch.no_grad():
        samples = module.sample(5)
        reconstructions = module.reconstruct(torch.zeros(3, channels, 16, 16))
    assert samples.shape == (5, channels, 16, 16) and reconstructions.shape == (3, channels, 16, 16)
    assert samples.min() >= -1 and samples.max() <= 1


def test_interpolation_endpoints_decode_the_encoded_inputs():
    module = tiny_module().eval()
    images = load_digits_tensor(16)[:2]
    with torch.no_grad():
        mu = module.network.encode(images)[0]
        path = interpolate_latents(mu[0], mu[1], 5)
        frames = module.decode_images(path)
        reconstructions = module.reconstruct(images)
    assert path.shape == (5, 4)
    assert torch.equal(path[0], mu[0]) and torch.equal(path[-1], mu[1])
    assert torch.allclose(frames[0], reconstructions[0], atol=1e-6)
    assert torch.allclose(frames[-1], reconstructions[1], atol=1e-6)


def test_predict_mode_and_inputs_must_agree():
    images = {"image": torch.zeros(2, 1, 16, 16), "path": ["a.png", "b.png"]}
    with torch.no_grad():
        with pytest.raises(ValueError, match="leave data.predict_path unset"):
            tiny_module(predict_mode="samples").eval().predict_step(images, 0)
        with pytest.raises(ValueError, match="set data.predict_path"):
            tiny_module(predict_mode="reconstructions").eval().predict_step({"seed": torch.tensor([0, 1])}, 0)


def test_data_channels_reach_the_network(run_cli):
    cli = run_cli("fit", "--config", "configs/vae/digits.yaml", "--data.init_args.channels=3", "--trainer.max_steps=1")
    assert cli.model.network.channels == 3 and cli.trainer.global_step == 1


@pytest.mark.parametrize("config", sorted(p.name for p in (Path(__file__).parents[1] / "configs" / "vae").glob("*.yaml")))
def test_every_config_builds_matching_model_and_data(config, tmp_path, monkeypatch):
    from train import cli_main

    monkeypatch.chdir(tmp_path)
    cli = cli_main(["--config", f"{Path(__file__).parents[1]}/configs/vae/{config}", "--model.init_args.fid=null"], run=False)
    assert isinstance(cli.model, VAEModule)
    assert (cli.model.network.channels, cli.model.network.image_size) == (cli.datamodule.channels, cli.datamodule.image_size)
    assert cli.config.checkpoint.monitor.startswith("val/")


def test_digits_cli_fit_validate_and_predict(run_cli, tmp_path, features_file):
    common = ["--config", "configs/vae/digits.yaml", *TINY_NET, *fid_args(features_file)]
    cli = run_cli(
        "fit", *common,
        "--trainer.max_epochs=2", "--trainer.check_val_every_n_epoch=1", "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=2", "--trainer.log_every_n_steps=1", "--progress_bar.refresh_rate=0",
    )
    log_dir = Path(cli.trainer.logger.log_dir)
    rows = read_metrics(log_dir)
    for key in ("train/elbo", "train/recon_nll", "train/kl", "val/elbo", "val/psnr", "val/ssim", "val/fid", "val/kid_mean"):
        assert math.isfinite(last_value(rows, key)), key
    assert int(cli.model.fid.fid.real_features_num_samples) == 64
    images = sorted(p.name for p in (log_dir / "images").glob("*.png"))
    assert any(n.startswith("val_samples") for n in images) and any(n.startswith("val_reconstructions") for n in images)
    ckpt = str(log_dir / "checkpoints" / "last.ckpt")

    # Resume needs no recompute: the real statistics come from the checkpoint, and the same
    # weights and sampling noise give the same FID.
    cli = run_cli("validate", *common, "--ckpt_path", ckpt, "--trainer.limit_val_batches=2")
    assert cli.model.fid.has_real_features
    assert cli.trainer.callback_metrics["val/fid"].item() == pytest.approx(last_value(rows, "val/fid"), rel=1e-4)

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i, digit in enumerate(load_digits_tensor(32)[:3]):
        Image.fromarray(digit[0].add(1).mul(127.5).round().byte().numpy()).save(inputs / f"digit{i}.png")
    outputs = {}
    for mode, extra in [
        ("samples", ["--data.init_args.num_predict=4"]),
        ("reconstructions", [f"--data.init_args.predict_path={inputs}"]),
        ("interpolations", [f"--data.init_args.predict_path={inputs}", "--data.init_args.batch_size=2"]),
    ]:
        out = tmp_path / mode
        run_cli(
            "predict", "--config", "configs/vae/digits.yaml", *TINY_NET, "--ckpt_path", ckpt,
            f"--model.init_args.predict_mode={mode}", f"--predict_writer.output_dir={out}", *extra,
        )
        outputs[mode] = sorted((out / mode).glob("*.png"))
    assert [p.name for p in outputs["samples"]] == [f"{i:06d}.png" for i in range(4)]
    assert [p.name for p in outputs["reconstructions"]] == ["digit0.png", "digit1.png", "digit2.png"]
    assert [p.name for p in outputs["interpolations"]] == ["digit0__digit1.png", "digit1__digit2.png"]

    strip = np.asarray(Image.open(outputs["interpolations"][1]).convert("L"), dtype=int)
    first, last = strip[2:34, 2:34], strip[2:34, -34:-2]
    for frame, name in ((first, "digit1.png"), (last, "digit2.png")):
        reconstruction = np.asarray(Image.open(tmp_path / "reconstructions" / "reconstructions" / name), dtype=int)
        assert np.abs(frame - reconstruction).max() <= 1
    assert sorted(p.name for p in inputs.iterdir()) == ["digit0.png", "digit1.png", "digit2.png"]


def test_ddp_two_processes_sync_fid_and_checkpoint_all_real_statistics(run_cli, tmp_path, features_file):
    common = [
        "--config", "configs/vae/digits.yaml", *TINY_NET, *fid_args(features_file, num_samples=64),
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_fork",
        "--trainer.limit_val_batches=2", "--progress_bar.refresh_rate=0",
    ]
    run_cli(
        "fit", *common, "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1",
        "--trainer.limit_train_batches=3", "--trainer.log_every_n_steps=1",
    )
    runs = tmp_path / "runs" / "vae_digits"
    rows = read_metrics(runs / "version_0")
    for key in ("train/elbo", "val/elbo", "val/psnr", "val/fid", "val/kid_mean"):
        assert math.isfinite(last_value(rows, key)), key
    ckpt = runs / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
    # Rank 0's checkpoint holds both ranks' real images (32 each)...
    assert int(state["fid.fid.real_features_num_samples"]) == 64
    assert torch.cat(state["fid.kid.real_features"]).shape == (64, 8)
    # ... and a 2-process resume counts them once: same weights and noise give the same FID.
    run_cli("validate", *common, "--ckpt_path", str(ckpt))
    assert last_value(read_metrics(runs / "version_1"), "val/fid") == pytest.approx(last_value(rows, "val/fid"), rel=1e-4)
