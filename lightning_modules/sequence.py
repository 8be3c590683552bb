"""Video prediction: a recurrent network reads ``input_frames`` frames and generates ``output_frames``.

Training: MSE (``+ l1_weight * L1``) of the generated frames against the true ones, the
forecaster reading the true previous frame with a probability that decays linearly from
``teacher_forcing`` to 0 over the first ``sampling_steps`` steps (scheduled sampling, Bengio et
al. 2015, as PredRNN trains), its own output otherwise. Validation, test and predict are closed
loop: every generated frame is fed back and no future frame is read.

Evaluation per generated frame ``k = 1..T_out`` and averaged over them (:class:`FrameMetrics`):
MSE and MAE per frame summed over pixels and channels (the Moving MNIST convention: frames in
[0, 1], 64x64 gray, so an MSE of 100 is 100 / 4096 per pixel), PSNR and SSIM (torchmetrics,
per frame, then averaged); the same for the parameter-free baseline that repeats the last input
frame (``val/repeat_last_<metric>``), computed on the same clips.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lightning_modules.checks import checked_sum
from lightning_modules.evaluation import StagedEvaluation, Summary
from lightning_modules.export import ExportSpec, checked_sizes
from lightning_modules.run_logging import ImageRows

METRIC_NAMES = ("mse", "mae", "psnr", "ssim")
#: PSNR of a frame predicted exactly (infinite) is reported as this.
MAX_PSNR = 100.0


class FrameMetrics(Metric):
    """MSE, MAE (summed over each frame's pixels and channels), PSNR and SSIM of each of ``frames``
    generated frames, accumulated over clips and summed over DDP ranks: exactly one process's values."""

    full_state_update = False

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames
        for name in METRIC_NAMES:
            self.add_state(name, torch.zeros(frames, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: Tensor, target: Tensor) -> None:
        """(N, T, C, H, W) frames in [0, 1], in float32 whatever the autocast."""
        with torch.autocast(predicted.device.type, enabled=False):
            predicted, target = predicted.float(), target.float()
            error = predicted - target
            self.mse += error.square().sum(dim=(2, 3, 4)).sum(0).double()
            self.mae += error.abs().sum(dim=(2, 3, 4)).sum(0).double()
            flat_predicted, flat_target = predicted.flatten(0, 1), target.flatten(0, 1)
            psnr = peak_signal_noise_ratio(flat_predicted, flat_target, data_range=1.0, reduction="none", dim=(1, 2, 3))
            # The standard 11x11 Gaussian window (sigma 1.5), shrunk for frames smaller than that.
            side = min(target.shape[-2:])
            window = min(11, side - 1 + side % 2)
            ssim = structural_similarity_index_measure(flat_predicted, flat_target, data_range=1.0, reduction="none",
                                                       kernel_size=window, sigma=1.5 * window / 11)
            self.psnr += psnr.clamp(max=MAX_PSNR).view(target.shape[:2]).sum(0).double()
            self.ssim += ssim.view(target.shape[:2]).sum(0).double()
            self.clips += target.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """``<metric>`` averaged over the frames and ``<metric>_frameNN`` for frame NN (1-based)."""
        values = {}
        for name in METRIC_NAMES:
            per_frame = (getattr(self, name) / self.clips).float()
            values[name] = per_frame.mean()
            values |= {f"{name}_frame{k + 1:02d}": value for k, value in enumerate(per_frame)}
        return values


def frame_strip(frames: Tensor) -> Tensor:
    """(T, C, H, W) frames side by side as one (3, H, T * W) image (gray repeated to RGB)."""
    frames = frames.float().clamp(0, 1)
    if frames.shape[1] == 1:
        frames = frames.expand(-1, 3, -1, -1)
    return torch.cat(list(frames), dim=2)


def stacked_rows(*strips: Tensor, gap: int = 2) -> Tensor:
    """(3, H, W_i) strips one above the other, padded to the widest, ``gap`` black pixels apart."""
    width = max(strip.shape[-1] for strip in strips)
    rows = [F.pad(strip, (0, width - strip.shape[-1], 0, gap)) for strip in strips]
    return torch.cat(rows, dim=1)[:, :-gap]


class Forecaster(nn.Module):
    """The network's closed-loop forecast of a fixed number of frames, clamped to [0, 1]."""

    def __init__(self, network: nn.Module, steps: int):
        super().__init__()
        self.network, self.steps = network, steps

    def forward(self, frames: Tensor) -> Tensor:
        return self.network(frames, self.steps).clamp(0, 1)


class SequenceModule(StagedEvaluation, LightningModule):
    """Trains ``network`` (``network(frames, steps, targets, truth)``, e.g.
    :class:`networks.convlstm.EncoderForecaster`) to continue clips.

    Args:
        network: the recurrent frame generator.
        input_frames / output_frames: frames read and generated (linked to the data's).
        predict_frames: frames generated by ``predict`` (``null``: ``output_frames``); may exceed
            what training generated.
        l1_weight: weight of an L1 term added to the MSE (0: MSE only).
        teacher_forcing: probability of feeding the true previous frame at step 0 (1: teacher
            forcing; 0: closed loop from the start).
        sampling_steps: optimizer steps over which that probability decays linearly to 0 (PredRNN:
            50000); 0: over ``sampling_fraction`` of the run (``trainer.max_steps``, the time budget's
            plan, or the epochs' steps).
        sampling_fraction: share of the run for ``sampling_steps: 0``.
        optimizer / lr_scheduler: from the config; the scheduler steps every ``scheduler_interval``.
        num_grid_images: validation clips shown as input frames | predicted | ground truth.
    """

    def __init__(
        self,
        network: nn.Module,
        input_frames: int = 10,
        output_frames: int = 10,
        predict_frames: int | None = None,
        l1_weight: float = 0.0,
        teacher_forcing: float = 1.0,
        sampling_steps: int = 0,
        sampling_fraction: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        num_grid_images: int = 4,
    ):
        super().__init__()
        if not 0.0 <= teacher_forcing <= 1.0 or not 0.0 <= sampling_fraction <= 1.0:
            raise ValueError(f"teacher_forcing and sampling_fraction must be in [0, 1], got {teacher_forcing} and "
                             f"{sampling_fraction}")
        self.network = network
        self.input_frames, self.output_frames = input_frames, output_frames
        self.predict_frames = predict_frames or output_frames
        self.l1_weight = l1_weight
        self.teacher_forcing, self.sampling_steps, self.sampling_fraction = teacher_forcing, sampling_steps, sampling_fraction
        self.optimizer, self.lr_scheduler, self.scheduler_interval = optimizer, lr_scheduler, scheduler_interval
        self.metrics = nn.ModuleDict({f"{stage}_{kind}": FrameMetrics(output_frames)
                                      for stage in ("val", "test") for kind in ("model", "repeat_last")})
        self._grid = ImageRows(num_grid_images)

    # ----------------------------------------------------------------- training
    def truth_probability(self) -> float:
        """Probability of feeding the true previous frame at the current step."""
        steps = self.sampling_steps
        if steps == 0:
            run = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
            steps = max(1, round(self.sampling_fraction * run))
        return self.teacher_forcing * max(0.0, 1.0 - self.global_step / steps)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        inputs, targets = batch["input"], batch["target"]
        probability = self.truth_probability()
        truth = torch.rand(len(targets), self.output_frames - 1, device=targets.device) < probability
        outputs = self.network(inputs, self.output_frames, targets, truth)
        terms = {"mse": F.mse_loss(outputs.float(), targets)}
        if self.l1_weight:
            terms["l1"] = self.l1_weight * F.l1_loss(outputs.float(), targets)
        loss = checked_sum(self, terms)
        self.log_dict({f"train/{name}": value for name, value in terms.items()}, prog_bar=True)
        self.log("train/truth_probability", probability)
        return loss

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def forecast(self, inputs: Tensor, steps: int) -> Tensor:
        """Closed-loop generation of ``steps`` frames after ``inputs`` (N, T, C, H, W), in float32."""
        return self.network(inputs, steps).float().clamp(0, 1)

    def export_spec(self) -> ExportSpec:
        """Closed-loop generation of ``predict_frames`` frames after ``input_frames`` frames, any
        batch, frame sides that are multiples of the network's ``patch_size``."""
        channels, frames, patch = self.network.channels, self.input_frames, self.network.patch_size

        def clips(batch: int, height: int, width: int) -> tuple[Tensor]:
            return (torch.rand(batch, frames, channels, height, width, generator=torch.Generator().manual_seed(batch)),)

        return ExportSpec(
            Forecaster(self.network, self.predict_frames), ("frames",), "predicted", clips, checked_sizes(patch),
            {"frames": {0: "batch", 3: "height", 4: "width"}},
            {"task": "video prediction", "frames": f"(N, {frames}, {channels}, H, W) input frames in [0, 1]",
             "predicted": f"(N, {self.predict_frames}, {channels}, H, W) generated frames in [0, 1]"},
            patch,
        )

    def evaluate_batch(self, batch: dict, batch_idx: int, stage: str) -> None:
        inputs, targets = batch["input"], batch["target"]
        predicted = self.forecast(inputs, self.output_frames)
        repeated = inputs[:, -1:].expand_as(targets)
        self.metrics[f"{stage}_model"].update(predicted, targets)
        self.metrics[f"{stage}_repeat_last"].update(repeated, targets)
        shown = self._grid.limit - len(self._grid.rows)
        if stage == "val" and shown > 0:
            columns = (inputs[:shown], predicted[:shown], targets[:shown])
            self._grid.add(*(torch.stack([frame_strip(clip) for clip in frames]) for frames in columns))

    def log_evaluation(self, stage: str) -> None:
        values = {}
        for kind, prefix in (("model", f"{stage}/"), ("repeat_last", f"{stage}/repeat_last_")):
            values |= {prefix + name: value for name, value in self.metrics[f"{stage}_{kind}"].compute().items()}
            self.metrics[f"{stage}_{kind}"].reset()
        self.log_dict(values, sync_dist=False, prog_bar=False)  # already summed over the ranks
        self._grid.log(self, f"{stage}/input_predicted_truth")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[tuple[str, Tensor]]:
        """Per clip: ``<clip>/predicted_001.png``... and ``<clip>/strip.png`` (inputs above, the
        generated frames below)."""
        inputs = batch["input"]
        generated = self.forecast(inputs, self.predict_frames).cpu()
        written = []
        for clip, frames, given in zip(batch["clip"], generated, inputs.cpu()):
            written += [(f"{clip}/predicted_{k + 1:03d}.png", frame) for k, frame in enumerate(frames)]
            written.append((f"{clip}/strip.png", stacked_rows(frame_strip(given), frame_strip(frames))))
        return written

    def evaluation_summary(self) -> Summary:
        def example(sample: dict) -> tuple[str, Tensor]:
            inputs = sample["input"].unsqueeze(0).to(self.device)
            predicted = self.forecast(inputs, self.output_frames)[0].cpu()
            rows = (frame_strip(frames) for frames in (sample["input"], predicted, sample["target"]))
            return "predicted_example.png", stacked_rows(*rows)

        horizons = [f"{name}_frame{k:02d}" for name in ("mse", "ssim") for k in range(1, self.output_frames + 1)]
        return Summary(
            "Validation, closed loop (MSE / MAE per frame summed over pixels; PSNR, SSIM per frame; "
            "baseline: the last input frame repeated)",
            rows=(*METRIC_NAMES, *horizons),
            columns={"model": "val/{}", "repeat last": "val/repeat_last_{}"},
            example=example, example_caption="Example (rows: input frames, predicted, ground truth)",
        )

    def configure_optimizers(self):
        optimizer = self.optimizer(self.network.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
