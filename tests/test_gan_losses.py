"""The least-squares GAN loss (added for pix2pix) on hand-computed values."""

import typing

import pytest
import torch

from lightning_modules import gan_losses as L


def test_lsgan_loss_values_and_registration():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])
    # D: mean((real - 1)^2) = (0 + 4) / 2, plus mean(fake^2) = (0 + 4) / 2
    assert L.lsgan_d_loss(real, fake).item() == pytest.approx(4.0)
    # G: mean((fake - 1)^2) = (1 + 1) / 2
    assert L.lsgan_g_loss(fake).item() == pytest.approx(1.0)
    assert L.LOSSES["lsgan"] == (L.lsgan_d_loss, L.lsgan_g_loss)
    assert "lsgan" in typing.get_args(L.GANLoss)
