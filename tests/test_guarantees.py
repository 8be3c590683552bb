"""The README's run guarantees for every task: newest last.ckpt, exact resume with the sanity check
on, no checkpoint with NaNs, checkpoint loading errors that say what is wrong, predict that loses
nothing."""

import argparse
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules.embedded import SKIMAGE_DATA
from tiny_configs import SR_TINY, TASKS

SR = [TASKS["sr"][0], *SR_TINY]


def _sr_checkpoint(run_cli, tmp_path) -> Path:
    run_cli("fit", "--config", *SR, "--trainer.max_steps=2", "--trainer.val_check_interval=2")
    return tmp_path / "runs/sr_default/version_0/checkpoints/last.ckpt"


def test_last_checkpoint_is_the_newest_state_when_the_monitored_metric_stops_improving(run_cli, tmp_path):
    # bicubic's PSNR never changes, so only the first validation makes a best-* checkpoint
    run_cli("fit", "--config", *SR, "--trainer.max_steps=8", "--trainer.val_check_interval=2",
            "--checkpoint.monitor=val/bicubic_psnr_y", "--checkpoint.mode=max")
    folder = tmp_path / "runs/sr_default/version_0/checkpoints"
    assert [p.name for p in folder.glob("best-*.ckpt")] == ["best-000-000002.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 8


def test_last_checkpoint_every_n_steps(run_cli, tmp_path, monkeypatch):
    from lightning_modules.callbacks import RunCheckpoint

    written = []
    original = RunCheckpoint._save_last_checkpoint
    monkeypatch.setattr(RunCheckpoint, "_save_last_checkpoint", lambda self, trainer, c: (written.append(trainer.global_step), original(self, trainer, c)))
    run_cli("fit", "--config", *SR, "--trainer.max_steps=6", "--trainer.limit_val_batches=0",
            "--checkpoint.monitor=null", "--checkpoint.last_every_n_steps=2")
    assert written[:3] == [2, 4, 6]


def test_weights_only_false_is_honoured_and_other_files_are_named(run_cli, tmp_path):
    checkpoint = _sr_checkpoint(run_cli, tmp_path)
    with_object = tmp_path / "with_object.ckpt"
    content = torch.load(checkpoint, weights_only=True)
    content["note"] = argparse.Namespace(origin="a trusted run")  # not a tensor or plain container
    torch.save(content, with_object)
    with pytest.raises(ValueError, match="pass --weights_only=false"):
        run_cli("validate", "--config", *SR, f"--ckpt_path={with_object}")
    validated = run_cli("validate", "--config", *SR, f"--ckpt_path={with_object}", "--weights_only=false")
    assert "val/psnr_y" in validated.trainer.callback_metrics

    picture = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(picture)
    with pytest.raises(ValueError, match=r"photo.png is not a checkpoint"):
        run_cli("validate", "--config", *SR, f"--ckpt_path={picture}")

    vae_config, _, vae_tiny = TASKS["vae"]
    with pytest.raises(ValueError, match=r"is a checkpoint of lightning_modules\.super_resolution\.SuperResolutionModule, "
                                         r"but this run's model is lightning_modules\.vae\.VAEModule"):
        run_cli("validate", "--config", vae_config, *vae_tiny, f"--ckpt_path={checkpoint}")


def test_vae_stops_on_a_non_finite_loss_and_no_checkpoint_holds_nans(run_cli, tmp_path):
    config, _, tiny = TASKS["vae"]
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at global step \d+ .*term\(s\)"):
        run_cli("fit", "--config", config, *tiny, "--model.init_args.optimizer.init_args.lr=1e6",
                "--trainer.max_epochs=3", "--trainer.limit_train_batches=8", "--progress_bar.refresh_rate=0")
    for path in tmp_path.glob("runs/**/*.ckpt"):
        for name, value in torch.load(path, weights_only=True)["state_dict"].items():
            assert not value.is_floating_point() or torch.isfinite(value).all(), f"{path.name}: {name}"


def test_a_module_with_nan_weights_is_never_saved(run_cli, tmp_path):
    cli = run_cli("fit", "--config", *SR, "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--checkpoint.monitor=null")
    last = tmp_path / "runs/sr_default/version_0/checkpoints/last.ckpt"
    before = last.read_bytes()
    with torch.no_grad():
        next(cli.model.generator.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite values at global step 2 in generator"):
        cli.trainer.checkpoint_callback._save_checkpoint(cli.trainer, str(last))
    assert last.read_bytes() == before


# gan+ada: the GAN with DiffAugment and an adaptive probability, whose random draws and p must resume too.
ADA = ["--model.init_args.augment=lightning_modules.augment.DiffAugment", "--model.init_args.augment.init_args.ada_target=0.6",
       "--model.init_args.augment.init_args.ada_interval=1", "--model.init_args.augment.init_args.ada_kimg=0.1"]


# The plain GAN's resume (with FID statistics) is tests/test_gan.py's; the SR default's, test_runs.py's.
@pytest.mark.parametrize("task", ["gan+ada", "vae", "inpainting", "segmentation", "esrgan", "realesrnet", "translation", "style"])
def test_resume_at_an_epoch_boundary_is_exact_with_the_sanity_check_on(run_cli, task):
    """2 epochs in one run == the same run stopped after epoch 1, then ``--ckpt_path last``. No
    validation but the sanity checks, so the resumed run's sanity check is an evaluation the
    uninterrupted run does not make: it must leave the training state alone."""
    config, _, tiny = TASKS[task.removesuffix("+ada")]
    tiny = [*tiny, *ADA] if task.endswith("+ada") else tiny
    common = ["--config", config, *tiny, "--trainer.max_steps=-1", "--trainer.limit_train_batches=2",
              "--trainer.val_check_interval=null", "--trainer.check_val_every_n_epoch=3", "--trainer.limit_val_batches=1",
              "--trainer.num_sanity_val_steps=1", "--progress_bar.refresh_rate=0", "--trainer.enable_model_summary=false",
              "--budget.minutes=null", "--auto_bf16=false"]
    if task == "esrgan":
        common.append("--model.init_args.lpips=disabled")
    full = run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=full")
    run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=split",
            "--trainer.callbacks=tiny_configs.StopAfterEpochs")
    resumed = run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=split", "--ckpt_path=last")
    assert resumed.trainer.global_step == full.trainer.global_step > 0
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    different = [name for name, value in full_state.items() if not torch.equal(resumed_state[name], value)]
    assert not different, f"{len(different)} of {len(full_state)} tensors differ: {different[:5]}"


def _inputs(folder: Path, *names: str) -> Path:
    folder.mkdir()
    photo = Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB").crop((0, 0, 32, 24))
    for name in names:
        photo.save(folder / name)
    return folder


def test_predict_refuses_inputs_that_would_write_one_output(run_cli, tmp_path):
    checkpoint = _sr_checkpoint(run_cli, tmp_path)
    inputs, out = _inputs(tmp_path / "inputs", "x.png", "x.jpg", "y.png"), tmp_path / "out"
    with pytest.raises(ValueError, match=r"x\.jpg, .*x\.png -> x"):
        run_cli("predict", "--config", *SR, f"--ckpt_path={checkpoint}", f"--data.init_args.predict_path={inputs}",
                f"--predict_writer.output_dir={out}")
    assert not list(out.rglob("*.png")), "nothing may be written"


def test_predict_checks_every_input_before_writing(run_cli, tmp_path):
    checkpoint = _sr_checkpoint(run_cli, tmp_path)
    inputs, out = _inputs(tmp_path / "inputs", "a.png", "c.png"), tmp_path / "out"
    (inputs / "b.png").write_bytes((inputs / "a.png").read_bytes()[:60])  # truncated
    with pytest.raises(ValueError, match=r"1 of 3 input image\(s\) cannot be read, nothing was written: .*b\.png"):
        run_cli("predict", "--config", *SR, f"--ckpt_path={checkpoint}", f"--data.init_args.predict_path={inputs}",
                f"--predict_writer.output_dir={out}")
    assert not out.exists() or not list(out.rglob("*.png"))

    (inputs / "b.png").unlink()
    blocked = tmp_path / "file"
    blocked.write_text("a file where the output folder should go")
    with pytest.raises(OSError, match=r"--predict_writer.output_dir .*cannot create the output folder"):
        run_cli("predict", "--config", *SR, f"--ckpt_path={checkpoint}", f"--data.init_args.predict_path={inputs}",
                f"--predict_writer.output_dir={blocked / 'out'}")

    runs_before = sorted(p.name for p in (tmp_path / "runs/sr_default").iterdir())
    run_cli("predict", "--config", *SR, f"--ckpt_path={checkpoint}", f"--data.init_args.predict_path={inputs}",
            f"--predict_writer.output_dir={out}")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert sorted(p.name for p in (tmp_path / "runs/sr_default").iterdir()) == runs_before, "predict makes no run folder"
