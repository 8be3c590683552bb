"""Segmentation through the real CLI: fit/test/predict on the embedded data, the other configs,
and 2-process DDP whose mIoU equals the single-process one."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.segmentation_embedded import make_digit_scenes

EMBEDDED = "configs/segmentation/embedded.yaml"
TINY = [
    "--model.init_args.net.init_args.widths=[4, 8, 16]",
    "--data.init_args.num_train=32",
    "--data.init_args.num_val=32",
    "--data.init_args.num_test=16",
    "--data.init_args.batch_size=8",
    "--data.init_args.eval_batch_size=8",
    "--progress_bar.refresh_rate=0",
]
ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["background"] + [f"digit_{d}" for d in range(10)]


def last_metrics(save_dir: Path) -> dict[str, float]:
    """The last value of every column of the run's metrics.csv."""
    (path,) = save_dir.glob("*/version_*/metrics.csv")
    values: dict[str, float] = {}
    with open(path) as file:
        for row in csv.DictReader(file):
            values.update({key: float(value) for key, value in row.items() if value != ""})
    return values


def test_fit_test_and_predict_on_embedded_data(run_cli, tmp_path, capsys):
    cli = run_cli("fit", "--config", EMBEDDED, *TINY, "--trainer.max_epochs=1", "--trainer.log_every_n_steps=1")
    metrics = cli.trainer.callback_metrics
    printed = capsys.readouterr().out
    assert re.search(rf"\n  miou +{metrics['val/miou'].item():.4f}\n", printed) and "\n  iou_digit_9 " in printed
    assert 0.0 <= float(metrics["val/miou"]) <= 1.0 and 0.0 <= float(metrics["val/pixel_acc"]) <= 1.0
    for name in CLASSES:
        assert f"val/iou_{name}" in metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/loss" in metrics
    assert cli.trainer.global_step == 4
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] < 1e-6, "poly schedule runs to 0 at the last step"
    run = Path(cli.trainer.log_dir)
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and list((run / "checkpoints").glob("best-*.ckpt"))
    assert list((run / "images").glob("val_samples_step*.png")), "image | target | prediction grid"
    logged = last_metrics(tmp_path / "runs")
    assert "val/iou_digit_9" in logged and "lr-Adam" in logged

    cli = run_cli("test", "--config", EMBEDDED, *TINY, "--ckpt_path", str(last))
    assert 0.0 <= float(cli.trainer.callback_metrics["test/miou"]) <= 1.0

    images, _ = make_digit_scenes("test", 2, 0, 64, tuple(range(10)), (1, 3), (20, 32))
    inputs = tmp_path / "inputs"
    (inputs / "sub").mkdir(parents=True)
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(inputs / "scene.png")
    Image.fromarray(images[1].permute(1, 2, 0).numpy()).resize((70, 50)).save(inputs / "sub" / "other.jpg")
    (inputs / "notes.txt").write_text("not an image")
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs.rglob("*") if p.is_file()}
    run_cli(
        "predict", "--config", EMBEDDED, *TINY, "--ckpt_path", str(last),
        f"--data.init_args.predict_path={inputs}", "--predict_writer.output_dir=out",
    )
    for name, size in (("scene", (64, 64)), ("sub/other", (70, 50))):
        mask = Image.open(tmp_path / "out" / f"{name}_mask.png")
        assert mask.mode == "P" and mask.size == size and np.array(mask).max() < len(CLASSES)
        overlay = Image.open(tmp_path / "out" / f"{name}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == size
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in digests} == digests

    # Writing next to the inputs works once; a second run would overwrite the first run's
    # masks, which are now inputs themselves, and is refused.
    predict_into_inputs = (
        "predict", "--config", EMBEDDED, *TINY, "--ckpt_path", str(last),
        f"--data.init_args.predict_path={inputs}", f"--predict_writer.output_dir={inputs}",
    )
    run_cli(*predict_into_inputs)
    with pytest.raises(FileExistsError, match="refusing to overwrite an input file"):
        run_cli(*predict_into_inputs)


def test_predict_without_input_says_which_option_to_set(run_cli):
    with pytest.raises(ValueError, match="--data.predict_path"):
        run_cli("predict", "--config", EMBEDDED, *TINY)


def test_class_count_mismatch_between_model_and_data_is_an_error(run_cli):
    with pytest.raises(ValueError, match=r"the data has 3 classes .* num_classes=11"):
        run_cli("fit", "--config", EMBEDDED, *TINY, "--data.init_args.digits=[1, 7]", "--trainer.max_steps=1")


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("configs/segmentation/pet_unet.yaml", ["--model.init_args.net.init_args.widths=[4, 8]"]),
        ("configs/segmentation/voc_deeplabv3.yaml", ["--model.init_args.net.init_args.pretrained=random"]),
    ],
)
def test_dataset_configs_build(config, overrides):
    """The Pet and VOC configs parse and build their model and data (the data itself needs a download)."""
    from train import cli_main

    cli = cli_main(["--config", str(ROOT / config), *overrides], run=False)
    assert cli.model.num_classes == cli.datamodule.num_classes


def test_ddp_fit_and_validate_match_single_process(run_cli, tmp_path):
    common = ["--config", EMBEDDED, *TINY, "--trainer.accelerator=cpu"]
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp_fork"]
    run_cli("fit", *common, *ddp, "--trainer.max_steps=2", "--trainer.logger.init_args.save_dir=fit")
    (last,) = (tmp_path / "fit").glob("*/version_*/checkpoints/last.ckpt")
    run_cli("validate", *common, *ddp, "--ckpt_path", str(last), "--trainer.logger.init_args.save_dir=ddp")
    distributed = last_metrics(tmp_path / "ddp")
    cli = run_cli("validate", *common, "--trainer.devices=1", "--ckpt_path", str(last), "--trainer.logger.init_args.save_dir=single")
    single = {key: float(value) for key, value in cli.trainer.callback_metrics.items()}
    assert 0.0 < single["val/pixel_acc"] < 1.0
    for key in ["val/miou", "val/pixel_acc", *(f"val/iou_{name}" for name in CLASSES)]:
        assert distributed[key] == pytest.approx(single[key], abs=1e-6), key
    assert distributed["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)
