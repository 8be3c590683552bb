"""Video prediction end to end through the real CLI on the tiny embedded config: fit (metrics next to
the repeat-last-frame baseline, per-horizon values, grid, example, checkpoint), test, predict
from clip folders with more frames than trained on and its refusal to write over inputs, exact
resume at an epoch boundary, and 2-process CPU DDP whose metrics equal one process's."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.image_io import read_image
from tiny_configs import TASKS
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG, _, TINY_ARGS = TASKS["sequence"]
TINY = ["--config", CONFIG, *TINY_ARGS, "--trainer.log_every_n_steps=1", "--trainer.enable_model_summary=false",
        "--progress_bar.refresh_rate=0", "--network_options.channels_last=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sequence_fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(sys, "argv", ["train.py"])
        cli = cli_main(["fit", *[str(ROOT / a) if a == CONFIG else a for a in TINY], "--trainer.max_steps=2",
                        "--trainer.val_check_interval=2"])
    return workdir / cli.trainer.log_dir, cli


def read_metrics(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_fit_logs_model_and_baseline_per_horizon_grid_and_checkpoint(trained):
    log_dir, cli = trained
    assert cli.trainer.global_step == 2 and (log_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = cli.trainer.callback_metrics
    for prefix in ("val/", "val/repeat_last_"):
        for name in ("mse", "mae", "psnr", "ssim", "mse_frame01", "mse_frame02", "ssim_frame02"):
            assert math.isfinite(metrics[prefix + name].item()), prefix + name
        frames = [metrics[f"{prefix}mse_frame{k:02d}"].item() for k in (1, 2)]
        assert metrics[prefix + "mse"].item() == pytest.approx(sum(frames) / 2, rel=1e-5)
    assert metrics["val/repeat_last_mse_frame01"] > 0  # the digits moved
    logged = {name for row in read_metrics(log_dir) for name, value in row.items() if value}
    assert {"train/mse", "train/truth_probability", "lr-Adam"} <= logged
    grid = read_image(next((log_dir / "images").glob("val_input_predicted_truth_step*.png")))
    assert grid.shape[1:] == (2 + 4 * 18, 2 + 3 * (2 * 16 + 2))  # 4 clips, each input | predicted | truth strips
    assert read_image(log_dir / "predicted_example.png").shape[1:] == (3 * 16 + 2 * 2, 2 * 16)


def test_test_command_reports_the_metrics(trained, run_cli):
    log_dir, _ = trained
    result = run_cli("test", *TINY, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"))
    metrics = result.trainer.callback_metrics
    assert all(math.isfinite(metrics[f"test/{name}"].item()) for name in ("mse", "ssim", "repeat_last_mse"))


def _clips(folder: Path, names: dict[str, int]) -> Path:
    for clip, frames in names.items():
        (folder / clip).mkdir(parents=True)
        for index in range(frames):
            frame = np.zeros((16, 16), dtype=np.uint8)
            frame[4:10, 2 + 2 * index : 8 + 2 * index] = 255
            Image.fromarray(frame).save(folder / clip / f"frame_{index}.png")
    return folder


def test_predict_writes_frames_and_strips_beyond_the_trained_horizon_never_over_inputs(trained, run_cli, tmp_path):
    log_dir, _ = trained
    predict = ["predict", *TINY, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"),
               "--model.init_args.predict_frames=3"]
    inputs = _clips(tmp_path / "clips", {"a": 3, "b/c": 2})
    out = tmp_path / "out"
    run_cli(*predict, f"--data.init_args.predict_path={inputs}", f"--predict_writer.output_dir={out}")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a/predicted_001.png", "a/predicted_002.png", "a/predicted_003.png", "a/strip.png",
        "b/c/predicted_001.png", "b/c/predicted_002.png", "b/c/predicted_003.png", "b/c/strip.png"]
    assert read_image(out / "a" / "predicted_003.png").shape == (3, 16, 16)
    assert read_image(out / "a" / "strip.png").shape[1:] == (16 + 2 + 16, 3 * 16)  # 2 inputs above, 3 generated below

    # Frames named like outputs, written into their own folder: refused, the input left as it was.
    clash = tmp_path / "clash"
    (clash / "a").mkdir(parents=True)
    for index in (1, 2):
        Image.fromarray(np.full((16, 16), 40 * index, dtype=np.uint8)).save(clash / "a" / f"predicted_{index:03d}.png")
    before = (clash / "a" / "predicted_001.png").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        run_cli(*predict, f"--data.init_args.predict_path={clash}", f"--predict_writer.output_dir={clash}")
    assert (clash / "a" / "predicted_001.png").read_bytes() == before


def test_resume_at_an_epoch_boundary_is_exact(run_cli):
    """2 epochs in one run == 1 epoch, then ``--ckpt_path last`` (scheduled sampling draws included)."""
    common = [*TINY, "--trainer.max_steps=-1", "--trainer.limit_train_batches=2", "--trainer.val_check_interval=null",
              "--trainer.check_val_every_n_epoch=3", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=1",
              "--budget.minutes=null", "--trainer.max_epochs=2", "--model.init_args.teacher_forcing=0.5"]
    full = run_cli("fit", *common, "--trainer.logger.init_args.name=full")
    run_cli("fit", *common, "--trainer.logger.init_args.name=split", "--trainer.callbacks=tiny_configs.StopAfterEpochs")
    resumed = run_cli("fit", *common, "--trainer.logger.init_args.name=split", "--ckpt_path=last")
    assert resumed.trainer.global_step == full.trainer.global_step == 4
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    assert all(torch.equal(resumed_state[name], value) for name, value in full_state.items())


def test_two_process_cpu_ddp_metrics_equal_one_process(run_cli, tmp_path):
    run_cli("fit", *TINY, "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_fork",
            "--trainer.max_steps=1", "--trainer.val_check_interval=1", "--data.init_args.batch_size=2",
            "--data.init_args.eval_batch_size=1")
    log_dir = next(tmp_path.glob("runs/*/version_0"))
    rows = [row for row in read_metrics(log_dir) if row.get("val/mse")]
    assert len(rows) == 1
    # Each rank validated two of the four clips; the logged values cover all four, as one process sees them.
    single = run_cli("validate", *TINY, "--trainer.logger=false", "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"))
    for name in ("mse", "ssim", "psnr_frame02", "repeat_last_mae"):
        expected = single.trainer.callback_metrics[f"val/{name}"].item()
        assert float(rows[0][f"val/{name}"]) == pytest.approx(expected, rel=1e-5), name


def test_moving_mnist_config_builds_the_paper_convlstm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["--config", str(ROOT / "configs/sequence/moving_mnist.yaml"), "--trainer.accelerator=cpu",
                    "--trainer.logger=false"], run=False)
    model, data = cli.model, cli.datamodule
    assert [cell.hidden_channels for cell in model.network.encoder.cells] == [128, 64, 64]
    assert sum(p.numel() for p in model.network.parameters()) == pytest.approx(7.6e6, rel=0.05)  # Shi et al.: 7.585 M
    assert (model.input_frames, model.output_frames, model.sampling_steps) == (10, 10, 50000)
    assert data.hparams.dataset == "moving_mnist"
