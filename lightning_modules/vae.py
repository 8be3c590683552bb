"""VAE / beta-VAE training, evaluation and prediction.

The ELBO sums the reconstruction log-likelihood over pixels and the KL over latent dimensions
and averages over the batch, so it is in nats per image (averaging over pixels instead would
silently reweight the KL). The loss is ``recon_nll + beta_t * kl`` with ``beta_t`` ramped
linearly from 0 to ``beta`` over ``kl_warmup_steps``; ``elbo`` is always logged with beta = 1.
An optional feature-consistent term (DFC-VAE, Hou et al., 2017) adds ``perceptual(reconstruction,
image)``, a feature loss between the training reconstruction and the input, both mapped to
[0, 1] (gray images are repeated to RGB by the VGG).

Likelihoods, on images in [-1, 1]:

* ``bernoulli``: the decoder gives logits of p(pixel) for targets (x + 1) / 2 (the MNIST
  convention; continuous targets, so it is a cross-entropy rather than a normalised density);
* ``gaussian``: the decoder gives the mean, with a fixed scale ``gaussian_scale`` (in [-1, 1]
  pixel units) or one learned scale (``learn_scale``, the "calibrated decoder" sigma-VAE).

Validation logs ELBO terms, PSNR/SSIM of posterior-mean reconstructions (images mapped to
[0, 1]), FID of prior samples when ``fid`` is set, a grid of inputs above their
reconstructions and a grid of prior samples from fixed noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torchvision
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lightning_modules.checks import checked_sum
from lightning_modules.export import ExportSpec, ImageNetwork, latent_inputs
from lightning_modules.fid import GenerativeMetrics, keep_fid_optional
from lightning_modules.perceptual import FeatureLoss
from lightning_modules.run_logging import log_image_grid
from networks.vae import ConvVAE

GRID_SAMPLES = 64
GRID_RECONSTRUCTIONS = 8


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions, one value per image."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)


def interpolate_latents(z_start: torch.Tensor, z_end: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points on the segment from ``z_start`` to ``z_end`` (both included), (steps, D)."""
    weights = torch.linspace(0, 1, steps, device=z_start.device).unsqueeze(1)
    return torch.lerp(z_start.unsqueeze(0), z_end.unsqueeze(0), weights)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.add(1).div(2).clamp(0, 1)


