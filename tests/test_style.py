"""Style transfer end to end through the real CLI with a generated VGG16 weights file: a few
training steps of the embedded default, predict at the inputs' sizes with the style strength,
the optimisation-based baseline through predict, the network's sizes, and the start-up error of
the embedded default without weights."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from PIL import Image
from torchvision.models.vgg import cfgs, make_layers

from datamodules.embedded import SKIMAGE_DATA
from datamodules.image_io import read_image
from networks.style_transfer import TransformerNet

CONFIG = "configs/style/embedded.yaml"
# VGG16 up to relu2_2 on 16 px crops, a 1-block network of width 4; the 3 validation photos at 24 px.
TINY_LOSS = [
    "--model.init_args.perceptual.init_args.style_layer_weights={relu1_2: 1.0, relu2_2: 1.0}",
    "--model.init_args.style_size=32",
]
TINY = [
    "--config", CONFIG, *TINY_LOSS,
    "--model.init_args.network.init_args.base_channels=4", "--model.init_args.network.init_args.num_residual=1",
    "--data.init_args.image_size=16", "--data.init_args.eval_size=24", "--data.init_args.batch_size=2",
    "--data.init_args.repeats=1", "--budget.minutes=null", "--trainer.log_every_n_steps=1",
    "--trainer.enable_model_summary=false", "--progress_bar.refresh_rate=0",
]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    """The first layers (conv1_1 ... relu2_2) of a random torchvision VGG16 ``features``, in its file layout."""
    torch.manual_seed(0)
    features = make_layers(cfgs["D"])[:9]
    path = tmp_path_factory.mktemp("vgg") / "vgg16-head.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return str(path)


def _inputs(folder: Path) -> Path:
    """Photos of odd sizes, one in a subfolder."""
    (folder / "sub").mkdir(parents=True)
    photo = Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB")
    photo.crop((100, 50, 137, 103)).save(folder / "cat.png")
    photo.crop((0, 0, 50, 41)).save(folder / "sub" / "corner.png")
    return folder


def test_fit_then_predict_at_the_inputs_sizes_with_the_style_strength(run_cli, tmp_path, weights_file):
    weights = f"--model.init_args.perceptual.init_args.weights_path={weights_file}"
    cli = run_cli("fit", *TINY, weights, "--trainer.max_steps=4", "--trainer.val_check_interval=2")
    log_dir = Path(cli.trainer.log_dir)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 4
    assert metrics["val/photo_content"].item() == 0 and metrics["val/photo_style"] > 0
    assert metrics["val/loss"].item() == pytest.approx(sum(metrics[f"val/{t}"].item() for t in ("content", "style", "tv")))
    with open(log_dir / "metrics.csv") as handle:
        logged = {name for row in csv.DictReader(handle) for name, value in row.items() if value}
    assert {"train/content", "train/style", "train/tv", "val/loss", "val/style"} <= logged
    grid = read_image(next((log_dir / "images").glob("val_content_stylized_step*.png")))
    assert grid.shape[1:] == (2 + 3 * 26, 2 + 2 * 26)  # 3 photos, 24 x 24, as content | stylized
    assert read_image(log_dir / "stylized_example.png").shape[1:] == (24, 48)
    checkpoint = log_dir / "checkpoints" / "last.ckpt"
    assert not [k for k in torch.load(checkpoint, weights_only=True)["state_dict"] if k.startswith("perceptual.")]

    inputs = _inputs(tmp_path / "inputs")
    predict = ["predict", *TINY, weights, "--ckpt_path", str(checkpoint), f"--data.init_args.predict_path={inputs}"]
    run_cli(*predict, f"--predict_writer.output_dir={tmp_path / 'out'}")
    assert read_image(tmp_path / "out" / "cat.png").shape == (3, 53, 37)
    assert read_image(tmp_path / "out" / "sub" / "corner.png").shape == (3, 41, 50)
    run_cli(*predict, f"--predict_writer.output_dir={tmp_path / 'unstyled'}", "--model.init_args.style_strength=0")
    assert torch.equal(read_image(tmp_path / "unstyled" / "cat.png"), read_image(inputs / "cat.png"))
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        run_cli(*predict, f"--predict_writer.output_dir={inputs}")


def test_optimization_baseline_through_predict_lowers_the_loss(run_cli, tmp_path, weights_file):
    inputs = _inputs(tmp_path / "inputs")
    cli = run_cli("predict", "--config", "configs/style/gatys.yaml",
                  f"--model.init_args.perceptual.init_args.weights_path={weights_file}",
                  "--model.init_args.perceptual.init_args.arch=vgg16",
                  "--model.init_args.perceptual.init_args.layer_weights={relu2_2: 1.0}", *TINY_LOSS,
                  "--model.init_args.steps=3", f"--data.init_args.predict_path={inputs / 'sub'}",
                  f"--predict_writer.output_dir={tmp_path / 'out'}")
    assert read_image(tmp_path / "out" / "corner.png").shape == (3, 41, 50)
    photo = read_image(inputs / "sub" / "corner.png").float().div(255).unsqueeze(0)
    for method in ("lbfgs", "adam"):
        cli.model.method, cli.model.lr = method, 1.0 if method == "lbfgs" else 0.02
        stylized, history = cli.model.optimize(photo)
        assert history[-1] < history[0] and stylized.shape == photo.shape and 0 <= stylized.min() <= stylized.max() <= 1


def test_network_keeps_any_size_and_stays_in_unit_range():
    network = TransformerNet(base_channels=4, num_residual=1).eval()
    for size in ((8, 8), (17, 30), (33, 9)):
        out = network(torch.rand(1, 3, *size))
        assert out.shape == (1, 3, *size) and 0 <= out.min() <= out.max() <= 1
    ups = [m for m in network.modules() if type(m).__name__ == "Upsample"]
    assert len(ups) == 2 and not any(isinstance(m, torch.nn.ConvTranspose2d) for m in network.modules())


def test_embedded_default_without_weights_stops_naming_the_option(run_cli, monkeypatch):
    def no_network(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    # jsonargparse reports errors of nested classes inside a ValueError that quotes them.
    with pytest.raises((RuntimeError, ValueError), match="VGG16 ImageNet weights could not be.*weights_path"):
        run_cli("fit", "--config", CONFIG)


def test_coco_config_builds_the_paper_recipe(tmp_path, monkeypatch):
    from train import cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    root = Path(__file__).resolve().parents[1]
    cli = cli_main(["--config", str(root / "configs/style/coco_256.yaml"), "--trainer.logger=false",
                    "--model.init_args.perceptual.init_args.pretrained=false"], run=False)  # recipe check only
    model, loss = cli.model, cli.model.perceptual
    assert loss.vgg.arch == "vgg16" and loss.layer_weights == {"relu2_2": 1.0}
    assert list(loss.style_layer_weights) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"] and loss.tv_weight > 0
    assert model.configure_optimizers().defaults["lr"] == 1e-3
    assert (cli.datamodule.hparams.image_size, cli.datamodule.hparams.batch_size) == (256, 4)
    assert model.style_image == "data/styles/style.jpg"
