"""EDSR (Lim et al., 2017), the lighter SR baseline: residual blocks without batch norm.

Laid out like BasicSR's ``EDSR`` (``conv_first``, ``body.<i>.conv1/conv2``, ``conv_after_body``,
``upsample``, ``conv_last``) so that its published state dicts load with ``load_state_dict``.
Images go in and out in [0, 1]; inside, as in the reference, the DIV2K mean is subtracted and the
signal is scaled to the 0-255 range that the published weights were trained on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Mean RGB of the DIV2K training set, used by EDSR's mean shift.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
#: EDSR works on 0-255 pixel values internally (as its published weights expect).
PIXEL_RANGE = 255.0


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with an identity shortcut; ``res_scale`` < 1 stabilizes very wide models."""

    def __init__(self, num_feat: int, res_scale: float):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class Upsample(nn.Sequential):
    """Sub-pixel upsampling: conv + PixelShuffle(2) per factor of 2, or one conv + PixelShuffle(3)."""

    def __init__(self, scale: int, num_feat: int):
        layers: list[nn.Module] = []
        if scale in (2, 4):
            for _ in range(1 if scale == 2 else 2):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR supports scale 2, 3 or 4, got scale={scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR-baseline with mean shift and PixelShuffle upsampling.

    Args:
        in_channels: channels of the LR input (3: the mean shift uses the DIV2K RGB mean).
        out_channels: channels of the SR output (3, for the same reason).
        num_feat: trunk width (64 for EDSR-baseline, 256 for full EDSR).
        num_block: residual blocks (16 for EDSR-baseline, 32 for full EDSR).
        res_scale: residual scaling inside each block (1.0 baseline, 0.1 full EDSR).
        scale: upscaling factor, 2, 3 or 4.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        res_scale: float = 1.0,
        scale: int = 4,
    ):
        super().__init__()
        if in_channels != 3 or out_channels != 3:
            raise ValueError(
                "EDSR's mean shift uses the DIV2K RGB mean, so in_channels and out_channels must be 3, "
                f"got in_channels={in_channels}, out_channels={out_channels}"
            )
        self.scale = scale
        # Not persistent: the reference keeps the mean out of its state dicts.
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualBlockNoBN(num_feat, res_scale) for _ in range(num_block)))
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = Upsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, out_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        mean = self.mean.to(x.dtype)
        feat = self.conv_first((x - mean) * PIXEL_RANGE)
        feat = feat + self.conv_after_body(self.body(feat))
        return self.conv_last(self.upsample(feat)) / PIXEL_RANGE + mean
