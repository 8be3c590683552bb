"""Run-level guarantees: W&B offline tracking, config saving, resume, NaN stop, atomic checkpoints, DDP."""

import glob
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from google.protobuf.message import DecodeError

from tiny_configs import SR_TINY

SR = "configs/sr/default.yaml"
TINY_SR = [*SR_TINY, "--budget.minutes=null"]  # tests that leave max_steps open train for the epochs they give


def _wandb_records(run_file: Path) -> list:
    """Decode an offline W&B run file (LevelDB log format of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data, position, block, records, partial = run_file.read_bytes(), 7, 32768, [], b""
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            records.append(partial + chunk)
    return [wandb_internal_pb2.Record.FromString(r) for r in records]


def test_wandb_offline_records_config_metrics_and_images(run_cli, tmp_path):
    cli = run_cli(
        "fit", "--config", SR, *TINY_SR, "--trainer.max_steps=4", "--trainer.val_check_interval=4", "--trainer.log_every_n_steps=1",
        "--trainer.logger=lightning.pytorch.loggers.WandbLogger", "--trainer.logger.init_args.offline=true",
        "--trainer.logger.init_args.save_dir=wb", "--trainer.logger.init_args.project=sr-test",
    )
    import wandb

    assert wandb.run is None, "the CLI must finish the W&B run"
    run_id = cli.trainer.logger.version
    assert (tmp_path / "wb" / "sr-test" / run_id / "config.yaml").is_file(), "config next to the checkpoints"
    assert (tmp_path / "wb" / "sr-test" / run_id / "checkpoints" / "last.ckpt").is_file()
    run_folder = Path(glob.glob(str(tmp_path / "wb" / "wandb" / f"offline-run-*-{run_id}"))[0])
    deadline = time.time() + 30
    while True:  # wandb-core writes the file in its own process; wait until the run's exit record is in
        try:
            records = _wandb_records(next(run_folder.glob("run-*.wandb")))
        except DecodeError:  # read while a record was half written (a slow or busy machine)
            records = []
        if any(r.HasField("exit") for r in records) or time.time() > deadline:
            break
        time.sleep(0.5)
    history = {item.key or "/".join(item.nested_key) for r in records if r.HasField("history") for item in r.history.item}
    config = {item.key or "/".join(item.nested_key) for r in records if r.HasField("config") for item in r.config.update}
    assert {"val/psnr_y", "val/bicubic_psnr_y", "train/pixel_loss"} <= history
    assert {"model", "data", "trainer"} <= config, "resolved CLI config stored with the run"
    assert list((run_folder / "files" / "media" / "images").rglob("*.png")), "no image grid recorded"
    assert any(r.HasField("exit") and r.exit.exit_code == 0 for r in records), "run not finished cleanly"


def test_resume_at_epoch_boundary_matches_uninterrupted_run(run_cli):
    common = ["--config", SR, *TINY_SR, "--trainer.max_steps=-1", "--trainer.val_check_interval=null",
              "--trainer.check_val_every_n_epoch=1", "--trainer.limit_val_batches=0"]
    full = run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=full")
    run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=split",
            "--trainer.callbacks=tiny_configs.StopAfterEpochs")  # the same run length: schedules span it
    resumed = run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=split", "--ckpt_path=last")
    assert resumed.trainer.logger.version == 0, "resume must continue the same run folder"
    assert resumed.trainer.global_step == full.trainer.global_step
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    opt_full, opt_resumed = full.trainer.optimizers[0].state_dict(), resumed.trainer.optimizers[0].state_dict()
    torch.testing.assert_close(opt_full["state"][0]["exp_avg"], opt_resumed["state"][0]["exp_avg"], rtol=0, atol=1e-6)
    assert full.trainer.lr_scheduler_configs[0].scheduler.last_epoch == resumed.trainer.lr_scheduler_configs[0].scheduler.last_epoch


def test_sigkill_then_resume_from_last(tmp_path, run_cli, capsys):
    """A real kill of a training process; the rerun with --ckpt_path last continues where it stopped."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    args = ["fit", "--config", SR, *TINY_SR, "--trainer.limit_val_batches=0", "--checkpoint.monitor=null",
            "--checkpoint.every_n_train_steps=2"]
    command = [sys.executable, str(root / "train.py"), *(str(root / a) if a == SR else a for a in args)]
    proc = subprocess.Popen([*command, "--trainer.max_steps=-1", "--trainer.max_epochs=200"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "runs" / "sr_default" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not (last.exists() and torch.load(last, weights_only=True)["global_step"] >= 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved_step = torch.load(last, weights_only=True)["global_step"]  # intact after the kill
    assert saved_step >= 4
    resumed = run_cli(*args, f"--trainer.max_steps={saved_step + 2}", "--ckpt_path=last")
    assert "Resuming from runs/sr_default/version_0/checkpoints/last.ckpt" in capsys.readouterr().out
    assert resumed.trainer.global_step == saved_step + 2
    assert torch.load(last, weights_only=True)["global_step"] == saved_step + 2


def test_nan_loss_stops_with_step_and_term_and_keeps_last_checkpoint(run_cli, tmp_path, monkeypatch):
    from networks.rrdbnet import RRDBNet

    run_cli("fit", "--config", SR, *TINY_SR, "--trainer.max_steps=2", "--trainer.limit_val_batches=0")
    last = tmp_path / "runs" / "sr_default" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    original = RRDBNet.forward
    monkeypatch.setattr(RRDBNet, "forward", lambda self, x: original(self, x) * float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at global step 2 .*term\(s\) \['pixel'\]"):
        run_cli("fit", "--config", SR, *TINY_SR, "--trainer.max_steps=6", "--trainer.limit_val_batches=0", "--ckpt_path=last")
    assert last.read_bytes() == before, "the last good checkpoint must stay as it was"


def test_checkpoint_write_interrupted_midway_leaves_previous_file_intact(run_cli, tmp_path, monkeypatch):
    cli = run_cli("fit", "--config", SR, *TINY_SR, "--trainer.max_steps=2", "--trainer.limit_val_batches=0")
    folder = tmp_path / "runs" / "sr_default" / "version_0" / "checkpoints"
    last = folder / "last.ckpt"
    before = last.read_bytes()
    real_save = torch.save

    def write_half_then_die(obj, file):
        file.write(b"x" * 1000)
        raise KeyboardInterrupt("killed during checkpoint write")

    monkeypatch.setattr(torch, "save", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        cli.trainer.save_checkpoint(last)
    assert last.read_bytes() == before
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert not list(folder.glob(".*partial*")), "an interrupted save cleans up its partial file"
    # A kill -9 leaves its partial file next to the target (never in /tmp); the next save removes it.
    monkeypatch.setattr(torch, "save", real_save)
    stale = folder / ".last.ckpt.partial-99999"
    stale.write_bytes(b"half a checkpoint")
    cli.trainer.save_checkpoint(last)
    assert not stale.exists() and torch.load(last, weights_only=True)["global_step"] == 2


def test_sr_ddp_matches_one_process(run_cli, tmp_path):
    """2-process gloo DDP on the BatchNorm-free RRDBNet.

    Training: 2 ranks x batch 2 give the same weights as 1 process x batch 4 after 3 optimizer
    steps (the single process shuffles with the same (seed + epoch) permutation that Lightning's
    DistributedSampler splits between the ranks; plain SGD, because Adam divides by the gradient's
    magnitude and turns float rounding in nearly-zero gradients into full-size update differences).
    Validation: metrics reduced across the 2 ranks equal the single-process ones.
    """
    from PIL import Image

    from datamodules.embedded import SKIMAGE_DATA

    val = tmp_path / "val"
    val.mkdir()
    for name in ("chelsea.png", "coffee.png"):  # an even count: no padded duplicates across ranks
        Image.open(SKIMAGE_DATA / name).convert("RGB").crop((0, 0, 96, 80)).save(val / name)
    common = ["--config", SR, *TINY_SR, f"--data.init_args.val_dir={val}", "--trainer.limit_val_batches=null",
              "--data.init_args.repeats=8", "--trainer.max_steps=3", "--trainer.val_check_interval=null",
              "--model.init_args.optimizer=torch.optim.SGD", "--model.init_args.optimizer.init_args.lr=0.05"]
    # 2 ranks forked from this process (ddp_fork: the same strategy as ddp without re-importing
    # everything; the GAN DDP test launches `train.py` with ddp as users do).
    fork_args = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_fork"]
    run_cli("fit", *common, *fork_args, "--data.init_args.batch_size=2", "--trainer.logger.init_args.name=ddp")
    run_cli("fit", *common, "--data.init_args.batch_size=4", "--trainer.logger.init_args.name=single")
    load = lambda name: torch.load(tmp_path / "runs" / name / "version_0/checkpoints/last.ckpt", weights_only=True)
    ddp, single = load("ddp"), load("single")
    assert ddp["global_step"] == single["global_step"] == 3
    for key, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][key], value, rtol=0, atol=1e-5, msg=key)

    ckpt = f"--ckpt_path={tmp_path / 'runs/ddp/version_0/checkpoints/last.ckpt'}"
    ddp_val = run_cli("validate", *common, *fork_args, ckpt, "--trainer.logger=false")
    single_val = run_cli("validate", *common, ckpt, "--trainer.logger=false")
    for name in ("val/psnr_y", "val/ssim_y", "val/psnr_rgb", "val/bicubic_psnr_y"):
        assert ddp_val.trainer.callback_metrics[name].item() == pytest.approx(single_val.trainer.callback_metrics[name].item(), abs=1e-6)


def test_sync_batchnorm_on_cpu_is_refused_with_the_option_named(run_cli):
    with pytest.raises(ValueError, match="trainer.sync_batchnorm=true needs GPUs"):
        run_cli("fit", "--config", SR, *TINY_SR, "--trainer.accelerator=cpu", "--trainer.sync_batchnorm=true", "--trainer.max_steps=1")
