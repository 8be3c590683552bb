"""Adversarial losses and penalties, each a small function of discriminator logits.

``real``/``fake`` are raw discriminator outputs (logits, no sigmoid), any shape; every loss
is averaged over all elements, so patch discriminators work unchanged. The discriminator
losses add the real and fake terms (as in DCGAN and SNGAN); the relativistic average loss
averages them (as in ESRGAN).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

GANLoss = Literal["nonsaturating", "hinge", "ragan", "wgan-gp", "lsgan"]


def nonsaturating_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """BCE with targets 1 for real and 0 for fake: ``softplus(-real) + softplus(fake)``."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def nonsaturating_g_loss(fake: Tensor, real: Tensor | None = None) -> Tensor:
    """The generator maximises log D(G(z)) instead of minimising log(1 - D(G(z))) (Goodfellow et al.)."""
    return F.softplus(-fake).mean()


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g_loss(fake: Tensor, real: Tensor | None = None) -> Tensor:
    return -fake.mean()


def ragan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Relativistic average GAN (ESRGAN): is real more realistic than the average fake, and vice versa."""
    real_vs_fake = F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
    fake_vs_real = F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake))
    return (real_vs_fake + fake_vs_real) / 2


def ragan_g_loss(fake: Tensor, real: Tensor | None = None) -> Tensor:
    """The discriminator loss with the targets swapped; needs the (detached) real logits."""
    if real is None:
        raise ValueError("the relativistic average generator loss needs the discriminator's logits on real images")
    real_vs_fake = F.binary_cross_entropy_with_logits(real - fake.mean(), torch.zeros_like(real))
    fake_vs_real = F.binary_cross_entropy_with_logits(fake - real.mean(), torch.ones_like(fake))
    return (real_vs_fake + fake_vs_real) / 2


def wasserstein_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Critic loss of WGAN; add :func:`gradient_penalty` for WGAN-GP."""
    return fake.mean() - real.mean()


def wasserstein_g_loss(fake: Tensor, real: Tensor | None = None) -> Tensor:
    return -fake.mean()


def lsgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Least squares GAN (Mao et al.; pix2pix and CycleGAN's ``lsgan``): ``(real - 1)^2 + fake^2``.

    pix2pix halves its discriminator objective; Adam's steps do not depend on the loss scale (up to
    its epsilon), so the terms are added here as for the other losses.
    """
    return (real - 1).pow(2).mean() + fake.pow(2).mean()


def lsgan_g_loss(fake: Tensor, real: Tensor | None = None) -> Tensor:
    return (fake - 1).pow(2).mean()


#: loss name -> (discriminator loss, generator loss).
LOSSES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor, Tensor | None], Tensor]]] = {
    "nonsaturating": (nonsaturating_d_loss, nonsaturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "ragan": (ragan_d_loss, ragan_g_loss),
    "wgan-gp": (wasserstein_d_loss, wasserstein_g_loss),
    "lsgan": (lsgan_d_loss, lsgan_g_loss),
}


def gradient_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al.): ``E[(||grad D(x_hat)||_2 - 1)^2]`` on random interpolates x_hat."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """R1 (Mescheder et al.): ``E[||grad D(x_real)||^2] / 2``; ``real`` must have been fed with requires_grad."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean() / 2
