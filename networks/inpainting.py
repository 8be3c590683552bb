"""Inpainting networks: a gated-convolution U-Net generator and an SN-PatchGAN discriminator.

Images are RGB in [0, 1]; masks are (N, 1, H, W) with **1 = hole**. The generator returns its
prediction for the whole image; compositing (keeping the known pixels) is the caller's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


#: Pyramid levels of :func:`push_pull_fill`: enough to reach 1x1 from a side of 65536 pixels.
PUSH_PULL_LEVELS = 16


def push_pull_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Holes filled by push-pull pyramid interpolation of the known pixels (Gortler et al., 1996).

    Push: mask-weighted 2x2 averages of the known pixels down to 1x1. Pull: from the coarsest
    level up, every pixel with no known pixel under it takes the bilinear upsampling of the
    coarser estimate. Known pixels keep their values; no parameters.
    """
    known = 1 - mask
    sums, weights = [image * known], [known]
    # A fixed number of halvings (a 1x1 level stays itself), not "until 1x1": the same for every
    # size up to 2**PUSH_PULL_LEVELS, so that an exported graph is not tied to the traced size.
    for _ in range(PUSH_PULL_LEVELS):
        sums.append(F.avg_pool2d(sums[-1], 2, ceil_mode=True))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=True))
    estimate = sums[-1] / weights[-1].clamp(min=1e-8)
    for level_sum, level_weight in zip(reversed(sums[:-1]), reversed(weights[:-1])):
        # Exact 2x upsampling (then cropping) keeps the coarse samples at their 2x2 block centres.
        coarse = F.interpolate(estimate, scale_factor=2, mode="bilinear", align_corners=False)
        coarse = coarse[..., : level_sum.shape[-2], : level_sum.shape[-1]]
        estimate = torch.where(level_weight > 0, level_sum / level_weight.clamp(min=1e-8), coarse)
    return estimate


class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al., DeepFill v2): ``ELU(features) * sigmoid(gate)``, both from one conv.

    The learned soft gate lets every layer tell valid pixels from holes (and from already
    filled ones), which a vanilla or partial convolution cannot do for free-form masks.

    Weights start as N(0, (INIT_GAIN^2 / fan_in)), biases at 0: the gate halves the signal at
    initialisation, and with PyTorch's default init the activations shrink about 3x per layer,
    so the deep (dilated) path of the U-Net would start out silent and learn very slowly.
    """

    #: Keeps the activation scale roughly constant through ``ELU(features) * sigmoid(gate)``.
    INIT_GAIN = 2.5

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding, dilation)
        fan_in = in_channels * kernel_size * kernel_size
        nn.init.normal_(self.conv.weight, std=self.INIT_GAIN / fan_in**0.5)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.conv(x).chunk(2, dim=1)
        return F.elu(features) * torch.sigmoid(gate)


class GatedUNetGenerator(nn.Module):
    """U-Net of gated convolutions with a dilated middle (the DeepFill v2 coarse network's
    dilation stack, with skip connections instead of a second refinement stage).

    Input: the image with its holes blanked plus the mask channel; the network never sees the
    pixels under the mask (they are replaced here, whatever the caller passes). Any image size
    works: the input is padded (replicate) to a multiple of ``2**num_downsamples`` and the output
    cropped back.

    ``initial_fill`` says what the holes hold: ``zeros`` (DeepFill v2, LaMa; the network paints
    them from scratch) or ``push_pull``, a parameter-free coarse stage (:func:`push_pull_fill`)
    that the U-Net then refines as a residual, starting from the smooth fill instead of from
    nothing, which matters on short training budgets.

    Args:
        base_channels: channels at full resolution; doubled at every downsampling.
        num_downsamples: stride-2 levels in the encoder (and upsampling levels in the decoder).
        dilations: dilation rates of the gated convs at the lowest resolution (DeepFill: 2, 4, 8, 16).
        max_channels: cap on the channel count of the deeper levels.
        initial_fill: ``zeros`` or ``push_pull`` (see above).
    """

    def __init__(
        self,
        base_channels: int = 32,
        num_downsamples: int = 2,
        dilations: Sequence[int] = (2, 4, 8, 16),
        max_channels: int = 256,
        initial_fill: Literal["zeros", "push_pull"] = "zeros",
    ):
        super().__init__()
        if initial_fill not in ("zeros", "push_pull"):
            raise ValueError(f"initial_fill must be 'zeros' or 'push_pull', got {initial_fill!r}")
        self.num_downsamples = num_downsamples
        self.initial_fill = initial_fill
        widths = [min(base_channels * 2**level, max_channels) for level in range(num_downsamples + 1)]
        self.stem = GatedConv2d(4, widths[0], kernel_size=5)
        self.down = nn.ModuleList(
            nn.Sequential(GatedConv2d(widths[i], widths[i + 1], stride=2), GatedConv2d(widths[i + 1], widths[i + 1]))
            for i in range(num_downsamples)
        )
        self.middle = nn.Sequential(*(GatedConv2d(widths[-1], widths[-1], dilation=d) for d in dilations))
        self.up = nn.ModuleList(
            nn.Sequential(GatedConv2d(widths[i + 1] + widths[i], widths[i]), GatedConv2d(widths[i], widths[i]))
            for i in reversed(range(num_downsamples))
        )
        self.head = nn.Conv2d(widths[0], 3, kernel_size=3, padding=1)
        if initial_fill == "push_pull":
            # The residual starts at zero: the untrained generator returns the push-pull fill.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) image in [0, 1] and (N, 1, H, W) mask (1 = hole) -> (N, 3, H, W) prediction in [0, 1]."""
        height, width = image.shape[-2:]
        multiple = 2**self.num_downsamples
        pad = (0, -width % multiple, 0, -height % multiple)
        filled = push_pull_fill(image, mask) if self.initial_fill == "push_pull" else image * (1 - mask)
        x = F.pad(torch.cat([filled * 2 - 1, mask], dim=1), pad, mode="replicate")
        x = self.stem(x)
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(x)
        x = self.middle(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        x = self.head(x)[..., :height, :width]
        if self.initial_fill == "push_pull":
            return (filled + x).clamp(0, 1)
        return torch.tanh(x).add(1).div(2)


class PatchDiscriminator(nn.Module):
    """SN-PatchGAN (DeepFill v2): stride-2 5x5 spectral-norm convs with LeakyReLU(0.2) on image + mask.

    The input is one tensor (image channels, then the mask channel), as the shared GAN training
    passes it.

    Returns the last feature map as logits (N, C, h, w): every element judges one overlapping
    patch, and the hinge loss averages over all of them.

    Args:
        base_channels: channels of the first conv; doubled per layer up to ``max_channels``
            (DeepFill v2: 64, 128, 256, 256, 256, 256).
        num_layers: stride-2 convs (each halves the resolution).
    """

    def __init__(self, base_channels: int = 64, num_layers: int = 6, max_channels: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 4
        for index in range(num_layers):
            out_channels = min(base_channels * 2**index, max_channels)
            layers.append(spectral_norm(nn.Conv2d(in_channels, out_channels, 5, stride=2, padding=2)))
            if index < num_layers - 1:
                layers.append(nn.LeakyReLU(0.2))
            in_channels = out_channels
        self.net = nn.Sequential(*layers)

    def forward(self, image_and_mask: torch.Tensor) -> torch.Tensor:
        """(N, 4, H, W): RGB in [0, 1] then the mask -> (N, C, H / 2**L, W / 2**L) logits."""
        image, mask = image_and_mask[:, :3], image_and_mask[:, 3:]
        return self.net(torch.cat([image * 2 - 1, mask], dim=1))
