"""Values that must agree are given once and reach every class that takes them (train.py LINKS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train import cli_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def build(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return lambda config, *args: cli_main(["--config", str(ROOT / config), "--trainer.logger=false", *args], run=False)


def test_data_scale_reaches_module_generator_and_evaluation(build):
    model = build("configs/sr/default.yaml", "--data.init_args.scale=2", "--data.init_args.patch_size=64").model
    assert (model.scale, model.generator.scale, model.evaluation.scale) == (2, 2, 2)


def test_patch_size_is_the_esrgan_discriminator_input(build):
    cli = build("configs/sr/esrgan_embedded.yaml", "--data.init_args.patch_size=32", "--model.init_args.pretrained_generator=null")
    assert cli.model.discriminator.input_size == 32 and cli.model.generator.scale == cli.datamodule.hparams.scale


def test_generation_data_shape_reaches_every_network(build):
    gan = build("configs/gan/digits.yaml", "--data.init_args.image_size=16").model
    assert (gan.generator.image_size, gan.generator.channels) == (16, 1)  # digits are gray: the dataset's own
    vae = build("configs/vae/digits.yaml", "--data.init_args.channels=3").model
    assert (vae.network.image_size, vae.network.channels) == (32, 3)


def test_num_classes_reaches_the_net(build):
    model = build("configs/segmentation/pet_unet.yaml", "--data.init_args.root=.").model
    assert model.num_classes == 2 and model.net.head.out_channels == 2
