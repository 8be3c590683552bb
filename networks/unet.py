"""U-Net (Ronneberger et al., 2015) with batch norm; depth and widths come from the config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU layers (the U-Net's unit at every level)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Upsample x2, concatenate the skip connection, then a conv block."""

    def __init__(self, in_channels: int, out_channels: int, mode: Literal["bilinear", "transpose"], dropout: float):
        super().__init__()
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, kernel_size=1),
            )
        self.block = conv_block(2 * out_channels, out_channels, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """Encoder-decoder with skip connections; returns (N, num_classes, H, W) logits.

    ``widths`` lists the channels per level, so ``len(widths) - 1`` is the number of 2x
    downsamplings (the depth). Inputs of any size work: they are padded (replicate) to a
    multiple of ``2 ** depth`` and the logits are cropped back.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        upsample: Literal["bilinear", "transpose"] = "bilinear",
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least two levels, got {list(widths)}")
        self.stem = conv_block(in_channels, widths[0], dropout)
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), conv_block(widths[i - 1], widths[i], dropout)) for i in range(1, len(widths))
        )
        self.up = nn.ModuleList(
            Up(widths[i], widths[i - 1], upsample, dropout) for i in reversed(range(1, len(widths)))
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        self.multiple = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)[..., :height, :width]
