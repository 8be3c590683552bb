"""Feature losses shared by every task: VGG content / style / total-variation terms, and LPIPS.

* :class:`PerceptualLoss`: a frozen VGG16 or VGG19 (torchvision layer numbering) and, from one
  backbone pass over the output, a content term (L1 or MSE between features: Johnson et al.,
  ESRGAN's conv5_4), a style term (MSE between Gram matrices normalised by C*H*W: Gatys et al.,
  Johnson et al., partial-conv inpainting) and a total-variation term on the output.
* :class:`LPIPSLoss`: torchmetrics' LPIPS network as a training term.

Both take images in [0, 1] and subclass :class:`FeatureLoss`, the type of every task's
``perceptual`` option. Their networks are fixed published weights, left out of ``state_dict``:
checkpoints stay small and load whether or not a task has a feature loss (they are rebuilt from
``weights_path`` or the download when the loss is constructed; random weights only with an
explicit ``pretrained: false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from networks.vgg import Architecture, VGGFeatures

#: torchvision ImageNet weights that torchmetrics' LPIPS backbones download.
LPIPS_BACKBONE_WEIGHTS = {
    "alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
    "squeeze": torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1,
}


def gram_matrix(features: Tensor) -> Tensor:
    """(N, C, H, W) features -> (N, C, C) Gram matrices divided by C*H*W, in float32 (bf16 sums
    over H*W positions would lose the style statistics)."""
    n, c, h, w = features.shape
    with torch.autocast(device_type=features.device.type, enabled=False):
        flat = features.float().reshape(n, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def total_variation(images: Tensor) -> Tensor:
    """Anisotropic total variation: mean absolute difference between vertical neighbours plus
    the same between horizontal neighbours."""
    vertical = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return vertical + horizontal


class FeatureLoss(nn.Module):
    """A loss ``forward(output, target) -> scalar`` on [0, 1] images whose network is fixed and
    kept out of checkpoints (loading one keeps the weights this loss was built with)."""

    def __init__(self):
        super().__init__()
        exclude_from_checkpoints(self)


def exclude_from_checkpoints(module: nn.Module) -> None:
    """Keep ``module``'s fixed published weights out of its ``state_dict``; loading a state dict
    (with or without them) keeps the weights it has, so checkpoints load either way."""
    module.register_state_dict_post_hook(_drop_own_entries)
    module.register_load_state_dict_pre_hook(_keep_current_entries)


def _drop_own_entries(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]


def _keep_current_entries(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints hold no feature-network weights: load the ones this module already has."""
    for name, child in module.named_children():
        for key, value in child.state_dict(prefix=f"{prefix}{name}.").items():
            state_dict.setdefault(key, value)


