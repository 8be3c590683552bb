"""Discriminators of the super-resolution GANs: ESRGAN's VGG-style one and Real-ESRGAN's U-Net.

Both take HR-sized RGB images in [0, 1] and return logits (no sigmoid): one per image for the
VGG-style network, one per pixel for the U-Net.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's discriminator: pairs of (3x3 conv, 4x4 stride-2 conv) with BN and LeakyReLU(0.2).

    Each stage halves the resolution until 4x4 is left, then ``Linear(C*4*4, 100)`` and
    ``Linear(100, 1)``. With ``input_size=128`` and ``num_feat=64`` this is the reference network:
    10 convs, channels 64-128-256-512-512, ``Linear(8192, 100)``. The first conv has a bias and
    no BN; the others have BN instead of a bias.

    Args:
        in_channels: channels of the images.
        num_feat: channels of the first stage; each stage doubles them, up to ``8 * num_feat``.
        input_size: height and width of the training patches (HR ``data.patch_size``), a power of
            two times 4 (32, 64, 128, 256 ...): the linear head is sized for it.
    """

    def __init__(self, in_channels: int = 3, num_feat: int = 64, input_size: int = 128):
        super().__init__()
        stages = round(math.log2(max(input_size, 1) / 4))
        if stages < 1 or 4 * 2**stages != input_size:
            raise ValueError(f"input_size must be 4 times a power of two (32, 64, 128, ...), got {input_size}")
        self.input_size = input_size
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, num_feat, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            *_conv_bn_lrelu(num_feat, num_feat, 4, 2),
        ]
        channels = num_feat
        for stage in range(1, stages):
            out_channels = num_feat * min(2**stage, 8)
            layers += [*_conv_bn_lrelu(channels, out_channels, 3, 1), *_conv_bn_lrelu(out_channels, out_channels, 4, 2)]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * 4 * 4, 100), nn.LeakyReLU(0.2, inplace=True), nn.Linear(100, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"VGGStyleDiscriminator was built for {self.input_size}x{self.input_size} inputs but got "
                f"{x.shape[-1]}x{x.shape[-2]}: set the discriminator's input_size to data.patch_size"
            )
        return self.classifier(self.features(x))


def _conv_bn_lrelu(in_channels: int, out_channels: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    ]


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral normalisation: a realism logit per pixel.

    Three stride-2 4x4 convs down, three bilinear x2 + 3x3 conv stages up (with skip additions
    from the encoder), two more 3x3 convs and a 1-channel output conv. All convs except the first
    and the last are spectrally normalised; Real-ESRGAN trains it with the plain
    (non-relativistic) GAN loss and per-pixel logits.

    Args:
        in_channels: channels of the images.
        num_feat: channels of the first conv (encoder: x1, x2, x4, x8).
        skip_connection: add the encoder features to the decoder's (as in Real-ESRGAN).
    """

    def __init__(self, in_channels: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(num_feat, num_feat * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(num_feat * 2, num_feat * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(num_feat * 4, num_feat * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(num_feat * 8, num_feat * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(num_feat * 4, num_feat * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(num_feat, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(
                f"UNetDiscriminatorSN needs height and width divisible by 8, got {x.shape[-1]}x{x.shape[-2]}"
            )
        x0 = F.leaky_relu(self.conv0(x), 0.2)
        x1 = F.leaky_relu(self.conv1(x0), 0.2)
        x2 = F.leaky_relu(self.conv2(x1), 0.2)
        x3 = F.leaky_relu(self.conv3(x2), 0.2)
        up = self._up(x3, self.conv4, x2)
        up = self._up(up, self.conv5, x1)
        up = self._up(up, self.conv6, x0)
        out = F.leaky_relu(self.conv7(up), 0.2)
        out = F.leaky_relu(self.conv8(out), 0.2)
        return self.conv9(out)

    def _up(self, x: Tensor, conv: nn.Module, skip: Tensor) -> Tensor:
        x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)), 0.2)
        return x + skip if self.skip_connection else x
