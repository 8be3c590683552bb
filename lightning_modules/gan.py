"""Unconditional image GAN (DCGAN, SNGAN, WGAN-GP) on :class:`~datamodules.generation.GenerationDataModule`."""

from __future__ import annotations

from copy import deepcopy
from functools import partial

import torch
import torchvision
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from lightning_modules.adversarial import AdversarialModule
from lightning_modules.export import ExportSpec, ImageNetwork, latent_inputs
from lightning_modules.fid import GenerativeMetrics, keep_fid_optional
from lightning_modules.run_logging import log_image_grid


def slerp(a: Tensor, b: Tensor, steps: int) -> Tensor:
    """Spherical interpolation from ``a`` to ``b`` (Gaussian latents keep their norm; White, 2016)."""
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).unsqueeze(1)
    omega = torch.arccos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def seeded_latents(seeds: list[int], latent_dim: int, device: torch.device) -> Tensor:
    """One N(0, I) latent per seed, drawn on the CPU so a seed gives the same image on any device."""
    return torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)


class GANModule(AdversarialModule):
    """Noise -> image GAN with a sample grid and FID/KID at every validation.

    Training, losses, EMA, optimizers and schedulers are those of
    :class:`~lightning_modules.adversarial.AdversarialModule` (its arguments are accepted
    here too). The generator needs ``latent_dim``, ``image_size`` and ``channels`` attributes
    (as ``networks.dcgan`` and ``networks.sngan`` have).

    Args:
        fid: FID/KID of the EMA generator against the validation images at every validation,
            logged as ``val/fid`` (``val/kid_mean``, ``val/kid_std``); ``null`` turns it off.
        evaluate_raw_generator: also log the raw generator's FID and grid (``val/fid_raw``,
            ``val/samples_raw``) next to the EMA generator's.
        num_grid_samples / grid_seed: the fixed latents rendered as ``val/samples``.
        sample_batch_size: batch size when generating images for FID and predict.
        batch_norm_samples: latents on which the EMA generator's batch-norm statistics are
            recomputed before it is evaluated (averaged weights need their own statistics).
        interpolation_seeds / interpolation_steps: predict also writes a latent interpolation
            strip between the images of these two seeds.
    """

    def __init__(
        self,
        fid: GenerativeMetrics | None = None,
        evaluate_raw_generator: bool = False,
        num_grid_samples: int = 64,
        grid_seed: int = 1234,
        sample_batch_size: int = 250,
        batch_norm_samples: int = 1000,
        interpolation_seeds: tuple[int, int] | None = None,
        interpolation_steps: int = 10,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for attribute in ("latent_dim", "image_size", "channels"):
            if not hasattr(self.generator, attribute):
                raise ValueError(f"generator {type(self.generator).__name__} needs a `{attribute}` attribute")
        self.latent_dim = self.generator.latent_dim
        self.fid = fid
        keep_fid_optional(self)  # FID may be on in one run and off in the next
        self.evaluate_raw_generator = evaluate_raw_generator
        self.sample_batch_size = sample_batch_size
        self.batch_norm_samples = batch_norm_samples
        self.interpolation_seeds = interpolation_seeds
        self.interpolation_steps = interpolation_steps
        noise = torch.randn(num_grid_samples, self.latent_dim, generator=torch.Generator().manual_seed(grid_seed))
        self.register_buffer("grid_noise", noise, persistent=False)  # rebuilt from grid_seed
        self._noise_rng: torch.Generator | None = None
        self._eval_copy: tuple[nn.Module, ...] = ()  # a tuple keeps it out of the state dict
        self._predicted: list[Tensor] = []

    # ----------------------------------------------------------------- sampling
    def on_train_epoch_start(self) -> None:
        # Seeded per epoch (the epoch_seed callback has just reseeded torch), so a run resumed at
        # an epoch boundary draws the same noise; offset by rank, as every rank has the same seed.
        seed = (torch.initial_seed() + 1_000_003 * self.global_rank) % 2**63
        self._noise_rng = torch.Generator(self.device).manual_seed(seed)

    def noise(self, n: int, rng: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device, generator=rng)

    @torch.no_grad()
    def sample(self, latents: Tensor, raw: bool = False) -> Tensor:
        """Images in [-1, 1] from the evaluation (EMA) generator, or the raw one, in batches."""
        generator = self.eval_generator(raw)
        return torch.cat([generator(z) for z in latents.split(self.sample_batch_size)])

    def sample_noise(self, n: int, rng: torch.Generator | None = None, raw: bool = False) -> Tensor:
        """``n`` images from fresh latents."""
        return self.sample(self.noise(n, rng), raw)

    def eval_generator(self, raw: bool = False) -> nn.Module:
        generator = super().eval_generator(raw)
        if generator is self.generator:
            return generator
        if not self._eval_copy:
            # The batch-norm statistics of averaged weights are not the average of the
            # statistics: recompute them on seeded noise (swa_utils.update_bn, as for SWA), in a
            # copy, so that evaluating (e.g. the sanity check of a resumed run) leaves the EMA's
            # averaged buffers, and so the training that follows, as they were.
            copy = deepcopy(generator)
            rng = torch.Generator(self.device).manual_seed(0)
            sizes = [self.sample_batch_size] * (self.batch_norm_samples // self.sample_batch_size)
            with torch.no_grad():
                update_bn([self.noise(n, rng) for n in sizes or [self.batch_norm_samples]], copy)
            self._eval_copy = (copy.eval(),)
        return self._eval_copy[0]

    def training_step(self, batch: dict, batch_idx: int) -> None:
        super().training_step(batch, batch_idx)
        self._eval_copy = ()

    def generate(self, batch: dict) -> Tensor:
        return self.generator(self.noise(batch["image"].shape[0], self._noise_rng))

    def real_images(self, batch: dict) -> Tensor:
        return batch["image"]

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self.fid is not None:
            self.fid.add_real(self, batch["image"])  # once, at the first validation after the sanity check

    def on_validation_epoch_end(self) -> None:
        variants = [("", False)] + ([("_raw", True)] if self.evaluate_raw_generator else [])
        for suffix, raw in variants:
            log_image_grid(self, f"val/samples{suffix}", self.sample(self.grid_noise, raw).add(1).div(2))
            if self.fid is not None:
                self.fid.add_samples(self, partial(self.sample_noise, raw=raw), self.sample_batch_size, seed=10_000)
                self.fid.log(self, "val/", suffix, prog_bar=not suffix)

    def export_spec(self) -> ExportSpec:
        """The evaluation (EMA) generator: latents to images, any batch size."""
        g = self.generator
        return ExportSpec(
            ImageNetwork(self.eval_generator(), signed_output=True), ("z",), "image", latent_inputs(self.latent_dim),
            ((1, 0, 0), (3, 0, 0)), {"z": {0: "batch"}},
            {"task": "generation (GAN)", "z": f"(N, {self.latent_dim}) standard normal latents",
             "image": f"(N, {g.channels}, {g.image_size}, {g.image_size}) in [0, 1]"},
        )

    # ----------------------------------------------------------------- predict
    def on_predict_start(self) -> None:
        self._predicted = []

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[tuple[str, Tensor]]:
        """``sample_<seed>.png`` per seed; after the last batch also ``grid.png`` of the first
        ``num_grid_samples`` samples (and the interpolation strip)."""
        seeds = [int(s) for s in batch["seed"]]
        images = self.sample(seeded_latents(seeds, self.latent_dim, self.device)).add(1).div(2).cpu()
        outputs = [(f"sample_{seed:06d}.png", image) for seed, image in zip(seeds, images)]
        grid_size = self.grid_noise.shape[0]
        if sum(len(chunk) for chunk in self._predicted) < grid_size:
            self._predicted.append(images)
        if batch_idx == self.trainer.num_predict_batches[dataloader_idx] - 1:
            rank = f"_rank{self.global_rank}" if self.trainer.world_size > 1 else ""
            outputs.append((f"grid{rank}.png", _grid(torch.cat(self._predicted)[:grid_size])))
            if self.interpolation_seeds is not None and self.global_rank == 0:
                outputs.append(self._interpolation())
        return outputs

    def _interpolation(self) -> tuple[str, Tensor]:
        first, second = self.interpolation_seeds
        ends = seeded_latents([first, second], self.latent_dim, self.device)
        images = self.sample(slerp(ends[0], ends[1], self.interpolation_steps)).add(1).div(2).cpu()
        return f"interpolation_{first}_{second}.png", _grid(images, nrow=self.interpolation_steps)


def _grid(images: Tensor, nrow: int = 8) -> Tensor:
    return torchvision.utils.make_grid(images.clamp(0, 1), nrow=nrow, padding=2)

