"""DCGAN generator and discriminator (Radford et al., 2016) for square power-of-two images.

Both stack 4x4 stride-2 (transposed) convolutions between 4x4 and ``image_size``; widths
double towards the 4x4 end (``base_width`` at full resolution). Weights are drawn from
N(0, 0.02), batch-norm scales from N(1, 0.02), as in the paper.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _num_stages(image_size: int) -> int:
    """Number of stride-2 layers between 4x4 and ``image_size`` (3 for 32, 4 for 64)."""
    stages = math.log2(image_size) - 2
    if image_size < 8 or not stages.is_integer():
        raise ValueError(f"DCGAN needs a power-of-two image_size >= 8, got {image_size}")
    return int(stages)


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) for conv weights, N(1, 0.02) for batch-norm scales, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """Latent (N, latent_dim) -> images (N, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, image_size: int = 64, channels: int = 3, base_width: int = 64):
        super().__init__()
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        stages = _num_stages(image_size)
        width = base_width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Images (N, channels, image_size, image_size) -> logits (N,).

    ``normalization``: ``batch`` as in DCGAN (never on the first layer); ``spectral`` (the
    SN-DCGAN of Miyato et al.) or ``none`` for gradient-penalty critics, where batch norm
    mixes the samples that the penalty treats independently.
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        base_width: int = 64,
        normalization: Literal["batch", "spectral", "none"] = "batch",
    ):
        super().__init__()
        stages = _num_stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, base_width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        width = base_width
        for _ in range(stages - 1):
            layers.append(nn.Conv2d(width, width * 2, 4, 2, 1, bias=normalization != "batch"))
            if normalization == "batch":
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if normalization == "spectral":
            for layer in self.net:
                if isinstance(layer, nn.Conv2d):
                    spectral_norm(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()
