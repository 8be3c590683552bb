"""Non-finite checks shared by every task: a NaN or infinite loss stops the run, naming the term."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import Tensor


def checked_sum(module: LightningModule, terms: dict[str, Tensor], what: str = "training", hint: str = "") -> Tensor:
    """Sum of the loss terms; a non-finite sum raises ``FloatingPointError`` naming the step and the terms."""
    total = sum(terms.values())
    if not torch.isfinite(total):
        values = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
        bad = [name for name, value in terms.items() if not torch.isfinite(value)]
        raise FloatingPointError(
            f"non-finite {what} loss at global step {module.global_step} (epoch {module.current_epoch}): "
            f"term(s) {bad or ['sum']} ({values}); {hint or 'lower the learning rate'}"
        )
    return total


def non_finite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers of ``module`` that hold NaN or inf."""
    named = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in named if t.is_floating_point() and not torch.isfinite(t).all()]
