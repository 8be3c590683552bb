"""A wall-time budget for runs without ``trainer.max_steps``: the step count fits the machine.

A demo that promises "ten minutes on a laptop" cannot fix its step count: CPUs differ several
times in speed, and a shared machine's speed drifts during a run. :class:`TimeBudget` times the
training batches and plans, then keeps re-planning, how many batches fit the budget; the
validations and the learning-rate schedule follow the plan, so the run ends on time with its
schedule completed.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_modules.schedules import set_length

_NEVER = 10**12  # a batch count no run reaches


class TimeBudget(Callback):
    """Train for ``minutes`` of wall time (``--budget.minutes``), whatever the machine's speed.

    Active only when ``minutes`` is set and the run gives no ``trainer.max_steps``: a run with
    ``max_steps`` keeps its exact step-based behaviour. After ``warmup_steps`` untimed and
    ``calibration_steps`` timed batches it plans the number of batches that end fit within the
    budget (less ``margin``), from the median time of the recent batches, the validation time
    and the time already spent; every ``replan_every`` of the plan it plans again with the
    latest timings (a shared machine's speed can drift within minutes). Following the
    plan:

    * ``max_steps`` is the planned batches' optimizer steps (2 per batch for a GAN);
    * validation runs ``validations`` times, at even fractions of the plan, the last one at the
      final step;
    * step-interval schedulers with a length (cosine ``T_max``, linear, polynomial and constant
      ``total_iters``) span the planned batches: a new plan sets the learning rate to the new
      schedule's value at the current step.

    Under DDP every rank follows rank 0's timing. If training still runs over the budget by
    ``overrun`` at a re-planning point, it stops early and says so. The plan is saved in
    checkpoints; a resumed run continues it and re-plans for the time left. Runs under a budget
    depend on the machine's speed, so they are not step-for-step reproducible: give
    ``max_steps`` for that.
    """

    def __init__(
        self,
        minutes: float | None = None,
        validations: int = 4,
        warmup_steps: int = 10,
        calibration_steps: int = 40,
        replan_every: float = 0.05,
        margin: float = 0.03,
        overrun: float = 0.15,
    ):
        if minutes is not None and minutes <= 0:
            raise ValueError(f"budget.minutes must be positive, got {minutes}")
        if validations < 1:
            raise ValueError(f"budget.validations must be at least 1, got {validations}")
        self.minutes, self.validations = minutes, validations
        self.warmup_steps, self.calibration_steps = warmup_steps, calibration_steps
        self.replan_every, self.margin, self.overrun = replan_every, margin, overrun
        self.plan: dict[str, Any] | None = None  # saved in checkpoints
        self.active = False
        self._spent_before = 0.0  # seconds of budget used before a resume
        self._fit_start = 0.0
        self._times: deque[float] = deque(maxlen=max(calibration_steps, 20))
        self._last_end: float | None = None
        self._val_start = 0.0
        self._val_seconds: float | None = None
        self._next_replan = 0
        self._seen = 0

    @property
    def _budget_seconds(self) -> float:
        return self.minutes * 60

    def _spent(self) -> float:
        return self._spent_before + time.monotonic() - self._fit_start

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.monotonic()
        self.active = self.minutes is not None and trainer.max_steps == -1
        if self.minutes is not None and not self.active:
            rank_zero_info(f"budget: trainer.max_steps={trainer.max_steps} given, so budget.minutes is not used")
        if not self.active:
            return
        trainer.fit_loop.max_epochs = -1
        trainer.check_val_every_n_epoch = None  # validation counts batches across epochs
        trainer.fit_loop.epoch_loop.max_steps = self.plan["max_steps"] if self.plan else _NEVER
        if self.plan:
            rank_zero_info(f"budget: resuming the plan of {self.plan['batches']} batches; re-planning for the time left")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.active:
            trainer.val_check_batch = _NEVER  # this callback says when to validate

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_start = time.monotonic()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = time.monotonic() - self._val_start
        if trainer.sanity_checking:  # a few batches: scale to the whole validation set
            done = sum(int(n) for n in trainer.num_sanity_val_batches)
            total = sum(int(n) for n in trainer.num_val_batches if n != float("inf"))
            seconds = seconds * total / done if done else 0.0
        self._val_seconds = seconds
        self._last_end = time.monotonic()  # the next batch's time excludes the validation
        if self.active and self.plan is not None and not trainer.sanity_checking:
            self.plan["validations_done"] += 1

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.active:
            return
        now = time.monotonic()
        done = trainer.fit_loop.epoch_loop.total_batch_idx + 1
        self._seen += 1  # batches of this process: a resumed run warms up again
        if self._last_end is not None and self._seen > self.warmup_steps:
            self._times.append(now - self._last_end)  # loading + step, not validation
        self._last_end = now
        timed = len(self._times) >= self.calibration_steps
        if timed and (self.plan is None or self._next_replan <= done < self.plan["batches"]):
            self._make_plan(trainer, done)
        if self.plan is None:
            return
        batches = self.plan["batches"]
        next_due = round(batches * (self.plan["validations_done"] + 1) / self.validations)
        trainer.val_check_batch = done if done >= min(next_due, batches) else _NEVER

    def _make_plan(self, trainer: Trainer, done: int) -> None:
        times = sorted(self._times)
        batch_seconds, val_seconds, spent = trainer.strategy.broadcast(
            (times[len(times) // 2], self._val_seconds or 0.0, self._spent())
        )
        if self.plan is not None and spent > self._budget_seconds * (1 + self.overrun):  # same on every rank
            rank_zero_warn(
                f"budget: {spent / 60:.1f} min spent, over budget.minutes={self.minutes:g} by more than "
                f"{self.overrun:.0%}: stopping at step {trainer.global_step} of {self.plan['max_steps']}"
            )
            trainer.should_stop = True
            return
        first = self.plan is None
        validations_left = self.validations - (0 if first else self.plan["validations_done"])
        left = self._budget_seconds * (1 - self.margin) - spent - validations_left * val_seconds
        batches = max(done, done + int(left / batch_seconds))
        steps_per_batch = trainer.global_step / done  # optimizer steps: 2 per batch for a GAN's D + G
        if first:
            self.plan = {"first_batches": batches, "first_ms_per_batch": 1000 * batch_seconds, "validations_done": 0}
        self.plan |= {"batches": batches, "max_steps": round(batches * steps_per_batch), "ms_per_batch": 1000 * batch_seconds}
        self._next_replan = done + max(10, int(self.replan_every * batches))
        trainer.fit_loop.epoch_loop.max_steps = self.plan["max_steps"]
        resized = _resize_schedules(trainer, batches, done)
        if first:
            rank_zero_info(
                f"budget: {self.minutes:g} min for fit; a training batch takes {1000 * batch_seconds:.0f} ms on this "
                f"machine now and a validation {val_seconds:.1f} s, so this run plans {batches} batches = "
                f"{self.plan['max_steps']} optimizer steps with {self.validations} validations{resized}, and "
                "re-plans as the speed changes. Give --trainer.max_steps for a fixed step count."
            )

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.active and self.plan is not None:
            plan = self.plan
            rank_zero_info(
                f"budget: trained {trainer.global_step} optimizer steps in {self._spent() / 60:.1f} min "
                f"(budget.minutes={self.minutes:g}); first plan {plan['first_batches']} batches at "
                f"{plan['first_ms_per_batch']:.0f} ms, last plan {plan['batches']} at {plan['ms_per_batch']:.0f} ms"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "spent_seconds": self._spent() if self._fit_start else self._spent_before}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.plan = state_dict.get("plan")
        self._spent_before = float(state_dict.get("spent_seconds", 0.0))


def _resize_schedules(trainer: Trainer, batches: int, done: int) -> str:
    """Give every step-interval scheduler the planned length; returns a note for the plan's message."""
    notes = []
    for config in trainer.lr_scheduler_configs:
        if config.interval != "step":
            continue
        scheduler = config.scheduler
        length = round(batches * scheduler.last_epoch / done)  # its steps per batch so far, over the plan
        attribute = set_length(scheduler, length)
        if attribute is None:
            rank_zero_warn(f"budget: {type(scheduler).__name__} has no known length to fit to the plan; it runs as configured")
        else:
            notes.append(f"{type(scheduler).__name__}.{attribute}={length}")
    return f" ({', '.join(notes)})" if notes else ""
