"""The wall-time budget of the default job, the step-based progress bar and auto_bf16."""

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_modules import budget
from lightning_modules.gan import GANModule
from lightning_modules.super_resolution import SuperResolutionModule
from tiny_configs import SR_TINY, TASKS

ROOT = Path(__file__).resolve().parents[1]
SR = "configs/sr/default.yaml"
TINY_SR = [*SR_TINY, "--budget.warmup_steps=2", "--budget.calibration_steps=6"]


def _budget(cli):
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == "TimeBudget")


class VirtualClock:
    """The budget's clock: real time plus ``seconds_per_batch`` for every training batch of
    ``module``. A budget of half a minute is then spent in a few real seconds, on a fast or a slow
    CPU alike, and "a machine three times slower per step" is a number."""

    def __init__(self, monkeypatch, module, seconds_per_batch: float):
        self.offset, self.seconds_per_batch = 0.0, seconds_per_batch
        monkeypatch.setattr(budget, "time", SimpleNamespace(monotonic=self.monotonic))
        original = module.training_step

        def training_step(model, batch, batch_idx):
            self.offset += self.seconds_per_batch
            return original(model, batch, batch_idx)

        monkeypatch.setattr(module, "training_step", training_step)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


def test_budget_fits_the_step_count_to_the_machine(run_cli, monkeypatch):
    """A machine that is slower per step trains fewer steps in the same budget, and both end in time."""
    minutes = 0.5
    clock = VirtualClock(monkeypatch, SuperResolutionModule, 0.5)
    fast = run_cli("fit", "--config", SR, *TINY_SR, f"--budget.minutes={minutes}", "--trainer.logger.init_args.name=fast")
    plan = _budget(fast).plan
    assert fast.trainer.global_step == plan["max_steps"] == plan["batches"] > 2 + 6  # more than it timed
    assert plan["validations_done"] == 4, "4 validations, the last at the final step"
    assert fast.trainer.callback_metrics["val/psnr_y"] is not None
    scheduler = fast.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_iters == plan["batches"], "the schedule spans the planned steps"
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-9), "and has decayed to 0 at the end"
    assert minutes * 60 * 0.9 < _budget(fast)._spent() < minutes * 60 * 1.05, "the budget is used, not overrun"

    clock.seconds_per_batch = 1.5
    slow = run_cli("fit", "--config", SR, *TINY_SR, f"--budget.minutes={minutes}", "--trainer.logger.init_args.name=slow")
    slow_plan = _budget(slow).plan
    assert slow_plan["first_ms_per_batch"] > plan["first_ms_per_batch"] + 800
    assert slow.trainer.global_step == slow_plan["max_steps"] < 0.5 * plan["max_steps"]
    assert _budget(slow)._spent() < minutes * 60 * 1.05


def test_explicit_max_steps_ignores_the_budget(run_cli):
    cli = run_cli("fit", "--config", SR, *TINY_SR, "--budget.minutes=0.05", "--trainer.max_steps=3")
    assert cli.trainer.global_step == 3
    assert _budget(cli).plan is None
    assert cli.trainer.lr_scheduler_configs[0].scheduler.total_iters == 3, "length 0 spans the given max_steps, no plan"


def test_resume_continues_the_plan(run_cli, tmp_path, monkeypatch):
    VirtualClock(monkeypatch, SuperResolutionModule, 0.5)
    args = ["fit", "--config", SR, *TINY_SR, "--budget.minutes=0.3", "--checkpoint.save_top_k=-1"]
    full = run_cli(*args)
    plan = _budget(full).plan
    earliest = min((tmp_path / "runs/sr_default/version_0/checkpoints").glob("best-*.ckpt"))
    saved = torch.load(earliest, weights_only=True)
    assert saved["global_step"] < plan["max_steps"] and saved["callbacks"]["TimeBudget"]["spent_seconds"] > 0
    resumed = run_cli(*args, f"--ckpt_path={earliest}")
    resumed_plan = _budget(resumed).plan
    assert resumed_plan["first_batches"] == plan["first_batches"], "no new calibration"
    assert resumed.trainer.global_step == resumed_plan["max_steps"]
    assert resumed.trainer.lr_scheduler_configs[0].scheduler.total_iters == resumed_plan["batches"]


def test_step_based_progress_bar_counts_steps_not_epochs(run_cli):
    cli = run_cli("fit", "--config", SR, *TINY_SR, "--trainer.max_steps=6", "--progress_bar.refresh_rate=1")
    bar = cli.trainer.progress_bar_callback
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert task.total == 6 and task.completed == 6
    assert "/-" not in task.description and "steps" in task.description


def test_progress_bar_can_be_switched_off(run_cli):
    cli = run_cli("fit", "--config", SR, *TINY_SR, "--trainer.max_steps=2", "--trainer.enable_progress_bar=false")
    assert cli.trainer.progress_bar_callback is None and cli.trainer.global_step == 2


@pytest.mark.parametrize("native", [True, False])
def test_auto_bf16_only_where_bfloat16_is_native(tmp_path, monkeypatch, native):
    """The precision is settled when the trainer is built: the CLI without a subcommand builds it and stops."""
    import train

    monkeypatch.setattr(train, "native_bf16", lambda trainer_config: native)
    monkeypatch.chdir(tmp_path)
    config = str(ROOT / SR)
    cli = train.cli_main(["--config", config, *TINY_SR, "--auto_bf16=true"], run=False)
    assert cli.trainer.precision == ("bf16-mixed" if native else "32-true")
    explicit = train.cli_main(["--config", config, *TINY_SR, "--auto_bf16=true", "--trainer.precision=32-true"], run=False)
    assert explicit.trainer.precision == "32-true", "an explicit precision is kept"


def test_budget_counts_both_optimizer_steps_of_a_gan(run_cli, monkeypatch):
    VirtualClock(monkeypatch, GANModule, 0.5)
    config, _, tiny = TASKS["gan"]
    cli = run_cli("fit", "--config", config, *tiny, "--trainer.max_steps=-1", "--budget.minutes=0.2",
                  "--budget.warmup_steps=2", "--budget.calibration_steps=6", "--progress_bar.refresh_rate=0",
                  "--trainer.enable_model_summary=false")
    plan = _budget(cli).plan
    assert cli.trainer.global_step == plan["max_steps"] == 2 * plan["batches"]
    for config in cli.trainer.lr_scheduler_configs:  # LinearLR, stepped after every step of its optimizer
        assert config.scheduler.total_iters == plan["batches"]
