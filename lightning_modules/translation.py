"""Paired image-to-image translation (pix2pix, Isola et al., 2017) on the shared GAN machinery.

A conditional GAN: the discriminator judges pairs, the input concatenated with either the target
(real) or the generator's output (fake), so it can only accept outputs that fit their input.
Generator loss = ``adversarial_weight * GAN`` (``nonsaturating``: pix2pix's vanilla BCE loss, or
``lsgan``) ``+ l1_weight * L1(output, target)`` (100 in the paper, on [-1, 1] images)
``+ perceptual(output, target)`` (optional). The networks see images in [-1, 1] (Tanh output);
batches, metrics and predicted files are in [0, 1].

Evaluation: PSNR and SSIM (8-bit RGB, whole image, the super-resolution metrics without border
crop) of the output against the target; the same for the ``baseline`` images when the data
brings them (a parameter-free method for the same mapping, e.g. the embedded default's amplified
input), so the table says what the network adds; FID of the outputs against the targets (shared
implementation) when a feature extractor is configured.
Evaluation and predict use the generator (its EMA when ``ema_decay`` is set) in eval mode, dropout
off and batch-norm running statistics: deterministic, where the paper kept dropout and batch
statistics at test time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.adversarial import AdversarialModule
from lightning_modules.evaluation import PairedEvaluation, Summary
from lightning_modules.export import IMAGE_AXES, ExportSpec, ImageNetwork, checked_sizes, image_inputs
from lightning_modules.fid import GenerativeMetrics, keep_fid_optional
from lightning_modules.generator_weights import LoadsPretrainedGenerator
from lightning_modules.perceptual import FeatureLoss
from lightning_modules.run_logging import ImageRows
from lightning_modules.sr_metrics import SuperResolutionMetrics

#: Logged metric names (``val/<name>``, ``val/baseline_<name>``, ``test/...``) besides FID.
METRIC_NAMES = ("psnr", "ssim")


def signed(images: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1], the range the networks work in."""
    return images * 2 - 1


class QualityMetrics(nn.Module):
    """PSNR and SSIM (RGB, 8-bit, whole image) of the outputs and of the baseline of one stage."""

    def __init__(self):
        super().__init__()
        self.model = SuperResolutionMetrics(crop_border=0)
        self.baseline = SuperResolutionMetrics(crop_border=0)

    def update(self, output: Tensor, target: Tensor, baseline: Tensor | None) -> None:
        self.model.update(output, target)
        if baseline is not None:
            self.baseline.update(baseline, target)

    def compute(self) -> dict[str, Tensor]:
        values = {}
        # Every rank sees the same kind of batches, so all have baselines or none has.
        for prefix, metrics in (("", self.model), ("baseline_", self.baseline)):
            if metrics.update_called:
                quality = metrics.compute()
                values |= {f"{prefix}psnr": quality["psnr_rgb"], f"{prefix}ssim": quality["ssim_rgb"]}
        return values

    def reset(self) -> None:
        self.model.reset()
        self.baseline.reset()