def mean_image(output: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Mean image of p(x|z) in [-1, 1] from the decoder's output."""
    return torch.sigmoid(output) * 2 - 1 if likelihood == "bernoulli" else output.clamp(-1, 1)


class MeanImageDecoder(nn.Module):
    """Latents to the mean image of p(x|z) in [-1, 1]: the part of the VAE that generates."""

    def __init__(self, network: ConvVAE, likelihood: str):
        super().__init__()
        self.network, self.likelihood = network, likelihood

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return mean_image(self.network.decode(z), self.likelihood)


class VAEModule(LightningModule):
    """Convolutional (beta-)VAE; the main validation metric is ``val/elbo`` (nats per image).

    Args:
        network: the encoder/decoder.
        likelihood: ``bernoulli`` or ``gaussian`` p(x|z), see the module docstring.
        gaussian_scale: std of the Gaussian likelihood (the initial value when learned).
        learn_scale: learn the Gaussian scale (one scalar) with the rest of the model.
        beta: weight of the KL term (1 = VAE, > 1 = beta-VAE).
        kl_warmup_steps: steps over which the KL weight ramps linearly from 0 to ``beta``.
        optimizer: optimizer factory, from the config.
        fid: FID of prior samples against validation images; ``None`` turns FID off.
        sample_batch_size: batch size when drawing prior samples for FID.
        predict_mode: ``samples`` (one PNG per seed), ``reconstructions`` (of ``data.predict_path``)
            or ``interpolations`` (strips between consecutive inputs, or between the prior samples
            of seeds s and s + 1 without ``data.predict_path``).
        interpolation_steps: frames per interpolation strip, endpoints included.
        perceptual: feature loss between the training reconstruction and the input (DFC-VAE: VGG19
            relu1_1, relu2_1, relu3_1, see :mod:`lightning_modules.perceptual`), added to the
            loss as ``train/perceptual``; ``null`` turns it off.
    """

    def __init__(
        self,
        network: ConvVAE,
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        gaussian_scale: float = 0.1,
        learn_scale: bool = False,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        fid: GenerativeMetrics | None = None,
        sample_batch_size: int = 128,
        predict_mode: Literal["samples", "reconstructions", "interpolations"] = "samples",
        interpolation_steps: int = 8,
        perceptual: FeatureLoss | None = None,
    ):
        super().__init__()
        self.network = network
        self.likelihood = likelihood
        self.log_scale = nn.Parameter(torch.tensor(math.log(gaussian_scale)), requires_grad=learn_scale)
        self.beta = beta
        self.kl_warmup_steps = kl_warmup_steps
        self.optimizer = optimizer
        self.fid = fid
        keep_fid_optional(self)
        self.sample_batch_size = sample_batch_size
        self.predict_mode = predict_mode
        self.interpolation_steps = interpolation_steps
        self.perceptual = perceptual
        grid_noise = torch.randn(GRID_SAMPLES, network.latent_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("grid_noise", grid_noise, persistent=False)
        self.eval_metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict(
                    {
                        "elbo": MeanMetric(),
                        "recon_nll": MeanMetric(),
                        "kl": MeanMetric(),
                        "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
                        "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
                    }
                )
                for stage in ("val", "test")
            }
        )
        self._previous_input: tuple[torch.Tensor, str] | None = None

    # ----- model -----
    def reconstruction_nll(self, output: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) summed over pixels, one value per image."""
        if self.likelihood == "bernoulli":
            nll = nn.functional.binary_cross_entropy_with_logits(output, to_unit(images), reduction="none")
        else:
            nll = 0.5 * ((images - output) / self.log_scale.exp()).pow(2) + self.log_scale + 0.5 * math.log(2 * math.pi)
        return nll.flatten(1).sum(dim=1)

    def elbo_terms(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon_nll, kl, posterior mean), the first two per image."""
        return self.elbo_terms_and_output(images)[:3]

    def elbo_terms_and_output(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`elbo_terms` and the decoder's output (of a latent sampled from the posterior)."""
        output, mu, logvar = self.network(images)
        return self.reconstruction_nll(output, images), kl_to_standard_normal(mu, logvar), mu, output

    def mean_image(self, output: torch.Tensor) -> torch.Tensor:
        """Mean image of p(x|z) in [-1, 1] from the decoder's output."""
        return mean_image(output, self.likelihood)

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """Mean image of p(x|z) in [-1, 1]."""
        return self.mean_image(self.network.decode(z))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean (deterministic reconstruction) in [-1, 1]."""
        return self.decode_images(self.network.encode(images)[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.network.latent_dim, generator=generator, device=self.device)
        return self.decode_images(z)

    def kl_weight(self) -> float:
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, (self.global_step + 1) / self.kl_warmup_steps)

    # ----- training -----
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = batch["image"]
        recon_nll, kl, _, output = self.elbo_terms_and_output(images)
        n = images.shape[0]
        # The loss (recon_nll + beta_t * kl) is not logged: every self.log costs ~0.5 ms a step.
        self.log("train/elbo", -(recon_nll + kl).mean(), prog_bar=True, batch_size=n)
        self.log("train/recon_nll", recon_nll.mean(), batch_size=n)
        self.log("train/kl", kl.mean(), batch_size=n)
        if self.likelihood == "gaussian" and self.log_scale.requires_grad:
            self.log("train/scale", self.log_scale.exp(), batch_size=n)
        terms = {"recon_nll": recon_nll.mean(), "kl": self.kl_weight() * kl.mean()}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(to_unit(self.mean_image(output)), to_unit(images))
            self.log("train/perceptual", terms["perceptual"], batch_size=n)
        return checked_sum(self, terms)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The frozen feature network stays out: the optimizer state of a run with and without it is the same.
        return self.optimizer([p for name, p in self.named_parameters() if not name.startswith("perceptual.")])

    # ----- evaluation -----
    def _evaluate(self, batch: dict, stage: str) -> torch.Tensor:
        images = batch["image"]
        recon_nll, kl, mu = self.elbo_terms(images)
        reconstructions = self.decode_images(mu)
        metrics = self.eval_metrics[stage]
        metrics["elbo"].update(-(recon_nll + kl))
        metrics["recon_nll"].update(recon_nll)
        metrics["kl"].update(kl)
        metrics["psnr"].update(to_unit(reconstructions), to_unit(images))
        metrics["ssim"].update(to_unit(reconstructions), to_unit(images))
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=name == "elbo")
        return reconstructions

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images = batch["image"]
        reconstructions = self._evaluate(batch, "val")
        if batch_idx == 0:
            k = min(GRID_RECONSTRUCTIONS, images.shape[0])
            log_image_grid(self, "val/reconstructions", to_unit(torch.cat([images[:k], reconstructions[:k]])), nrow=k)
        if self.fid is not None:
            self.fid.add_real(self, images)

    def on_validation_epoch_end(self) -> None:
        log_image_grid(self, "val/samples", to_unit(self.decode_images(self.grid_noise)))
        if self.fid is not None:
            self.fid.add_samples(self, self.sample, self.sample_batch_size, seed=1000)
            self.fid.log(self, "val/")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def export_spec(self) -> ExportSpec:
        """The decoder: latents to mean images, any batch size."""
        net = self.network
        return ExportSpec(
            ImageNetwork(MeanImageDecoder(net, self.likelihood), signed_output=True), ("z",), "image",
            latent_inputs(net.latent_dim), ((1, 0, 0), (3, 0, 0)), {"z": {0: "batch"}},
            {"task": "generation (VAE decoder)", "z": f"(N, {net.latent_dim}) latents (prior: standard normal)",
             "image": f"(N, {net.channels}, {net.image_size}, {net.image_size}) mean of p(x|z) in [0, 1]"},
        )

    # ----- predict -----
    def on_predict_start(self) -> None:
        self._previous_input = None

    def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[str, torch.Tensor]]:
        """``(relative_path, image in [0, 1])`` pairs for the prediction writer."""
        if "seed" in batch:
            return self._predict_from_seeds([int(s) for s in batch["seed"]])
        return self._predict_from_images(batch["image"], [Path(p).stem for p in batch["path"]])

    def _predict_from_seeds(self, seeds: list[int]) -> list[tuple[str, torch.Tensor]]:
        if self.predict_mode == "reconstructions":
            raise ValueError("model.predict_mode=reconstructions needs input images: set data.predict_path")
        if self.predict_mode == "samples":
            images = self.decode_images(torch.stack([self.prior_latent(s) for s in seeds]))
            return [(f"samples/{s:06d}.png", to_unit(image)) for s, image in zip(seeds, images)]
        return [
            (f"interpolations/{s:06d}_{s + 1:06d}.png", self.interpolation_strip(self.prior_latent(s), self.prior_latent(s + 1)))
            for s in seeds
        ]

    def _predict_from_images(self, images: torch.Tensor, stems: list[str]) -> list[tuple[str, torch.Tensor]]:
        if self.predict_mode == "samples":
            raise ValueError("model.predict_mode=samples draws from seeds: leave data.predict_path unset")
        if self.predict_mode == "reconstructions":
            return [(f"reconstructions/{stem}.png", to_unit(image)) for stem, image in zip(stems, self.reconstruct(images))]
        # Consecutive inputs are paired, across batch boundaries too.
        latents = list(zip(self.network.encode(images)[0], stems))
        if self._previous_input is not None:
            latents.insert(0, self._previous_input)
        self._previous_input = latents[-1]
        return [
            (f"interpolations/{stem_a}__{stem_b}.png", self.interpolation_strip(z_a, z_b))
            for (z_a, stem_a), (z_b, stem_b) in zip(latents, latents[1:])
        ]

    def prior_latent(self, seed: int) -> torch.Tensor:
        """z ~ N(0, I) drawn on the CPU from ``seed``: the same sample on every device and batch size."""
        return torch.randn(self.network.latent_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)

    def interpolation_strip(self, z_start: torch.Tensor, z_end: torch.Tensor) -> torch.Tensor:
        """One row of ``interpolation_steps`` decoded frames, (3, H, W + padding) in [0, 1]."""
        frames = to_unit(self.decode_images(interpolate_latents(z_start, z_end, self.interpolation_steps)))
        return torchvision.utils.make_grid(frames, nrow=self.interpolation_steps, padding=2, pad_value=1.0)
