"""pix2pix networks (Isola et al., 2017): the U-Net generator and the PatchGAN discriminator.

Both follow the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix): 4x4 convolutions
of stride 2, LeakyReLU(0.2) in the encoder and the discriminator, ReLU in the decoder, no norm
on the first encoder layer and the innermost level, weights drawn from N(0, 0.02) (norm scales
from N(1, 0.02)), biases at 0. Images are in [-1, 1].
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["batch", "instance"]


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """Batch norm, or the reference's instance norm (no affine parameters, no running statistics)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def init_weights(module: nn.Module) -> None:
    """The reference's ``normal`` init: conv weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


class UNetBlock(nn.Module):
    """One level of the U-Net: down-convolution, the inner levels, up-convolution, and the skip.

    A non-outermost block returns its input concatenated with its output (the skip connection),
    so the next up-convolution outward sees both. Its first LeakyReLU is not in place (the
    reference's is, which changes the skip too); the ReLU that every up path starts with makes
    the two the same function.
    """

    def __init__(self, outer: int, inner: int, submodule: nn.Module | None, norm: Norm, dropout: float,
                 in_channels: int | None = None, outermost: bool = False):
        super().__init__()
        self.outermost = outermost
        bias = norm == "instance"  # batch norm has its own shift
        down = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1, bias=bias)
        up_in = inner if submodule is None else 2 * inner
        if outermost:
            layers = [down, submodule, nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1), nn.Tanh()]
        elif submodule is None:  # innermost: a 1x1 bottleneck at the full depth, which norm would zero
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias), norm_layer(norm, outer)]
        else:
            layers = [nn.LeakyReLU(0.2), down, norm_layer(norm, inner), submodule, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias), norm_layer(norm, outer)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], dim=1)


class UNetGenerator(nn.Module):
    """The pix2pix U-Net: ``num_downs`` stride-2 levels (8 for 256x256, so the bottleneck is
    1x1; 7 for 128, 6 for 64), widths ``ngf * (1, 2, 4, 8, 8, ...)``, a skip connection at every
    level and a Tanh output.

    Dropout (p = ``dropout``) after the up-convolution of the ``dropout_blocks`` decoder blocks
    that follow the innermost one is the generator's only source of noise: pix2pix found input
    noise ignored. At depth 8 the default 3 are the reference's 512-channel blocks.

    Inputs whose sides are not multiples of ``2 ** num_downs`` are padded (reflect, replicate
    where the pad exceeds the image) and the output is cropped back, so any size works.

    Args:
        in_channels / out_channels: channels of the input and output images.
        num_downs: number of down-sampling levels.
        ngf: channels of the first level.
        norm: ``batch`` or ``instance``.
        dropout: dropout probability in the first decoder blocks (0 turns it off).
        dropout_blocks: how many decoder blocks have dropout.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: Norm = "batch",
        dropout: float = 0.5,
        dropout_blocks: int = 3,
    ):
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"num_downs must be at least 2, got {num_downs}")
        widths = [ngf * min(2**level, 8) for level in range(num_downs)]
        block = UNetBlock(widths[-2], widths[-1], None, norm, 0.0)
        for level in range(num_downs - 2, 0, -1):  # inner to outer; level = index of the block's inner width
            with_dropout = level >= num_downs - 1 - dropout_blocks
            block = UNetBlock(widths[level - 1], widths[level], block, norm, dropout if with_dropout else 0.0)
        self.model = UNetBlock(out_channels, widths[0], block, norm, 0.0, in_channels=in_channels, outermost=True)
        self.multiple = 2**num_downs
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # Rounded up by floor division: inductor fails on a modulo of dynamic (symbolic) sizes.
        pad_h = (height + self.multiple - 1) // self.multiple * self.multiple - height
        pad_w = (width + self.multiple - 1) // self.multiple * self.multiple - width
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.model(x)[..., :height, :width]


class PatchGANDiscriminator(nn.Module):
    """The pix2pix discriminator: a real/fake logit per patch of the (input, output) pair.

    ``n_layers`` stride-2 convolutions (widths ``ndf * (1, 2, 4, 8, 8...)``), then two stride-1
    ones: the receptive field of each logit is 16x16 (``n_layers`` 1), 34, 70 (3, the paper's
    choice), 142, 286 (5, the whole 256 image). ``n_layers`` 0 is the PixelGAN (1x1 convolutions,
    one logit per pixel: colour only, no structure).

    Args:
        in_channels: channels of what it judges: input and output image concatenated (6 for RGB).
        ndf: channels of the first layer.
        n_layers: stride-2 layers (sets the receptive field, see above).
        norm: ``batch`` or ``instance``.
    """

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: Norm = "batch"):
        super().__init__()
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        bias = norm == "instance"
        if n_layers == 0:
            layers = [nn.Conv2d(in_channels, ndf, 1), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(ndf, 2 * ndf, 1, bias=bias), norm_layer(norm, 2 * ndf), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(2 * ndf, 1, 1)]
        else:
            layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
            width = ndf
            for n in range(1, n_layers + 1):
                previous, width = width, ndf * min(2**n, 8)
                stride = 2 if n < n_layers else 1
                layers += [nn.Conv2d(previous, width, 4, stride=stride, padding=1, bias=bias), norm_layer(norm, width),
                           nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
