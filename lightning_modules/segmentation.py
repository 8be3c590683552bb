"""Semantic segmentation: cross-entropy (+ optional Dice, + auxiliary head), mIoU and friends.

Metrics (torchmetrics, synced across DDP ranks): ``<split>/miou`` (mean IoU over the classes
that occur in the targets or the predictions), ``<split>/pixel_acc`` and one
``<split>/iou_<class name>`` per class; ``ignore_index`` pixels count nowhere. Class names come
from the DataModule (``class_names``); ``predict`` writes ``<name>_mask.png`` (palette PNG
of class ids, VOC colours) and ``<name>_overlay.png`` for each input image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from PIL import Image
from torch import nn
from torch.optim.lr_scheduler import PolynomialLR
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lightning_modules.checks import checked_sum
from lightning_modules.evaluation import Summary
from lightning_modules.export import IMAGE_AXES, ExportSpec, checked_sizes, image_inputs
from lightning_modules.run_logging import log_image_grid


def segmentation_palette() -> torch.Tensor:
    """The Pascal VOC colour map: (256, 3) uint8, class 0 black, 255 (ignore) light gray."""
    palette = torch.zeros(256, 3, dtype=torch.uint8)
    for label in range(256):
        value, r, g, b = label, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[label] = torch.tensor([r, g, b], dtype=torch.uint8)
    palette[255] = torch.tensor([224, 224, 192], dtype=torch.uint8)
    return palette


PALETTE = segmentation_palette()


def colorize(labels: torch.Tensor) -> torch.Tensor:
    """(..., H, W) class ids -> (..., 3, H, W) float colours in [0, 1]."""
    colours = PALETTE.to(labels.device)[labels.clamp(0, 255).long()]
    return colours.movedim(-1, -3).float() / 255.0


def palette_image(labels: torch.Tensor) -> Image.Image:
    """(H, W) class ids -> a palette ("P") PIL image whose pixel values are the class ids."""
    image = Image.fromarray(labels.to(torch.uint8).cpu().numpy())
    image.putpalette(PALETTE.numpy().astype(np.uint8).tobytes())
    return image


def overlay(image: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blend class colours over a (3, H, W) uint8 image; class 0 (background) stays untinted."""
    image = image.float() / 255.0
    blended = (1 - alpha) * image + alpha * colorize(labels)
    return torch.where(labels[None] > 0, blended, image)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice averaged over classes, computed over the batch; ignored pixels are left out."""
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.softmax(dim=1) * valid
    one_hot = F.one_hot(target.masked_fill(~valid[:, 0], 0), logits.shape[1]).movedim(-1, 1) * valid
    intersection = (probs * one_hot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return 1 - ((2 * intersection + smooth) / (total + smooth)).mean()


def segmentation_metrics(num_classes: int, ignore_index: int, prefix: str) -> MetricCollection:
    """mIoU, per-class IoU (one confusion matrix shared by both) and pixel accuracy."""
    return MetricCollection(
        {
            "miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index),
            "iou": MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index),
            "pixel_acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index),
        },
        prefix=prefix,
    )


class MainHead(nn.Module):
    """The main-head logits of a net that may return ``{"out": ..., "aux": ...}``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.net(images)
        return outputs["out"] if isinstance(outputs, dict) else outputs