class TranslationModule(LoadsPretrainedGenerator, PairedEvaluation, AdversarialModule):
    """pix2pix: U-Net generator, conditional PatchGAN, GAN + L1 (+ perceptual) generator loss.

    Training, EMA, optimizers, schedulers (the paper's constant-then-linear decay:
    :class:`~lightning_modules.schedules.ConstantThenLinearLR`) and gradient clipping are those
    of :class:`~lightning_modules.adversarial.AdversarialModule`, whose arguments are accepted
    here. The generator is called as ``generator(input)``; the discriminator gets input and
    image concatenated (6 channels for RGB). The training hooks see the batch in [-1, 1].

    Args:
        l1_weight: weight of the L1 distance between output and target, on [-1, 1] (paper: 100).
        perceptual: feature loss (VGG content / style, or LPIPS) on [0, 1] output and target
            (real weights or a local file, see :mod:`lightning_modules.perceptual`); ``null``
            turns it off.
        fid: FID of the outputs against the targets at every validation (``val/fid``) and test;
            ``null`` turns it off.
        num_grid_images: validation images shown as input | output | target.
        pretrained_generator: generator weights to start from or to evaluate: a Lightning
            checkpoint, or a state dict such as pytorch-CycleGAN-and-pix2pix's ``latest_net_G.pth``
            (same layout as :class:`~networks.pix2pix.UNetGenerator`; ``--norm``/``--netG`` must
            match the config). Loaded when fit, validate, test or predict starts, unless the run
            restores a checkpoint; the EMA starts from it.
    """

    grid_key = "input_output_target"

    def __init__(
        self,
        l1_weight: float = 100.0,
        perceptual: FeatureLoss | None = None,
        fid: GenerativeMetrics | None = None,
        num_grid_images: int = 8,
        pretrained_generator: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pretrained_generator = pretrained_generator
        self.l1_weight = l1_weight
        self.perceptual = perceptual
        self.fid = fid
        keep_fid_optional(self)
        self.metrics = nn.ModuleDict({"val": QualityMetrics(), "test": QualityMetrics()})
        self._grid = ImageRows(num_grid_images)

    # ----------------------------------------------------------------- GAN hooks
    def training_step(self, batch: dict, batch_idx: int) -> None:
        # The networks work in [-1, 1]: the batch is converted once, for all the hooks below.
        super().training_step({key: signed(batch[key]) for key in ("input", "target")}, batch_idx)

    def generate(self, batch: dict) -> Tensor:
        return self.generator(batch["input"])

    def real_images(self, batch: dict) -> Tensor:
        return batch["target"]

    def discriminator_input(self, images: Tensor, batch: dict) -> Tensor:
        return torch.cat([batch["input"], images], dim=1)

    def extra_generator_losses(self, fake: Tensor, batch: dict) -> dict[str, Tensor]:
        target = batch["target"]
        terms = {"l1": self.l1_weight * F.l1_loss(fake, target)}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual((fake + 1) / 2, (target + 1) / 2)
        return terms

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def translate(self, images: Tensor, raw: bool = False) -> Tensor:
        """Output of the evaluation (EMA) generator, or the raw one, in [0, 1] at the input's size
        (the generator pads to the multiple it needs and crops back)."""
        return self.eval_generator(raw)(signed(images)).add(1).div(2).clamp(0, 1)

    # ----------------------------------------------------------------- evaluation
    def evaluate_batch(self, batch: dict, batch_idx: int, stage: str) -> None:
        source, target = batch["input"], batch["target"]
        output = self.translate(source)
        self.metrics[stage].update(output, target, batch.get("baseline"))
        if self.fid is not None:
            self.fid.add_real(self, signed(target))
            self.fid.add_fake(self, signed(output))
        if stage == "val":
            self._grid.add(source, output, target)

    def export_spec(self) -> ExportSpec:
        """The evaluation (EMA) generator: [0, 1] images in and out, any batch size, sides that are
        multiples of ``2**num_downs`` (predict pads to them)."""
        generator = self.eval_generator()
        return ExportSpec(
            ImageNetwork(generator, signed_input=True, signed_output=True), ("input",), "output", image_inputs(3),
            checked_sizes(generator.multiple), {"input": IMAGE_AXES},
            {"task": "image-to-image translation", "input": "(N, 3, H, W) RGB in [0, 1]",
             "output": "(N, 3, H, W) RGB in [0, 1]"},
            generator.multiple,
        )

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[tuple[str, Tensor]]:
        """The translation of every input image, as ``<name>.png`` at the input's size."""
        return list(zip(batch["output_name"], self.translate(batch["input"]).cpu()))

    def evaluation_summary(self) -> Summary:
        def example(sample: dict) -> tuple[str, Tensor]:
            source, target = sample["input"].unsqueeze(0).to(self.device), sample["target"].unsqueeze(0).to(self.device)
            return "translated_example.png", torch.cat([source, self.translate(source), target], dim=3)[0]

        return Summary(
            "Validation (output vs target, 8-bit RGB; baseline: the data's parameter-free method)",
            rows=(*METRIC_NAMES, "fid"),
            columns={"model": "val/{}", "baseline": "val/baseline_{}"},
            example=example, example_caption="Example (input | output | target)",
        )