class PerceptualLoss(FeatureLoss):
    """``weight * (content + style_weight * style + tv_weight * tv)`` from one pass of a frozen VGG.

    * content: ``sum_l layer_weights[l] * distance(VGG_l(output), VGG_l(target))``;
    * style: ``sum_l style_layer_weights[l] * MSE(G_l(output), G_l(style))``, ``G`` the Gram matrix
      divided by C*H*W; the style is the target, or Gram matrices computed once with
      :meth:`style_grams` (style transfer);
    * tv: :func:`total_variation` of the output.

    Args:
        layer_weights: content layer name -> weight (default ``{"conv5_4": 1.0}``, ESRGAN's;
            ``{}``: no content term).
        weights_path: local ImageNet state dict of ``arch`` (torchvision's file); without it
            torchvision downloads the weights, and construction fails with an error naming this
            option when it cannot.
        pretrained: ``False`` uses random VGG weights: for tests and timing only, never a fallback.
        weight: overall weight of the loss (0 leaves the task's loss as without it).
        distance: content distance, ``l1`` (ESRGAN) or ``mse`` (Johnson et al.).
        arch: backbone, ``vgg19`` or ``vgg16`` (Johnson et al.); layer names as ``relu2_2``, ``conv5_4``.
        style_layer_weights: style layer name -> weight (``null``: no style term).
        style_weight: weight of the style term relative to the content term.
        tv_weight: weight of the total-variation term (0: none).
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] | None = None,
        weights_path: str | None = None,
        pretrained: bool = True,
        weight: float = 1.0,
        distance: Literal["l1", "mse"] = "l1",
        arch: Architecture = "vgg19",
        style_layer_weights: Mapping[str, float] | None = None,
        style_weight: float = 1.0,
        tv_weight: float = 0.0,
    ):
        super().__init__()
        self.layer_weights = dict({"conv5_4": 1.0} if layer_weights is None else layer_weights)
        self.style_layer_weights = dict(style_layer_weights or {})
        if not (self.layer_weights or self.style_layer_weights):
            raise ValueError("the perceptual loss needs content layers (layer_weights) or style layers (style_layer_weights)")
        self.weight, self.style_weight, self.tv_weight = weight, style_weight, tv_weight
        self.distance = F.l1_loss if distance == "l1" else F.mse_loss
        layers = [*self.layer_weights, *self.style_layer_weights]
        self.vgg = VGGFeatures(layers, arch=arch, weights_path=weights_path, pretrained=pretrained)

    @torch.no_grad()
    def style_grams(self, style: Tensor) -> dict[str, Tensor]:
        """The style layers' Gram matrices of ``style`` images, to compute once and pass to :meth:`terms`."""
        features = self.vgg(style)
        return {layer: gram_matrix(features[layer]) for layer in self.style_layer_weights}

    def terms(self, output: Tensor, target: Tensor, style_grams: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The weighted ``content``, ``style`` and ``tv`` terms that are configured (their sum is the loss).

        ``style_grams`` (from :meth:`style_grams`, batch 1 or the output's) replaces the target as the style.
        """
        features = self.vgg(output)
        target_features = {}
        if self.layer_weights or style_grams is None:
            with torch.no_grad():
                target_features = self.vgg(target.detach())
        terms = {}
        if self.layer_weights:
            terms["content"] = sum(w * self.distance(features[k], target_features[k]) for k, w in self.layer_weights.items())
        if self.style_layer_weights:
            if style_grams is None:
                style_grams = {k: gram_matrix(target_features[k]) for k in self.style_layer_weights}
            style = 0
            for k, w in self.style_layer_weights.items():
                gram = gram_matrix(features[k])
                style = style + w * F.mse_loss(gram, style_grams[k].expand_as(gram))
            terms["style"] = self.style_weight * style
        if self.tv_weight:
            terms["tv"] = self.tv_weight * total_variation(output)
        return {name: self.weight * value for name, value in terms.items()}

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return sum(self.terms(output, target).values())


class LPIPSLoss(FeatureLoss):
    """``weight * LPIPS(output, target)`` (Zhang et al., 2018), torchmetrics' network, as a training term.

    torchmetrics ships the LPIPS linear layers inside the package; the backbone (AlexNet, VGG16 or
    SqueezeNet) needs torchvision's ImageNet weights, which torchmetrics downloads and which are
    read here from ``weights_path`` or the same download.

    Args:
        net: LPIPS backbone (``alex``, the usual choice; ``vgg``, the one for training losses in
            the LPIPS paper; ``squeeze``).
        weights_path: local torchvision ImageNet state dict of the backbone (e.g. ``alexnet-owt-7be5be79.pth``);
            without it the file is downloaded, and construction fails with an error naming this option when it cannot.
        pretrained: ``False`` uses a random backbone: for tests only, never a fallback.
        weight: weight of the term.
    """

    def __init__(self, net: Literal["alex", "vgg", "squeeze"] = "alex", weights_path: str | None = None,
                 pretrained: bool = True, weight: float = 1.0):
        super().__init__()
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        self.weight = weight
        backbone = _lpips_backbone_state(net, weights_path) if pretrained else None
        # pnet_rand: torchmetrics does not download the backbone; its own linear layers are loaded.
        self.lpips = _NoTrainLpips(net=net, pnet_rand=True)
        if backbone is not None:
            # torchmetrics keeps torchvision's ``features`` indices inside its slices: slice2.3.weight = features.3.weight
            wanted = {key: "features." + key.split(".", 1)[1] for key in self.lpips.net.state_dict()}
            missing = sorted(name for name in wanted.values() if name not in backbone)
            if missing:
                raise ValueError(f"{weights_path or 'download'}: not a torchvision {net} state dict, missing "
                                 f"{', '.join(missing[:4])} (config option `weights_path`)")
            self.lpips.net.load_state_dict({key: backbone[name] for key, name in wanted.items()})
        self.lpips.requires_grad_(False)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return self.weight * self.lpips(output, target.detach(), normalize=True).mean()


def _lpips_backbone_state(net: str, weights_path: str | None) -> dict[str, Tensor]:
    url = LPIPS_BACKBONE_WEIGHTS[net].url
    if weights_path is None:
        try:
            return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, weights_only=True)
        except Exception as err:  # any network/cache failure ends in the same advice
            raise RuntimeError(
                f"LPIPS ({net}) backbone ImageNet weights could not be downloaded ({type(err).__name__}: {err}). "
                f"Download {url} where there is network access and set `weights_path` of the LPIPS loss "
                "(model.init_args.perceptual.init_args.weights_path) in the config to that file."
            ) from err
    if not Path(weights_path).is_file():
        raise FileNotFoundError(f"{weights_path}: LPIPS ({net}) backbone weights file not found (config option `weights_path`)")
    return torch.load(weights_path, map_location="cpu", weights_only=True)
