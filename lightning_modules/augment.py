"""Differentiable augmentation of what the discriminator sees: DiffAugment, optionally with ADA's
adaptive probability.

DiffAugment (Zhao et al., 2020) augments real and generated images alike, in the discriminator
step and in the generator step, with transformations the gradient flows through, so that a
discriminator trained on few images cannot memorise them while the generator still learns the
un-augmented distribution. ADA (Karras et al., 2020) applies each transformation with a
probability ``p`` that rises while the discriminator is overconfident on reals
(``r_t = E[sign(D(real))]`` above the target) and falls otherwise.

Translation comes from kornia (zero padding). Cutout and colour are DiffAugment's own: its cutout
square is centred anywhere in the image and clipped at the border (kornia's ``RandomErasing``
keeps the whole square inside, so it would always blank a full quarter of the image, mostly its
centre); its colour changes (brightness, saturation, contrast about the image mean) work on [-1, 1]
images, where kornia's colour adjustments expect [0, 1] and clamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import kornia.augmentation as K
import torch
from torch import Tensor, nn

Operation = Literal["color", "translation", "cutout"]


class DiffAugment(nn.Module):
    """DiffAugment's ``color,translation,cutout`` policy on discriminator inputs (N, C, H, W).

    Args:
        policy: the transformations, applied in this order.
        probability: chance that each transformation is applied to a sample; ``None``: 1 as in
            DiffAugment, or with ``ada_target`` ADA's starting value 0, as in the paper.
        ada_target: ADA's target for ``r_t`` (paper: 0.6); ``None`` keeps ``probability`` fixed.
        ada_interval: discriminator steps between two adjustments of ``p``.
        ada_kimg: images of discriminator input over which ``p`` can move from 0 to 1 (paper: 500k).
        translation_ratio / cutout_ratio: the largest shift and the cutout side, as a fraction of
            the image side (DiffAugment: 1/8 and 1/2).
        color_channels: the leading channels that hold colour (the rest, e.g. an inpainting mask,
            get only the geometric transformations); ``None`` = all.
    """

    def __init__(
        self,
        policy: Sequence[Operation] = ("color", "translation", "cutout"),
        probability: float | None = None,
        ada_target: float | None = None,
        ada_interval: int = 4,
        ada_kimg: float = 500.0,
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        color_channels: int | None = None,
    ):
        super().__init__()
        unknown = set(policy) - {"color", "translation", "cutout"}
        if unknown:
            raise ValueError(f"unknown DiffAugment operation(s) {sorted(unknown)}; choose from color, translation, cutout")
        if probability is None:
            probability = 0.0 if ada_target is not None else 1.0
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        self.policy, self.probability = tuple(policy), probability
        self.ada_target, self.ada_interval, self.ada_kimg = ada_target, ada_interval, ada_kimg
        self.color_channels = color_channels
        self.translation = K.RandomAffine(
            degrees=0.0, translate=(translation_ratio, translation_ratio), resample="nearest", padding_mode="zeros"
        )
        self.cutout_ratio = cutout_ratio
        # In the checkpoint, so that a resumed ADA run continues with the same p.
        self.register_buffer("p", torch.tensor(float(probability)))
        self.register_buffer("_signs", torch.zeros(2))  # sum of sign(D(real)), count, since the last adjustment

    def forward(self, images: Tensor) -> Tensor:
        p = float(self.p) if self.ada_target is not None else self.probability  # no device sync without ADA
        if p == 0.0:
            return images
        for operation in self.policy:
            if operation == "color":
                images = self._color(images, p)
            elif operation == "cutout":
                images = self._cutout(images, p)
            else:
                self.translation.p = p
                images = self.translation(images)
        return images

    def _cutout(self, images: Tensor, p: float) -> Tensor:
        """Zero a square of side ``cutout_ratio`` x the image side, centred on a uniformly drawn
        pixel and clipped at the border, as DiffAugment's ``rand_cutout``."""
        n, _, height, width = images.shape
        device = images.device

        def covered(size: int) -> Tensor:
            side = int(size * self.cutout_ratio + 0.5)
            start = torch.randint(0, size + 1 - side % 2, (n, 1), device=device) - side // 2
            index = torch.arange(size, device=device)
            return (index >= start) & (index < start + side)  # (n, size)

        rows, columns = covered(height), covered(width)
        applied = torch.rand(n, 1, 1, device=device) < p
        hole = rows[:, :, None] & columns[:, None, :] & applied
        return images * (~hole).unsqueeze(1).to(images.dtype)

    def _color(self, images: Tensor, p: float) -> Tensor:
        count = images.shape[1] if self.color_channels is None else self.color_channels
        color, rest = images[:, :count], images[:, count:]
        n = len(images)

        def factor(low: float, high: float) -> Tensor:
            values = torch.empty(n, 1, 1, 1, device=images.device, dtype=images.dtype).uniform_(low, high)
            keep = torch.rand(n, 1, 1, 1, device=images.device) >= p  # samples this step leaves alone
            return torch.where(keep, torch.full_like(values, (low + high) / 2), values)

        color = color + factor(-0.5, 0.5)  # brightness (0 = unchanged)
        mean = color.mean(dim=1, keepdim=True)
        color = (color - mean) * factor(0.0, 2.0) + mean  # saturation (1 = unchanged)
        mean = color.mean(dim=(1, 2, 3), keepdim=True)
        color = (color - mean) * factor(0.5, 1.5) + mean  # contrast (1 = unchanged)
        return torch.cat([color, rest], dim=1)

    @torch.no_grad()
    def observe(self, real_logits: Tensor, batch_size: int) -> None:
        """ADA's overfitting heuristic from one discriminator step on reals; adjusts ``p`` every
        ``ada_interval`` steps by at most ``batch_size * ada_interval / (ada_kimg * 1000)``."""
        if self.ada_target is None:
            return
        self._signs += torch.stack([real_logits.sign().mean(), torch.ones((), device=real_logits.device)])
        if self._signs[1] >= self.ada_interval:
            r_t = self._signs[0] / self._signs[1]
            step = batch_size * self.ada_interval / (self.ada_kimg * 1000)
            self.p.copy_((self.p + torch.sign(r_t - self.ada_target) * step).clamp(0.0, 1.0))
            self._signs.zero_()
