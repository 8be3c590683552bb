"""torchvision's segmentation models (FCN-ResNet50, DeepLabV3-ResNet50, LRASPP-MobileNetV3)
with explicit, offline-friendly pretrained weights.

``pretrained`` says which weights to start from:

* ``"coco_voc"``: the whole model trained by torchvision on COCO with the 20 VOC classes
  (21 outputs); with another ``num_classes`` the final classifier layers start random;
* ``"imagenet"``: only the backbone, trained on ImageNet-1k; the heads start random;
* ``"random"``: no pretrained weights at all.

The weights come from ``weights_path`` (a local ``.pth`` state dict, e.g. the file at the URL
torchvision uses, downloaded elsewhere) or, without it, from torchvision's download (cached
in ``$TORCH_HOME/hub/checkpoints``). When neither works, construction fails with an error
naming the config option; it never falls back to random weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, WeightsEnum
from torchvision.models import segmentation as tv_seg

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Arch:
    builder: Callable[..., nn.Module]
    full_weights: WeightsEnum
    backbone_weights: WeightsEnum
    #: prefix of the backbone's keys in the ImageNet classifier's state dict
    backbone_prefix: str
    #: final layers whose shape depends on num_classes
    class_layers: tuple[str, ...]


ARCHS = {
    "fcn_resnet50": Arch(
        tv_seg.fcn_resnet50, tv_seg.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1, ResNet50_Weights.IMAGENET1K_V1,
        "", ("classifier.4.", "aux_classifier.4."),
    ),
    "deeplabv3_resnet50": Arch(
        tv_seg.deeplabv3_resnet50, tv_seg.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
        ResNet50_Weights.IMAGENET1K_V1, "", ("classifier.4.", "aux_classifier.4."),
    ),
    "lraspp_mobilenet_v3_large": Arch(
        tv_seg.lraspp_mobilenet_v3_large, tv_seg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1, "features.", ("classifier.low_classifier.", "classifier.high_classifier."),
    ),
}


class TorchvisionSegmentation(nn.Module):
    """A torchvision segmentation model that takes images in [0, 1] (ImageNet normalisation
    happens inside) and returns ``{"out": logits, "aux": logits}`` (``aux`` only with
    ``aux_loss``; LRASPP has no auxiliary head)."""

    def __init__(
        self,
        arch: Literal["fcn_resnet50", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large"],
        num_classes: int,
        pretrained: Literal["coco_voc", "imagenet", "random"],
        weights_path: str | None = None,
        aux_loss: bool = True,
    ):
        super().__init__()
        spec = ARCHS[arch]
        if arch.startswith("lraspp") and aux_loss:
            raise ValueError("lraspp_mobilenet_v3_large has no auxiliary head: set aux_loss: false")
        if pretrained == "random" and weights_path is not None:
            raise ValueError(f"weights_path={weights_path} is set but pretrained is 'random'; choose one")
        extra = {"aux_loss": aux_loss} if not arch.startswith("lraspp") else {}
        self.model = spec.builder(weights=None, weights_backbone=None, num_classes=num_classes, **extra)
        if pretrained == "coco_voc":
            self._load(self.model, fetch_state_dict(spec.full_weights, weights_path), spec.class_layers, arch)
        elif pretrained == "imagenet":
            state = fetch_state_dict(spec.backbone_weights, weights_path)
            prefix = spec.backbone_prefix
            backbone_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            self._load(self.model.backbone, backbone_state, (), f"{arch} backbone")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _load(module: nn.Module, state: dict[str, torch.Tensor], class_layers: tuple[str, ...], what: str) -> None:
        """Load ``state`` except the class-count-dependent layers whose shapes differ; any other
        missing or mismatched weight means the file is not for this architecture."""
        own = module.state_dict()
        reinit = {k for k, v in state.items() if k in own and v.shape != own[k].shape and k.startswith(class_layers)}
        wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape and k not in reinit]
        result = module.load_state_dict({k: v for k, v in state.items() if k not in reinit}, strict=False)
        missing = [k for k in result.missing_keys if k not in reinit and not k.endswith("num_batches_tracked")]
        aux_missing = [k for k in missing if k.startswith("aux_classifier.")]
        missing = [k for k in missing if k not in aux_missing]
        if wrong or missing:
            raise ValueError(
                f"the weights do not fit {what}: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(wrong)} with another shape (e.g. {wrong[:3]}); check weights_path and arch"
            )
        if reinit:
            log.info("%s: class layers %s start random (num_classes differs from the weights)", what, sorted(reinit))
        if aux_missing:
            log.warning("%s: the weights have no auxiliary head; aux_classifier starts random", what)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.model((x - self.mean) / self.std))


def fetch_state_dict(weights: WeightsEnum, weights_path: str | None) -> dict[str, torch.Tensor]:
    """The state dict from ``weights_path`` or, without it, torchvision's download of ``weights``."""
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file not found (set by the net's weights_path option)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("model", state) if isinstance(state, dict) else state
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:
        raise RuntimeError(
            f"could not download the pretrained weights {weights} ({err}). Download {weights.url} on a machine with "
            "internet access and set the net's weights_path option to the file "
            "(--model.net.init_args.weights_path=...), or set pretrained: random to train from scratch"
        ) from None