class SegmentationModule(LightningModule):
    """Trains any ``net`` that maps (N, 3, H, W) images in [0, 1] to (N, C, H, W) logits, or to
    ``{"out": logits, "aux": logits}`` (torchvision models; ``aux`` weighs ``aux_weight``).

    Loss = CE(ignore_index) + ``dice_weight`` x Dice + ``aux_weight`` x CE on ``aux``.
    ``optimizer`` comes from the config (e.g. SGD or Adam); ``poly_power`` adds the poly
    schedule ``lr * (1 - step / total_steps) ** poly_power`` stepped every batch (``None``:
    constant learning rate).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerCallable = torch.optim.Adam,
        poly_power: float | None = None,
        ignore_index: int = 255,
        dice_weight: float = 0.0,
        aux_weight: float = 0.5,
        overlay_alpha: float = 0.5,
        num_logged_images: int = 8,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.num_classes = num_classes
        self.optimizer = optimizer
        self.poly_power = poly_power
        self.ignore_index = ignore_index
        self.dice_weight = dice_weight
        self.aux_weight = aux_weight
        self.overlay_alpha = overlay_alpha
        self.num_logged_images = num_logged_images
        self.class_names = [f"class_{i}" for i in range(num_classes)]
        self.val_metrics = segmentation_metrics(num_classes, ignore_index, "val/")
        self.test_metrics = segmentation_metrics(num_classes, ignore_index, "test/")

    def setup(self, stage: str) -> None:
        names = getattr(self.trainer.datamodule, "class_names", None)
        if names is not None:
            if len(names) != self.num_classes:
                raise ValueError(
                    f"the data has {len(names)} classes {list(names)} but the model has num_classes={self.num_classes}; "
                    "make model.num_classes (and the net's num_classes) match the data"
                )
            self.class_names = list(names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Main-head logits, (N, num_classes, H, W)."""
        return self._outputs(images)["out"]

    def _outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.net(images)
        outputs = outputs if isinstance(outputs, dict) else {"out": outputs}
        if outputs["out"].shape[1] != self.num_classes:
            raise ValueError(f"the net outputs {outputs['out'].shape[1]} channels but num_classes={self.num_classes}")
        return outputs

    def loss_terms(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted loss terms, whose sum is the training loss."""
        terms = {"ce": F.cross_entropy(outputs["out"], target, ignore_index=self.ignore_index)}
        if self.dice_weight > 0:
            terms["dice"] = self.dice_weight * dice_loss(outputs["out"], target, self.ignore_index)
        if "aux" in outputs and self.aux_weight > 0:
            terms["aux"] = self.aux_weight * F.cross_entropy(outputs["aux"], target, ignore_index=self.ignore_index)
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        target = batch["mask"]
        losses = self.loss_terms(self._outputs(batch["image"]), target)
        loss = checked_sum(self, losses)
        batch_size = len(target)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, batch_size=batch_size)
        return loss

    def _evaluate(self, batch: dict, split: str, metrics: MetricCollection) -> torch.Tensor:
        logits = self(batch["image"])
        target = batch["mask"]
        loss = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        self.log(f"{split}/loss", loss, sync_dist=True, batch_size=len(target))
        predictions = logits.argmax(dim=1)
        metrics.update(predictions, target)
        return predictions

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        predictions = self._evaluate(batch, "val", self.val_metrics)
        if batch_idx == 0 and self.num_logged_images > 0:
            n = self.num_logged_images
            rows = torch.stack([batch["image"][:n], colorize(batch["mask"][:n]), colorize(predictions[:n])], dim=1)
            log_image_grid(self, "val/samples", rows.flatten(0, 1), nrow=3)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def _log_metrics(self, metrics: MetricCollection) -> None:
        values = metrics.compute()
        metrics.reset()
        prefix = metrics.prefix
        per_class = values.pop(f"{prefix}iou")
        self.log(f"{prefix}miou", values.pop(f"{prefix}miou"), prog_bar=True)
        values.update({f"{prefix}iou_{name}": iou for name, iou in zip(self.class_names, per_class)})
        self.log_dict(values)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics)

    def evaluation_summary(self) -> Summary:
        return Summary(
            f"Validation (IoU per class; ignore_index {self.ignore_index} pixels left out)",
            rows=("miou", "pixel_acc", *(f"iou_{name}" for name in self.class_names)),
        )

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics)

    def export_spec(self) -> ExportSpec:
        """The net's main head: [0, 1] images to class logits, any batch size; sides that are multiples
        of the U-Net's ``2**depth`` (predict pads to them), any for the torchvision nets."""
        multiple = getattr(self.net, "multiple", 1)
        return ExportSpec(
            MainHead(self.net), ("image",), "logits", image_inputs(3), checked_sizes(multiple, 32), {"image": IMAGE_AXES},
            {"task": "segmentation", "image": "(N, 3, H, W) RGB in [0, 1] (normalised inside)",
             "logits": f"(N, {self.num_classes}, H, W) class logits; argmax over dim 1 = class id",
             "class_names": ", ".join(self.class_names), "ignore_index": str(self.ignore_index)},
            multiple,
        )

    def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[str, object]]:
        """For each image: a palette mask of class ids and a colour overlay, at the input's size."""
        written = []
        for image, original, name in zip(batch["image"], batch["original"], batch["name"]):
            logits = self(image[None])
            logits = F.interpolate(logits, size=original.shape[-2:], mode="bilinear", align_corners=False)
            labels = logits.argmax(dim=1)[0]
            written.append((f"{name}_mask.png", palette_image(labels)))
            written.append((f"{name}_overlay.png", overlay(original.to(labels.device), labels, self.overlay_alpha)))
        return written

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.poly_power is None:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        if not np.isfinite(total_steps):
            raise ValueError("the poly schedule needs a finite length: set trainer.max_steps or trainer.max_epochs")
        scheduler = PolynomialLR(optimizer, total_iters=int(total_steps), power=self.poly_power)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
