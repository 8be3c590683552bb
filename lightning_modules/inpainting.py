"""Image inpainting on the shared GAN machinery (DeepFill v2 style, with LaMa's perceptual term).

Masks are (N, 1, H, W) with **1 = hole**. The output is always composited: known pixels are
copied from the input bit for bit, the generator only fills the holes.

Generator loss = ``hole_l1_weight * L1(holes) + valid_l1_weight * L1(known pixels)`` on the
raw prediction, ``+ perceptual(composite, image)`` (VGG content and style, optional), ``+ adversarial_weight *
hinge`` from an SN-PatchGAN that sees the composite and the mask.

Evaluation (the MMagic protocol): PSNR and SSIM on the whole composited image (8-bit, RGB,
SSIM on the valid region of the 11x11 Gaussian window, per image then averaged), masked L1 =
mean absolute error over the hole pixels x 100 on [0, 1], per image then averaged; FID
(shared implementation) optionally, of the composites against the ground truth of the same
evaluation set (both recomputed at every validation and test).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_modules.adversarial import AdversarialModule
from lightning_modules.evaluation import PairedEvaluation, Summary
from lightning_modules.export import IMAGE_AXES, ExportSpec, checked_sizes, image_inputs
from lightning_modules.fid import GenerativeMetrics, keep_fid_optional
from lightning_modules.run_logging import ImageRows
from lightning_modules.perceptual import FeatureLoss
from lightning_modules.sr_metrics import SuperResolutionMetrics

#: Logged metric names (``val/<name>``, ``test/<name>``) besides FID.
METRIC_NAMES = ("psnr", "ssim", "masked_l1")


def composite(prediction: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """The prediction in the holes (mask 1), the image elsewhere, copied exactly."""
    return torch.where(mask.bool(), prediction, image)


def masked_l1(prediction: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean absolute error over the pixels where ``weight`` (N, 1, H, W) is 1, all channels:
    ``sum(|p - t| * w) / (sum(w) * C)`` (0 when ``weight`` is all zero)."""
    total = ((prediction - target).abs() * weight).sum()
    return total / (weight.sum() * prediction.shape[1]).clamp(min=1)


def show_holes(image: Tensor, mask: Tensor) -> Tensor:
    """The network's view of the input for grids: holes painted white."""
    return torch.where(mask.bool(), torch.ones_like(image), image)


class MaskedL1(Metric):
    """Per-image mean absolute error over the hole pixels, x 100 on [0, 1] (MMagic's inpainting
    "L1"), averaged over the images that have holes; DDP-synced sums."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, output: Tensor, target: Tensor, mask: Tensor) -> None:
        errors = ((output.double() - target.double()).abs() * mask).sum(dim=(1, 2, 3))
        holes = mask.double().sum(dim=(1, 2, 3)) * output.shape[1]
        has_holes = holes > 0
        self.total += (100 * errors[has_holes] / holes[has_holes]).sum()
        self.num_images += int(has_holes.sum())

    def compute(self) -> Tensor:
        return self.total / self.num_images


class InpaintingMetrics(nn.Module):
    """PSNR, SSIM (RGB, 8-bit, whole composited image) and masked L1 of one evaluation stage."""

    def __init__(self):
        super().__init__()
        self.quality = SuperResolutionMetrics(crop_border=0)
        self.masked_l1 = MaskedL1()

    def update(self, output: Tensor, target: Tensor, mask: Tensor) -> None:
        self.quality.update(output, target)
        self.masked_l1.update(output, target, mask)

    def compute(self) -> dict[str, Tensor]:
        quality = self.quality.compute()
        return {"psnr": quality["psnr_rgb"], "ssim": quality["ssim_rgb"], "masked_l1": self.masked_l1.compute()}

    def reset(self) -> None:
        self.quality.reset()
        self.masked_l1.reset()


class CompositedGenerator(nn.Module):
    """The generator's prediction, clamped, in the holes; the known pixels everywhere else."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        return composite(self.generator(image, mask).clamp(0, 1), image, mask)


