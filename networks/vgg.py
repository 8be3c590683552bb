"""VGG19 feature extractor for perceptual losses (ESRGAN: conv5_4 before its ReLU).

The layers are numbered as torchvision's ``vgg19().features`` so its ImageNet state dict
(``VGG19_Weights.IMAGENET1K_V1``, file ``vgg19-dcbb9e9d.pth``) loads unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG19_Weights

# torchvision's configuration "E": output channels per conv, "M" = max-pooling.
_VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def vgg19_layer_names() -> list[str]:
    """Names of the layers of ``vgg19().features`` in order: conv1_1, relu1_1, ..., pool5."""
    names, block, index = [], 1, 1
    for item in _VGG19_CONFIG:
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


class VGG19Features(nn.Module):
    """Returns ``{layer: features}`` for the requested layers of VGG19 on [0, 1] RGB input.

    Input is ImageNet-normalised inside. Layers deeper than the deepest requested one are not
    built. The weights are frozen.

    Args:
        layers: layer names, e.g. ``conv5_4`` (before activation) or ``relu5_4`` (after).
        weights_path: local VGG19 state dict (torchvision's ``vgg19-dcbb9e9d.pth`` or just its
            ``features``); when not given the ImageNet weights are downloaded by torchvision.
        pretrained: ``False`` keeps the random initialisation (tests, architecture checks only).
    """

    def __init__(self, layers: Sequence[str] = ("conv5_4",), weights_path: str | None = None, pretrained: bool = True):
        super().__init__()
        names = vgg19_layer_names()
        unknown = [layer for layer in layers if layer not in names]
        if unknown or not layers:
            raise ValueError(f"unknown VGG19 layer(s) {unknown or list(layers)}; choose from {', '.join(names)}")
        self.layers = list(layers)
        depth = max(names.index(layer) for layer in layers) + 1
        modules: list[nn.Module] = []
        in_channels = 3
        for item in _VGG19_CONFIG:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                # Not in-place: a stored pre-activation output must not be overwritten by its ReLU.
                modules += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU()]
                in_channels = item
        self.features = nn.Sequential(*modules[:depth])
        self.names = names[:depth]
        if pretrained:
            self.features.load_state_dict(_imagenet_state_dict(weights_path, depth))
        self.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (images - self.mean) / self.std
        outputs = {}
        for name, module in zip(self.names, self.features):
            x = module(x)
            if name in self.layers:
                outputs[name] = x
        return outputs


def _imagenet_state_dict(weights_path: str | None, depth: int) -> dict[str, torch.Tensor]:
    """The first ``depth`` layers of the ImageNet VGG19 ``features``, from a file or torchvision's download."""
    url = VGG19_Weights.IMAGENET1K_V1.url
    if weights_path is None:
        try:
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, weights_only=True)
        except Exception as err:  # any network/cache failure ends in the same advice
            raise RuntimeError(
                f"VGG19 ImageNet weights could not be downloaded ({type(err).__name__}: {err}). Download {url} "
                "where there is network access and set `weights_path` of the perceptual loss / VGG19 features "
                "in the config to that file."
            ) from err
        source = url
    else:
        if not Path(weights_path).is_file():
            raise FileNotFoundError(f"{weights_path}: VGG19 weights file not found (config option `weights_path`)")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        source = weights_path
    state = {key.removeprefix("features."): value for key, value in state.items() if not key.startswith("classifier.")}
    conv_indices = [i for i, name in enumerate(vgg19_layer_names()[:depth]) if name.startswith("conv")]
    needed = {f"{i}.{kind}" for i in conv_indices for kind in ("weight", "bias")}
    missing = sorted(needed - state.keys(), key=lambda k: (int(k.split(".")[0]), k))
    if missing:
        raise ValueError(f"{source}: not a VGG19 state dict, missing {', '.join(missing[:4])}")
    return {key: state[key] for key in needed}

