"""RRDBNet, the ESRGAN generator (Wang et al., 2018), laid out like the reference code.

Attribute names follow BasicSR (``conv_first``, ``body.<i>.rdb1.conv1``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) so that published ``params`` /
``params_ema`` state dicts load with ``load_state_dict``; :func:`to_basicsr_keys` renames the two
older ESRGAN layouts to these names, and :func:`rrdbnet_options` reads the arguments a state dict
was made with from its shapes. Images go in and out in [0, 1]: the network does no normalization
of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

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
            to learn to copy the image first (docs/sr.md). The parameters are the same, but
            weights trained with the skip only work with it: leave it off for ESRGAN/BasicSR weights.
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


#: The ESRGAN repository's RRDBNet names (``RRDBNet_arch.py``) -> BasicSR's.
_ESRGAN_NAMES = {
    "RRDB_trunk.": "body.", "trunk_conv.": "conv_body.", "upconv1.": "conv_up1.", "upconv2.": "conv_up2.", "HRconv.": "conv_hr.",
}
#: The original ESRGAN x4 generator, one ``nn.Sequential``: 0 conv, 1 shortcut (RRDBs + trunk
#: conv), 2 upsample, 3 conv, 4 lrelu, 5 upsample, 6 conv, 7 lrelu, 8 conv, 9 lrelu, 10 conv.
_OLD_X4_CONVS = {"0": "conv_first", "3": "conv_up1", "6": "conv_up2", "8": "conv_hr", "10": "conv_last"}


def to_basicsr_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with RRDBNet keys in this module's (BasicSR's) names, whatever layout it came in.

    Recognised by their keys: the original ESRGAN models (``model.0``, ``model.1.sub.<i>.RDB1.conv1.0``,
    ..., ``model.10``; x4 only), the ESRGAN repository's ``RRDB_trunk.<i>.RDB1.conv1``,
    ``trunk_conv``, ``upconv1/2``, ``HRconv``, and BasicSR's own names (returned as they are, as is
    any other state dict). Raises ``ValueError`` for an original-layout model at another scale.
    """
    if any(key.startswith("model.1.sub.") for key in state):
        return _from_original_esrgan(state)
    if any(key.startswith(("RRDB_trunk.", "trunk_conv.")) for key in state):
        return {_from_esrgan_repo(key): value for key, value in state.items()}
    return dict(state)


def _from_esrgan_repo(key: str) -> str:
    for old, new in _ESRGAN_NAMES.items():
        if key.startswith(old):
            key = new + key.removeprefix(old)
            break
    return re.sub(r"^body\.(\d+)\.RDB(\d)\.", r"body.\1.rdb\2.", key)


def _from_original_esrgan(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    layers = {key.split(".")[1] for key in state if key.startswith("model.")}
    if layers != {"1", *_OLD_X4_CONVS}:
        found = ", ".join(sorted(layers, key=lambda i: int(i) if i.isdigit() else -1))
        raise ValueError(
            "an original ESRGAN model (model.0 ... model.N) loads only at x4, where its layers are "
            f"model.0, 1, 3, 6, 8, 10; this one has model.{found}: convert it with the ESRGAN repository's "
            "transer_RRDB_models.py or pick an x4 model"
        )
    # The trunk conv closes the shortcut's sequence: model.1.sub.<num_block>.
    trunk = {m[1] for key in state if (m := re.fullmatch(r"model\.1\.sub\.(\d+)\.(?:weight|bias)", key))}
    renamed = {}
    for key, value in state.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key):
            key = f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"
        elif (m := re.fullmatch(r"model\.1\.sub\.(\d+)\.(weight|bias)", key)) and len(trunk) == 1:
            key = f"conv_body.{m[2]}"
        elif (m := re.fullmatch(r"model\.(\d+)\.(weight|bias)", key)) and m[1] in _OLD_X4_CONVS:
            key = f"{_OLD_X4_CONVS[m[1]]}.{m[2]}"
        renamed[key] = value  # anything else keeps its name, and is reported as unexpected
    return renamed


def rrdbnet_options(state: Mapping[str, Tensor]) -> dict[str, int] | None:
    """The :class:`RRDBNet` arguments that a state dict in BasicSR names fits, read from its
    shapes, or ``None`` when it is not an RRDBNet's. ``bicubic_skip`` leaves no trace in the
    weights and is not among them; ``in_channels``/``out_channels`` only when not 3."""
    try:
        first, grow, last = state["conv_first.weight"], state["body.0.rdb1.conv1.weight"], state["conv_last.weight"]
    except KeyError:
        return None
    if first.dim() != 4 or grow.dim() != 4 or last.dim() != 4:
        return None
    blocks = {int(m[1]) for key in state if (m := re.match(r"body\.(\d+)\.", key))}
    out_channels = last.shape[0]
    unshuffled = {1: 4, 4: 2, 16: 1}  # conv_first's input channels per image channel -> scale
    ratio, rest = divmod(first.shape[1], out_channels)
    scale = unshuffled.get(ratio, 4) if rest == 0 else 4
    in_channels = first.shape[1] // (4 // scale) ** 2
    options = {"num_feat": first.shape[0], "num_block": max(blocks) + 1, "grow_ch": grow.shape[0], "scale": scale}
    if (in_channels, out_channels) != (3, 3):
        options |= {"in_channels": in_channels, "out_channels": out_channels}
    return options