def image_and_mask_inputs(batch: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Random images known only in their top-left corner: a hole that reaches every level of the fill."""
    (image,) = image_inputs(3)(batch, height, width)
    mask = torch.ones(batch, 1, height, width)
    mask[..., : max(height // 8, 1), : max(width // 8, 1)] = 0
    return image, mask


class InpaintingModule(PairedEvaluation, AdversarialModule):
    """Gated-conv generator + SN-PatchGAN trained with hole/valid L1, perceptual and hinge losses.

    Training, EMA, optimizers, schedulers and gradient clipping are those of
    :class:`~lightning_modules.adversarial.AdversarialModule` (its arguments are accepted here;
    ``loss: hinge`` is the inpainting choice). The generator is called as ``generator(image,
    mask)`` and the discriminator on the composite concatenated with the mask (4 channels).

    Args:
        hole_l1_weight / valid_l1_weight: weights of the L1 loss on hole and on known pixels
            of the raw prediction (DeepFill v2: 1 and 1).
        perceptual: feature loss of the composite against the image: VGG content and style
            terms (partial-conv / LaMa training: ``style_layer_weights``, ``style_weight``), or
            LPIPS (real weights or a local file, see :mod:`lightning_modules.perceptual`);
            ``null`` turns it off.
        fid: FID of the composites against the ground-truth images at every validation
            (``val/fid``) and test; ``null`` turns it off.
        num_grid_images: validation images shown as masked input | output | ground truth.
    """

    grid_key = "masked_output_truth"

    def __init__(
        self,
        hole_l1_weight: float = 1.0,
        valid_l1_weight: float = 1.0,
        perceptual: FeatureLoss | None = None,
        fid: GenerativeMetrics | None = None,
        num_grid_images: int = 8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hole_l1_weight, self.valid_l1_weight = hole_l1_weight, valid_l1_weight
        self.perceptual = perceptual
        self.fid = fid
        keep_fid_optional(self)
        self.metrics = nn.ModuleDict({"val": InpaintingMetrics(), "test": InpaintingMetrics()})
        self._grid = ImageRows(num_grid_images)

    # ----------------------------------------------------------------- GAN hooks
    def generate(self, batch: dict) -> Tensor:
        """The raw prediction (whole image); compositing happens where it is judged."""
        return self.generator(batch["image"], batch["mask"])

    def real_images(self, batch: dict) -> Tensor:
        return batch["image"]

    def discriminator_input(self, images: Tensor, batch: dict) -> Tensor:
        # Composite with the batch's known pixels: a real image stays itself, a prediction
        # becomes what the user gets, so the discriminator can only judge the filled holes.
        return torch.cat([composite(images, batch["image"], batch["mask"]), batch["mask"]], dim=1)

    def extra_generator_losses(self, fake: Tensor, batch: dict) -> dict[str, Tensor]:
        image, mask = batch["image"], batch["mask"]
        terms = {
            "hole_l1": self.hole_l1_weight * masked_l1(fake, image, mask),
            "valid_l1": self.valid_l1_weight * masked_l1(fake, image, 1 - mask),
        }
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(composite(fake, image, mask), image)
        return terms

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def inpaint(self, image: Tensor, mask: Tensor, raw: bool = False) -> Tensor:
        """Composited output of the evaluation (EMA) generator, or the raw one, in [0, 1]."""
        prediction = self.eval_generator(raw)(image, mask).clamp(0, 1)
        return composite(prediction, image, mask)

    # ----------------------------------------------------------------- evaluation
    def evaluate_batch(self, batch: dict, batch_idx: int, stage: str) -> None:
        image, mask = batch["image"], batch["mask"]
        output = self.inpaint(image, mask)
        self.metrics[stage].update(output, image, mask)
        if self.fid is not None:
            self.fid.add_real(self, image * 2 - 1)
            self.fid.add_fake(self, output * 2 - 1)
        if stage == "val":
            self._grid.add(show_holes(image, mask), output, image)

    def export_spec(self) -> ExportSpec:
        """The evaluation (EMA) generator with the composite: image and mask to the filled image."""
        generator = self.eval_generator()
        return ExportSpec(
            CompositedGenerator(generator), ("image", "mask"), "inpainted", image_and_mask_inputs, checked_sizes(1, 32),
            {"image": IMAGE_AXES, "mask": IMAGE_AXES},
            {"task": "inpainting", "image": "(N, 3, H, W) RGB in [0, 1] (pixels under the mask are ignored)",
             "mask": "(N, 1, H, W), 1 = hole to fill, 0 = known pixel",
             "inpainted": "(N, 3, H, W) RGB in [0, 1], known pixels unchanged"},
        )

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[tuple[str, Tensor]]:
        """The composited output of every image, as ``<name>.png`` (known pixels unchanged)."""
        return list(zip(batch["output_name"], self.inpaint(batch["image"], batch["mask"]).cpu()))

    def evaluation_summary(self) -> Summary:
        def example(sample: dict) -> tuple[str, Tensor]:
            image, mask = sample["image"].unsqueeze(0).to(self.device), sample["mask"].unsqueeze(0).to(self.device)
            return "inpainted_example.png", torch.cat([show_holes(image, mask), self.inpaint(image, mask), image], dim=3)[0]

        return Summary(
            "Validation (composited output; masked_l1 = hole MAE x 100 on [0, 1])", rows=(*METRIC_NAMES, "fid"),
            example=example, example_caption="Example (masked input | output | ground truth)",
        )
