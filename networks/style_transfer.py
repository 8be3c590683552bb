"""The image transformation network of fast neural style transfer (Johnson et al., 2016).

Three convolutions down (9x9 stride 1, 3x3 stride 2, 3x3 stride 2), residual blocks, two
up-sampling stages and a 9x9 convolution back to RGB; instance norm (Ulyanov et al.: better
stylisation than the paper's batch norm) and reflection padding (no dark borders). Up-sampling is
a nearest-neighbour resize followed by a convolution rather than a transposed convolution, which
avoids checkerboard artefacts (Odena et al., 2016). Input and output are RGB in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Reflection padding (same size at stride 1) then a convolution."""
    return nn.Sequential(nn.ReflectionPad2d(kernel_size // 2), nn.Conv2d(in_channels, out_channels, kernel_size, stride))


def conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(in_channels, out_channels, kernel_size, stride),
                         nn.InstanceNorm2d(out_channels, affine=True), nn.ReLU())


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance norm layers (ReLU between them) added to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_norm_relu(channels, channels, 3), conv(channels, channels, 3),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 resize, then conv + instance norm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = conv_norm_relu(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformerNet(nn.Module):
    """[0, 1] RGB image of any size from 8x8 up -> stylised image of the same size, in [0, 1].

    Sizes that are not a multiple of 4 (the two stride-2 convolutions) are reflection-padded to one
    and cropped back.

    Args:
        base_channels: width of the first convolution; the next two have 2x and 4x (paper: 32).
        num_residual: residual blocks at 1/4 resolution (paper: 5).
    """

    multiple = 4

    def __init__(self, base_channels: int = 32, num_residual: int = 5):
        super().__init__()
        c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
        self.net = nn.Sequential(
            conv_norm_relu(3, c1, 9), conv_norm_relu(c1, c2, 3, stride=2), conv_norm_relu(c2, c3, 3, stride=2),
            *(ResidualBlock(c3) for _ in range(num_residual)),
            Upsample(c3, c2), Upsample(c2, c1), conv(c1, 3, 9), nn.Sigmoid(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect")
        return self.net(images)[..., :height, :width]
