"""FID (and optional KID) shared by every generative task, with literature-comparable settings.

The protocol follows torch-fidelity / the TF Inception FID: images in [-1, 1] are clamped,
rescaled and rounded to uint8, gray is repeated to RGB, and the standard Inception resizes
with the TF1-compatible bilinear resize (``antialias=False``) to 299 and returns the 2048
pool features. A TorchScript file mapping uint8 (N, 3, H, W) to (N, D) features can replace
the Inception (offline clusters, domain-specific FID, tests).

Real statistics are computed once (the first validation) and kept: they are persistent
metric states, so they are saved in checkpoints and a resumed run does not recompute them.
The frozen feature extractor itself is *not* saved in checkpoints (it is rebuilt from the
config). A module turns FID off by leaving its ``fid`` argument ``null``.

A LightningModule holds one as ``self.fid`` (``keep_fid_optional(self)`` in its ``__init__``) and
asks it for nothing but images; every rank makes the same calls, torchmetrics syncs the states::

    # validation_step:
    self.fid.add_real(self, batch["image"])
    # on_validation_epoch_end:
    self.fid.add_samples(self, lambda n, rng: self.sample(n, rng), batch_size, seed=1000)
    self.fid.log(self, "val/")

A task whose fakes come with each batch (inpainting) calls ``add_fake`` in the step instead,
and ``forget_real`` at the start of each evaluation when the real images change with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (N, 1 or 3, H, W) -> uint8 RGB, exact at -1 (0) and 1 (255)."""
    images = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class FeaturesGiven(nn.Module):
    """Identity with ``num_features``: the metrics receive features computed once by :class:`GenerativeMetrics`."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class SubsetCappedKID(KernelInceptionDistance):
    """KID whose subset size shrinks to the number of samples available (small validation sets)."""

    def __init__(self, num_features: int, subset_size: int, **kwargs):
        super().__init__(feature=FeaturesGiven(num_features), subset_size=subset_size, **kwargs)
        self.max_subset_size = subset_size

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        available = min(dim_zero_cat(self.real_features).shape[0], dim_zero_cat(self.fake_features).shape[0])
        self.subset_size = min(self.max_subset_size, available)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return super().compute()


def load_feature_extractor(feature_extractor: str, weights_path: str | None) -> nn.Module:
    """The standard FID Inception, or a TorchScript feature file; errors name the config options."""
    if feature_extractor != "inception":
        path = Path(feature_extractor)
        if not path.is_file():
            raise FileNotFoundError(
                f"fid.feature_extractor={feature_extractor!r} is neither 'inception' nor an existing TorchScript file "
                "(set model.init_args.fid.init_args.feature_extractor, or model.init_args.fid=null to turn FID off)"
            )
        if weights_path is not None:
            raise ValueError("fid.weights_path applies to feature_extractor='inception' only; the TorchScript file holds its weights")
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as err:
            raise RuntimeError(f"fid.feature_extractor={feature_extractor!r}: not a loadable TorchScript file ({err})") from None
    if weights_path is not None and not Path(weights_path).is_file():
        raise FileNotFoundError(
            f"fid.weights_path={weights_path!r} does not exist (model.init_args.fid.init_args.weights_path should "
            f"point at {INCEPTION_WEIGHTS_FILE} from the torch-fidelity releases)"
        )
    try:
        return NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights_path, antialias=False
        )
    except (OSError, RuntimeError) as err:
        raise RuntimeError(
            f"cannot load the FID Inception weights ({type(err).__name__}: {err}). Offline, download "
            f"{INCEPTION_WEIGHTS_FILE} from the torch-fidelity releases and set "
            "model.init_args.fid.init_args.weights_path to it, or set model.init_args.fid.init_args.feature_extractor "
            "to a TorchScript feature file, or turn FID off with model.init_args.fid=null"
        ) from err


class GenerativeMetrics(nn.Module):
    """FID (+ KID) of generated images against real images, on ``num_samples`` of each.

    Args:
        feature_extractor: ``"inception"`` (torch-fidelity InceptionV3, 2048 pool features) or
            the path of a TorchScript file mapping uint8 (N, 3, H, W) images to (N, D) features.
        weights_path: local ``weights-inception-2015-12-05-6726825d.pth`` for ``"inception"``;
            ``None`` tries the standard download (cached by torch.hub).
        num_samples: real and generated images per evaluation (all ranks together).
        kid: also compute KID (``kid_mean``, ``kid_std``).
        kid_subset_size: KID subset size, capped at the number of samples available.
    """

    def __init__(
        self,
        feature_extractor: str = "inception",
        weights_path: str | None = None,
        num_samples: int = 10000,
        kid: bool = False,
        kid_subset_size: int = 1000,
    ):
        super().__init__()
        self.num_samples = num_samples
        # Kept out of the module tree: checkpoints then do not carry the frozen extractor, and
        # ``.to()``/DDP leave it alone; ``features`` moves it to the images' device on use.
        extractor = load_feature_extractor(feature_extractor, weights_path).eval()
        for parameter in extractor.parameters():
            parameter.requires_grad_(False)
        self._extractor = [extractor]
        num_features = self.features(torch.zeros(1, 3, 299, 299, dtype=torch.uint8)).shape[1]
        self.fid = FrechetInceptionDistance(feature=FeaturesGiven(num_features), reset_real_features=False)
        self.kid = SubsetCappedKID(num_features, kid_subset_size, reset_real_features=False) if kid else None
        for metric in self.metrics():
            metric.persistent(True)
        self.register_buffer("real_done", torch.tensor(False))
        self.register_load_state_dict_post_hook(_keep_real_features_on_rank_zero)

    def metrics(self) -> list:
        """The torchmetrics objects that receive the features."""
        return [self.fid] + ([self.kid] if self.kid is not None else [])

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) float32 features of uint8 images, outside autocast."""
        extractor = self._extractor[0]
        first = next(extractor.parameters(), None)
        if first is not None and first.device != images.device:
            extractor.to(images.device)
        with torch.autocast(images.device.type, enabled=False):
            return extractor(images).float().reshape(images.shape[0], -1)

    @property
    def has_real_features(self) -> bool:
        """True once real statistics exist (after the first ``compute`` or a checkpoint load)."""
        return bool(self.real_done)

    def remaining(self, real: bool) -> int:
        """How many more real/generated images this rank should add to reach ``num_samples``."""
        if real and self.has_real_features:
            return 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        counted = self.fid.real_features_num_samples if real else self.fid.fake_features_num_samples
        return max(0, math.ceil(self.num_samples / world) - int(counted))

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add images in [-1, 1] (N, 1 or 3, H, W); an empty batch is ignored."""
        if images.shape[0] == 0:
            return
        features = self.features(to_uint8(images))
        for metric in self.metrics():
            metric.update(features, real=real)

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"fid", ["kid_mean", "kid_std"]}`` over all ranks; the first call freezes the real statistics."""
        if not self.has_real_features:
            self._gather_real_on_rank_zero()
            self.real_done.fill_(True)
        results = {"fid": self.fid.compute()}
        if self.kid is not None:
            results["kid_mean"], results["kid_std"] = self.kid.compute()
        return results

    def reset_fake(self) -> None:
        """Drop the generated images' statistics; the real ones stay."""
        for metric in self.metrics():
            metric.reset()

    def forget_real(self) -> None:
        """Drop the real statistics too, so that the next evaluation recomputes them."""
        for metric in self.metrics():
            metric.reset_real_features = True
            metric.reset()
            metric.reset_real_features = False
        self.real_done.fill_(False)

    def add(self, images: Tensor, real: bool, batch_size: int = 100) -> None:
        """``update`` in batches of ``batch_size`` (a whole image set at once)."""
        for chunk in images.split(batch_size):
            self.update(chunk, real=real)

    def score(self, images: Tensor) -> dict[str, Tensor]:
        """The metrics of generated ``images`` against the real statistics, which stay for the next call."""
        self.add(images, real=False)
        results = self.compute()
        self.reset_fake()
        return results

    # ----------------------------------------------------------------- in a LightningModule
    def add_real(self, module: LightningModule, images: Tensor) -> None:
        """Real images of a validation/test batch, counted until the real statistics are frozen."""
        if not module.trainer.sanity_checking and not self.has_real_features:
            self.update(images[: self.remaining(real=True)], real=True)

    def add_fake(self, module: LightningModule, images: Tensor) -> None:
        """Generated images of a validation/test batch, up to ``num_samples``."""
        if not module.trainer.sanity_checking:
            self.update(images[: self.remaining(real=False)], real=False)

    def add_samples(
        self, module: LightningModule, sample: Callable[[int, torch.Generator], Tensor], batch_size: int, seed: int
    ) -> None:
        """Fill the generated side with ``sample(n, rng)``: the same images at every evaluation
        (``seed``), different on every rank."""
        if module.trainer.sanity_checking:
            return
        rng = torch.Generator(module.device).manual_seed(seed + module.global_rank)
        while (n := self.remaining(real=False)) > 0:
            self.update(sample(min(n, batch_size), rng), real=False)

    def log(self, module: LightningModule, prefix: str, suffix: str = "", prog_bar: bool = False) -> None:
        """Log ``<prefix>fid<suffix>`` (and KID) through ``module`` and drop the generated images."""
        if module.trainer.sanity_checking:
            return
        values = self.compute()
        self.reset_fake()
        module.log_dict({f"{prefix}{name}{suffix}": value for name, value in values.items()}, prog_bar=prog_bar)

    def _gather_real_on_rank_zero(self) -> None:
        """Under DDP, move every rank's real statistics to rank 0 (other ranks hold zeros).

        Their sum over ranks is unchanged, and rank 0's checkpoint then holds the statistics
        of all real images, which is what a resumed run (any world size) must start from.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        rank_zero = dist.get_rank() == 0
        for name in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
            state = getattr(self.fid, name)
            dist.all_reduce(state)
            if not rank_zero:
                state.zero_()
        if self.kid is not None:
            gathered = torch.cat(gather_all_tensors(dim_zero_cat(self.kid.real_features)))
            self.kid.real_features = [gathered if rank_zero else gathered[:0]]


def _keep_real_features_on_rank_zero(module: GenerativeMetrics, incompatible_keys) -> None:
    """A checkpoint holds all real statistics (see ``_gather_real_on_rank_zero``): under DDP
    only rank 0 keeps them after loading, so that the sum over ranks counts them once."""
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0 and module.has_real_features:
        for name in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
            getattr(module.fid, name).zero_()
        if module.kid is not None:
            module.kid.real_features = [dim_zero_cat(module.kid.real_features)[:0]]


def keep_fid_optional(module: nn.Module, attribute: str = "fid") -> None:
    """Let ``module`` load state dicts saved with or without FID (call in its ``__init__``).

    Saved with FID but loaded without (e.g. predict on a machine without the Inception): the
    statistics are dropped. Saved without FID but loaded with it: the fresh, empty statistics
    are kept, so the real ones are computed at the next validation.
    """

    module.register_load_state_dict_pre_hook(partial(_match_fid_state, attribute=attribute))


def _match_fid_state(owner: nn.Module, state_dict: dict, prefix: str, *args, attribute: str) -> None:
    fid, key = getattr(owner, attribute), f"{prefix}{attribute}."
    if fid is None:
        for name in [k for k in state_dict if k.startswith(key)]:
            del state_dict[name]
    elif not any(k.startswith(key) for k in state_dict):
        state_dict.update({key + k: v for k, v in fid.state_dict().items()})
