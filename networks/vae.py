"""Convolutional VAE in the common benchmark shape (pythae's MNIST/CelebA models).

Encoder: 4x4 stride-2 convs with BatchNorm + ReLU (each halves the image), then two linear
heads for the posterior mean and log-variance. Decoder: the mirror image, a linear layer back
to the smallest feature map and 4x4 stride-2 transposed convs with BatchNorm + ReLU; the last
one returns raw per-pixel parameters (Gaussian mean or Bernoulli logits; the LightningModule
decides).
"""

from __future__ import annotations

import torch
from torch import nn


def down(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def up(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvVAE(nn.Module):
    """Encoder q(z|x) = N(mu, exp(logvar)) and decoder p(x|z) parameters.

    Args:
        channels: image channels (1 or 3).
        image_size: side of the square input; must be divisible by ``2 ** len(widths)``.
        latent_dim: size of z (pythae: 16 for MNIST, 64 for CelebA-64).
        widths: channels of the stride-2 convs (pythae: 128, 256, 512, 1024).
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 32,
        latent_dim: int = 16,
        widths: tuple[int, ...] = (128, 256, 512, 1024),
    ):
        super().__init__()
        if image_size % 2 ** len(widths):
            raise ValueError(f"image_size={image_size} must be divisible by 2**len(widths) = {2 ** len(widths)}")
        self.channels = channels
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.bottom = image_size // 2 ** len(widths)
        flat = widths[-1] * self.bottom**2
        self.encoder = nn.Sequential(*(down(c_in, c_out) for c_in, c_out in zip((channels, *widths), widths)), nn.Flatten())
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Sequential(
            nn.Linear(latent_dim, flat, bias=False),
            nn.Unflatten(1, (widths[-1], self.bottom, self.bottom)),
            nn.BatchNorm2d(widths[-1]),
            nn.ReLU(inplace=True),
        )
        reverse = widths[::-1]
        self.decoder = nn.Sequential(
            *(up(c_in, c_out) for c_in, c_out in zip(reverse, reverse[1:])),
            nn.ConvTranspose2d(widths[0], channels, 4, stride=2, padding=1),
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (N, latent_dim)."""
        hidden = self.encoder(images)
        return self.to_mu(hidden), self.to_logvar(hidden)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Per-pixel likelihood parameters, (N, channels, image_size, image_size)."""
        return self.decoder(self.from_latent(z))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised pass: (decoder output, mu, logvar)."""
        mu, logvar = self.encode(images)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar
