"""Style transfer with the shared feature losses: fast feed-forward (Johnson et al., 2016) and
optimisation-based (Gatys et al., 2016) on one style image.

:class:`StyleTransferModule` trains an image transformation network on content photos with
``content(relu2_2) + style_weight * style(relu1_2, relu2_2, relu3_3, relu4_3) + tv_weight * tv``
(VGG16, :class:`~lightning_modules.perceptual.PerceptualLoss`): content against the photo itself,
style against the Gram matrices of the style image, computed once. Validation logs the same terms
on fixed held-out photos next to those of the unchanged photo (the parameter-free baseline: no
stylisation at all, content 0) and a grid content | stylised. Predict stylises each input at its
own size, blended with the input by ``style_strength``.

:class:`OptimizationStyleTransfer` needs no training: predict optimises the pixels of each
content image for the same losses with L-BFGS or Adam, starting from the photo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchvision.transforms import v2

from datamodules.embedded import SKIMAGE_DATA
from datamodules.image_io import DEFAULT_MAX_PIXELS, read_image
from lightning_modules.checks import checked_sum
from lightning_modules.evaluation import StagedEvaluation, Summary
from lightning_modules.export import IMAGE_AXES, ExportSpec, ImageNetwork, checked_sizes, image_inputs
from lightning_modules.perceptual import PerceptualLoss
from lightning_modules.run_logging import ImageRows
from networks.style_transfer import TransformerNet

#: The style of the embedded default: scikit-image's immunohistochemistry stain (brown and blue dabs).
EMBEDDED_STYLE = SKIMAGE_DATA / "ihc.png"
#: Logged terms (``val/<term>``, ``val/photo_<term>`` for the unchanged photo), ``loss`` their sum.
TERMS = ("content", "style", "tv", "loss")


def read_style_image(path: str | Path, size: int | None) -> Tensor:
    """The style image as (1, 3, H, W) in [0, 1], resized so the short side is ``size`` (``None``: as it is)."""
    image = read_image(path, DEFAULT_MAX_PIXELS)
    if size is not None:
        image = v2.functional.resize(image, size, antialias=True)
    return image.float().div(255).unsqueeze(0)


class StyleTarget:
    """The Gram matrices of the style image, computed once per device from ``style_image`` (read
    lazily: a trained network predicts without it) with the module's ``perceptual`` loss."""

    perceptual: PerceptualLoss
    style_image: str | None
    style_size: int | None

    def style_grams(self) -> dict[str, Tensor]:
        cached = getattr(self, "_style_grams", None)
        if cached is None or next(iter(cached.values())).device != self.device:
            style = read_style_image(self.style_image or EMBEDDED_STYLE, self.style_size).to(self.device)
            # Normal tensors in float32 even when first needed in an inference-mode or autocast pass.
            with torch.inference_mode(False), torch.autocast(self.device.type, enabled=False):
                self._style_grams = self.perceptual.style_grams(style)
        return self._style_grams


class TermMeans(nn.Module):
    """Means over an evaluation pass of each term, for the network's outputs and for the unchanged photos."""

    def __init__(self):
        super().__init__()
        self.means = nn.ModuleDict({f"{kind}{term}": MeanMetric() for kind in ("", "photo_") for term in TERMS})

    def update(self, kind: str, terms: dict[str, Tensor], count: int) -> None:
        for name, value in (terms | {"loss": sum(terms.values())}).items():
            self.means[kind + name].update(value.detach(), weight=count)

    def compute(self) -> dict[str, Tensor]:
        return {name: metric.compute() for name, metric in self.means.items() if metric.update_called}

    def reset(self) -> None:
        for metric in self.means.values():
            metric.reset()


class StyleTransferModule(StyleTarget, StagedEvaluation, LightningModule):
    """Fast neural style transfer: a feed-forward network trained for one style.

    Args:
        network: the image transformation network, [0, 1] -> [0, 1].
        perceptual: the feature loss; its content layers compare output and photo, its style
            layers output and style image (Johnson et al.: VGG16, content relu2_2, style relu1_2,
            relu2_2, relu3_3, relu4_3).
        style_image: the style image file (``null``: the embedded default, scikit-image's ``ihc.png``).
        style_size: short side the style image is resized to (``null``: its own size).
        optimizer: optimizer factory for the network (paper: Adam 1e-3).
        style_strength: predict output = ``strength * stylised + (1 - strength) * photo``.
        num_grid_images: validation photos shown as content | stylised.
    """

    def __init__(
        self,
        network: TransformerNet,
        perceptual: PerceptualLoss,
        style_image: str | None = None,
        style_size: int | None = 256,
        optimizer: OptimizerCallable = torch.optim.Adam,
        style_strength: float = 1.0,
        num_grid_images: int = 4,
    ):
        super().__init__()
        if not 0 <= style_strength <= 1:
            raise ValueError(f"model.init_args.style_strength={style_strength} must be in [0, 1]")
        if not perceptual.style_layer_weights:
            raise ValueError("style transfer needs style layers: set the perceptual loss's style_layer_weights")
        self.network, self.perceptual = network, perceptual
        self.style_image, self.style_size = style_image, style_size
        self.optimizer, self.style_strength = optimizer, style_strength
        self.metrics = nn.ModuleDict({"val": TermMeans(), "test": TermMeans()})
        self._grid = ImageRows(num_grid_images)

    def losses(self, stylized: Tensor, photos: Tensor) -> dict[str, Tensor]:
        """The weighted terms of ``stylized`` as a stylisation of ``photos``."""
        return self.perceptual.terms(stylized, photos, self.style_grams())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        photos = batch["image"]
        terms = self.losses(self.network(photos), photos)
        self.log_dict({f"train/{name}": value for name, value in terms.items()}, batch_size=len(photos))
        return checked_sum(self, terms)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.network.parameters())

    @torch.no_grad()
    def stylize(self, photos: Tensor, strength: float | None = None) -> Tensor:
        """``photos`` in the learned style at their own size, blended by ``strength`` (default ``style_strength``)."""
        strength = self.style_strength if strength is None else strength
        return torch.lerp(photos, self.network(photos), strength).clamp(0, 1)

    # ----------------------------------------------------------------- evaluation
    def evaluate_batch(self, batch: dict, batch_idx: int, stage: str) -> None:
        photos = batch["image"]
        stylized = self.stylize(photos, strength=1.0)
        self.metrics[stage].update("", self.losses(stylized, photos), len(photos))
        self.metrics[stage].update("photo_", self.losses(photos, photos), len(photos))
        if stage == "val":
            self._grid.add(photos, stylized)

    def log_evaluation(self, stage: str) -> None:
        values = {f"{stage}/{name}": value for name, value in self.metrics[stage].compute().items()}
        self.metrics[stage].reset()
        self.log_dict(values, sync_dist=False, prog_bar=stage == "val")  # metrics are already synced
        self._grid.log(self, f"{stage}/content_stylized")

    def export_spec(self) -> ExportSpec:
        """The transformation network at full strength (blend with the photo for less), any batch,
        sides that are multiples of 4 (predict pads to them)."""
        return ExportSpec(
            ImageNetwork(self.network), ("photo",), "stylized", image_inputs(3), checked_sizes(4, 32),
            {"photo": IMAGE_AXES},
            {"task": "style transfer", "photo": "(N, 3, H, W) RGB in [0, 1], H and W >= 8",
             "stylized": "(N, 3, H, W) RGB in [0, 1], style_strength 1 (lerp with the photo for less)"},
            4,
        )

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[tuple[str, Tensor]]:
        """Every input stylised as ``<name>.png`` at its own size."""
        return list(zip(batch["output_name"], self.stylize(batch["image"]).cpu()))

    def evaluation_summary(self) -> Summary:
        def example(sample: dict) -> tuple[str, Tensor]:
            photo = sample["image"].unsqueeze(0).to(self.device)
            return "stylized_example.png", torch.cat([photo, self.stylize(photo, strength=1.0)], dim=3)[0]

        return Summary(
            "Validation (weighted loss terms on the held-out photos; photo: the photo left unchanged)",
            rows=TERMS, columns={"model": "val/{}", "photo": "val/photo_{}"},
            example=example, example_caption="Example (content | stylized)",
        )


class OptimizationStyleTransfer(StyleTarget, LightningModule):
    """Gatys et al.: predict optimises each content image's pixels for the feature loss, no training.

    Args:
        perceptual: the feature loss (Gatys et al.: VGG19, content conv4_2, style conv1_1 ...
            conv5_1), its content layers against the content image, its style layers against the
            style image.
        style_image / style_size: as for :class:`StyleTransferModule`.
        method: ``lbfgs`` (Gatys et al.) or ``adam``.
        steps: optimizer steps per image (an L-BFGS step evaluates the loss up to ``max_eval``
            times in its line search).
        lr: step size (``null``: 1 for L-BFGS, 0.02 for Adam).
    """

    def __init__(
        self,
        perceptual: PerceptualLoss,
        style_image: str | None = None,
        style_size: int | None = 512,
        method: Literal["lbfgs", "adam"] = "lbfgs",
        steps: int = 300,
        lr: float | None = None,
    ):
        super().__init__()
        if not perceptual.style_layer_weights:
            raise ValueError("style transfer needs style layers: set the perceptual loss's style_layer_weights")
        self.perceptual = perceptual
        self.style_image, self.style_size = style_image, style_size
        self.method, self.steps = method, steps
        self.lr = lr if lr is not None else (1.0 if method == "lbfgs" else 0.02)

    def optimize(self, photo: Tensor) -> tuple[Tensor, list[float]]:
        """The stylised photo (1, 3, H, W) in [0, 1] and the loss before each step."""
        # Predict runs in inference mode; the pixels need autograd.
        with torch.inference_mode(False), torch.enable_grad():
            grams = self.style_grams()
            content = photo.clone()
            pixels = content.clone().requires_grad_(True)
            if self.method == "lbfgs":
                optimizer = torch.optim.LBFGS([pixels], lr=self.lr, max_iter=1, line_search_fn="strong_wolfe")
            else:
                optimizer = torch.optim.Adam([pixels], lr=self.lr)
            history: list[float] = []

            def closure() -> Tensor:
                optimizer.zero_grad()
                loss = sum(self.perceptual.terms(pixels, content, grams).values())
                loss.backward()
                return loss

            for _ in range(self.steps):
                history.append(float(optimizer.step(closure).detach()))
                with torch.no_grad():
                    pixels.clamp_(0, 1)
            return pixels.detach(), history

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[tuple[str, Tensor]]:
        """Every input stylised as ``<name>.png`` at its own size."""
        return [(name, self.optimize(photo.unsqueeze(0))[0][0].cpu()) for name, photo in zip(batch["output_name"], batch["image"])]
