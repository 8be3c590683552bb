"""ResNet generator and spectrally normalised discriminator of SNGAN (Miyato et al., 2018).

The CIFAR-10 architecture (also Mimicry's reference): the generator maps a latent through a
4x4 linear projection and upsampling residual blocks; the discriminator uses downsampling
residual blocks, two blocks at 8x8, ReLU, global sum pooling and a linear head, with spectral
norm on every layer. Other power-of-two sizes add or remove resolution blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _xavier(layer: nn.Conv2d | nn.Linear, gain: float = 1.0) -> nn.Conv2d | nn.Linear:
    nn.init.xavier_uniform_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _log2_size(image_size: int) -> int:
    log2 = math.log2(image_size)
    if image_size < 16 or not log2.is_integer():
        raise ValueError(f"SNGAN needs a power-of-two image_size >= 16, got {image_size}")
    return int(log2)


class GeneratorBlock(nn.Module):
    """BN-ReLU-up-conv-BN-ReLU-conv with an upsampled 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(in_channels), nn.BatchNorm2d(out_channels)
        self.conv1 = _xavier(nn.Conv2d(in_channels, out_channels, 3, 1, 1), math.sqrt(2))
        self.conv2 = _xavier(nn.Conv2d(out_channels, out_channels, 3, 1, 1), math.sqrt(2))
        self.shortcut = _xavier(nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DiscriminatorBlock(nn.Module):
    """ReLU-conv-ReLU-conv (+ average pooling); ``first`` skips the leading ReLU on the image."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, first: bool = False):
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv1 = spectral_norm(_xavier(nn.Conv2d(in_channels, out_channels, 3, 1, 1), math.sqrt(2)))
        self.conv2 = spectral_norm(_xavier(nn.Conv2d(out_channels, out_channels, 3, 1, 1), math.sqrt(2)))
        self.shortcut = None
        if downsample or in_channels != out_channels:
            self.shortcut = spectral_norm(_xavier(nn.Conv2d(in_channels, out_channels, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        skip = x
        if self.first:  # the optimized first block pools before its shortcut conv
            skip = self.shortcut(F.avg_pool2d(x, 2))
        elif self.shortcut is not None:
            skip = self.shortcut(x)
            skip = F.avg_pool2d(skip, 2) if self.downsample else skip
        return (F.avg_pool2d(h, 2) if self.downsample else h) + skip


class SNGANGenerator(nn.Module):
    """Latent (N, latent_dim) -> images (N, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, latent_dim: int = 128, image_size: int = 32, channels: int = 3, width: int = 256):
        super().__init__()
        self.latent_dim, self.image_size, self.channels, self.width = latent_dim, image_size, channels, width
        self.project = _xavier(nn.Linear(latent_dim, 4 * 4 * width))
        self.blocks = nn.Sequential(*(GeneratorBlock(width, width) for _ in range(_log2_size(image_size) - 2)))
        self.head = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(inplace=True), _xavier(nn.Conv2d(width, channels, 3, 1, 1)), nn.Tanh()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.project(z).view(-1, self.width, 4, 4)))


class SNGANDiscriminator(nn.Module):
    """Images (N, channels, image_size, image_size) -> logits (N,)."""

    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 128):
        super().__init__()
        downsampling_blocks = _log2_size(image_size) - 3  # down to 8x8
        blocks = [DiscriminatorBlock(channels, width, downsample=True, first=True)]
        blocks += [DiscriminatorBlock(width, width, downsample=True) for _ in range(downsampling_blocks - 1)]
        blocks += [DiscriminatorBlock(width, width, downsample=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.head = spectral_norm(_xavier(nn.Linear(width, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.head(features).flatten()
