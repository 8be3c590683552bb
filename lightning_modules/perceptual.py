"""VGG19 perceptual loss (Johnson et al.; ESRGAN uses conv5_4 before activation, L1, weight 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from networks.vgg import VGG19Features


class PerceptualLoss(nn.Module):
    """``weight * sum_l layer_weights[l] * distance(VGG_l(output), VGG_l(target))`` on [0, 1] RGB images.

    The frozen VGG is left out of ``state_dict`` (checkpoints stay small; it is rebuilt from
    ``weights_path`` or the download when the module is constructed).

    Args:
        layer_weights: VGG19 layer name -> weight (default ``{"conv5_4": 1.0}``).
        weights_path: local VGG19 ImageNet state dict; without it torchvision downloads the
            weights, and construction fails with an error naming this option when it cannot.
        pretrained: ``False`` uses random VGG weights: for tests only, never a fallback.
        weight: overall weight of the loss.
        distance: ``l1`` (ESRGAN) or ``mse``.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] | None = None,
        weights_path: str | None = None,
        pretrained: bool = True,
        weight: float = 1.0,
        distance: Literal["l1", "mse"] = "l1",
    ):
        super().__init__()
        self.layer_weights = dict(layer_weights or {"conv5_4": 1.0})
        self.weight = weight
        self.distance = F.l1_loss if distance == "l1" else F.mse_loss
        self.vgg = VGG19Features(list(self.layer_weights), weights_path=weights_path, pretrained=pretrained)
        self.register_state_dict_post_hook(_drop_vgg_from_state_dict)
        self.register_load_state_dict_pre_hook(_keep_current_vgg_on_load)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output_features = self.vgg(output)
        with torch.no_grad():
            target_features = self.vgg(target.detach())
        loss = sum(w * self.distance(output_features[k], target_features[k]) for k, w in self.layer_weights.items())
        return self.weight * loss


def _drop_vgg_from_state_dict(module: PerceptualLoss, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [key for key in state_dict if key.startswith(prefix + "vgg.")]:
        del state_dict[key]


def _keep_current_vgg_on_load(module: PerceptualLoss, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints hold no VGG weights: load the ones this module already has."""
    for key, value in module.vgg.state_dict(prefix=prefix + "vgg.").items():
        state_dict.setdefault(key, value)
