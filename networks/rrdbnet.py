"""RRDBNet, the ESRGAN generator (Wang et al., 2018), laid out like the reference code.

Attribute names follow ESRGAN/BasicSR (``conv_first``, ``body.<i>.rdb1.conv1``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) so that published ``params`` /
``params_ema`` state dicts load with ``load_state_dict``. Images go in and out in [0, 1]: the
network does no normalization of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int, grow_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + grow_ch, grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * grow_ch, grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * grow_ch, grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        # ESRGAN's initialization: Kaiming-normal weights scaled by 0.1 and zero biases keep the
        # deep residual trunk close to identity at the start of training.
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, again residual-scaled by 0.2."""

    def __init__(self, num_feat: int, grow_ch: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, grow_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator: RRDB trunk, then two nearest-neighbour x2 + conv stages (x4 overall).

    Scales 2 and 1 keep the x4 layout, as BasicSR / Real-ESRGAN do: the input is first
    pixel-unshuffled by 4 / scale (so ``conv_first`` sees 4x or 16x the channels), which makes
    published x2/x1 weights (e.g. RealESRGAN_x2plus) load. Pixel-unshuffle needs H and W divisible
    by 4 / scale; other sizes are reflect-padded at the bottom/right and the output cropped back
    to H*scale x W*scale (Real-ESRGAN's inference does the same), because SR evaluation feeds
    whole images of any size.

    Args:
        in_channels: channels of the LR input.
        out_channels: channels of the SR output.
        num_feat: trunk width (64 in ESRGAN).
        num_block: number of RRDBs (23 in ESRGAN).
        grow_ch: growth channels of each dense conv (32 in ESRGAN).
        scale: upscaling factor: 4 (ESRGAN), 2 or 1 (BasicSR's pixel-unshuffle variants).
        bicubic_skip: add the bicubic-upsampled input to the output, so that the network only
            learns the detail bicubic misses (VDSR's global residual); ``conv_last`` then starts
            at zero. Small networks on short budgets start from bicubic quality instead of having
            to learn to copy the image first (embedded demo: +0.89 vs +0.84 dB over bicubic in
            4500 steps). The parameters are the same, but weights trained with the skip only
            work with it: leave it off for ESRGAN/BasicSR weights.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        grow_ch: int = 32,
        scale: int = 4,
        bicubic_skip: bool = False,
    ):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, got scale={scale}")
        self.scale = scale
        self.unshuffle = 4 // scale  # 1 (none) at x4
        self.bicubic_skip = bicubic_skip
        self.conv_first = nn.Conv2d(in_channels * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        if bicubic_skip:
            # The untrained network returns bicubic exactly; training adds detail from there.
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        feat = x
        if self.unshuffle > 1:
            pad_h, pad_w = -height % self.unshuffle, -width % self.unshuffle
            if pad_h or pad_w:
                # Reflect needs the pad to be smaller than the side; tiny inputs fall back to replicate.
                mode = "reflect" if pad_h < height and pad_w < width else "replicate"
                feat = F.pad(feat, (0, pad_w, 0, pad_h), mode=mode)
            feat = F.pixel_unshuffle(feat, self.unshuffle)
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        out = out[..., : height * self.scale, : width * self.scale]  # drop the padding, if any
        if self.bicubic_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out
