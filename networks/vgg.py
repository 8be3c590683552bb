"""VGG16 / VGG19 feature extractors for feature losses (content, style, ESRGAN's conv5_4).

The layers are numbered as torchvision's ``vgg16().features`` / ``vgg19().features`` so its
ImageNet state dicts (``VGG16_Weights.IMAGENET1K_V1``, file ``vgg16-397923af.pth``;
``VGG19_Weights.IMAGENET1K_V1``, file ``vgg19-dcbb9e9d.pth``) load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchvision.models import VGG16_Weights, VGG19_Weights

Architecture = Literal["vgg16", "vgg19"]

# torchvision's configurations "D" (VGG16) and "E" (VGG19): output channels per conv, "M" = max-pooling.
_CONFIGS = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
_IMAGENET_WEIGHTS = {"vgg16": VGG16_Weights.IMAGENET1K_V1, "vgg19": VGG19_Weights.IMAGENET1K_V1}


def vgg_layer_names(arch: Architecture = "vgg19") -> list[str]:
    """Names of the layers of torchvision's ``<arch>().features`` in order: conv1_1, relu1_1, ..., pool5."""
    names, block, index = [], 1, 1
    for item in _CONFIGS[arch]:
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


class VGGFeatures(nn.Module):
    """Returns ``{layer: features}`` for the requested layers of VGG16 or VGG19 on [0, 1] images.

    Input is ImageNet-normalised inside; one-channel images are repeated to RGB. Layers deeper
    than the deepest requested one are not built. The weights are frozen.

    Args:
        layers: layer names, e.g. ``conv5_4`` (before activation) or ``relu2_2`` (after).
        arch: ``vgg16`` or ``vgg19``.
        weights_path: local ImageNet state dict of that architecture (torchvision's file, or just
            its ``features``); when not given the weights are downloaded by torchvision.
        pretrained: ``False``: random weights, drawn as torchvision's (tests, timing only).
    """

    def __init__(self, layers: Sequence[str] = ("conv5_4",), arch: Architecture = "vgg19",
                 weights_path: str | None = None, pretrained: bool = True):
        super().__init__()
        names = vgg_layer_names(arch)
        unknown = [layer for layer in layers if layer not in names]
        if unknown or not layers:
            raise ValueError(f"unknown {arch.upper()} layer(s) {unknown or list(layers)}; choose from {', '.join(names)}")
        self.arch = arch
        self.layers = list(dict.fromkeys(layers))
        depth = max(names.index(layer) for layer in layers) + 1
        self.names = names[:depth]
        state = _imagenet_state_dict(arch, weights_path, self.names) if pretrained else None
        modules: list[nn.Module] = []
        in_channels = 3
        for item in _CONFIGS[arch]:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                # Not in-place: a stored pre-activation output must not be overwritten by its ReLU.
                modules += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU()]
                in_channels = item
        self.features = nn.Sequential(*modules[:depth])
        if state is not None:
            self.features.load_state_dict(state)
        else:
            _torchvision_init(self.features)
        self.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (images.expand(-1, 3, -1, -1) - self.mean) / self.std
        outputs = {}
        for name, module in zip(self.names, self.features):
            x = module(x)
            if name in self.layers:
                outputs[name] = x
        return outputs


def _torchvision_init(features: nn.Sequential) -> None:
    """Random weights drawn as torchvision's VGG draws them (He normal, fan out; zero biases): feature
    magnitudes that stay of order one with depth, where PyTorch's default init shrinks them layer by layer."""
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)


def _imagenet_state_dict(arch: Architecture, weights_path: str | None, names: list[str]) -> dict[str, torch.Tensor]:
    """The ``features`` weights of the layers ``names`` of the ImageNet VGG, from a file or torchvision's download."""
    title = arch.upper()
    url = _IMAGENET_WEIGHTS[arch].url
    if weights_path is None:
        try:
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, weights_only=True)
        except Exception as err:  # any network/cache failure ends in the same advice
            raise RuntimeError(
                f"{title} ImageNet weights could not be downloaded ({type(err).__name__}: {err}). Download {url} "
                "where there is network access and set `weights_path` of the perceptual loss "
                "(model.init_args.perceptual.init_args.weights_path) in the config to that file."
            ) from err
        source = url
    else:
        if not Path(weights_path).is_file():
            raise FileNotFoundError(f"{weights_path}: {title} weights file not found (config option `weights_path`)")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        source = weights_path
    state = {key.removeprefix("features."): value for key, value in state.items() if not key.startswith("classifier.")}
    conv_indices = [i for i, name in enumerate(names) if name.startswith("conv")]
    needed = {f"{i}.{kind}" for i in conv_indices for kind in ("weight", "bias")}
    missing = sorted(needed - state.keys(), key=lambda k: (int(k.split(".")[0]), k))
    if missing:
        raise ValueError(f"{source}: not a {title} state dict, missing {', '.join(missing[:4])}")
    return {key: state[key] for key in needed}
