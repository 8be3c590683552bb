"""Tiny versions of every task's embedded config, shared by the cross-task tests."""

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

# The SR default (configs/sr/default.yaml) at test size: float32 (its auto_bf16 would pick bf16 on
# CPUs with AMX), no progress bar, one validation batch.
SR_TINY = [
    "--model.init_args.generator.init_args.num_feat=8",
    "--model.init_args.generator.init_args.num_block=1",
    "--model.init_args.generator.init_args.grow_ch=4",
    "--data.init_args.patch_size=32",
    "--data.init_args.batch_size=4",
    "--data.init_args.repeats=2",
    "--trainer.limit_val_batches=1",
    "--progress_bar.refresh_rate=0",
    "--auto_bf16=false",
]

# Tiny networks and batches, as in each task's own tests; random-weight VGG perceptual losses
# (no download: ``pretrained=false``) where the task has one, so that they are converted too.
TASKS = {
    # SR: two batches, because the bicubic skip's generator returns bicubic exactly before its first
    # update (conv_last starts at zero), whatever the precision.
    "sr": ("configs/sr/default.yaml", 2, [
        "--model.init_args.generator.init_args.num_feat=8", "--model.init_args.generator.init_args.num_block=1",
        "--model.init_args.generator.init_args.grow_ch=4", "--data.init_args.patch_size=32",
        "--data.init_args.batch_size=4", "--data.init_args.repeats=1",
    ]),
    # Real-ESRNet: the SR task with LR made by the Real-ESRGAN degradations on each batch.
    "realesrnet": ("configs/sr/realesrnet_embedded.yaml", 2, [
        "--model.init_args.generator.init_args.num_feat=8", "--model.init_args.generator.init_args.num_block=1",
        "--model.init_args.generator.init_args.grow_ch=4", "--data.init_args.patch_size=32",
        "--data.init_args.batch_size=4", "--data.init_args.repeats=1", "--data.init_args.degraded_copies=1",
    ]),
    "esrgan": ("configs/sr/esrgan_embedded.yaml", 2, [
        "--model.init_args.generator.init_args.num_feat=8", "--model.init_args.generator.init_args.num_block=1",
        "--model.init_args.generator.init_args.grow_ch=4", "--model.init_args.discriminator.init_args.num_feat=4",
        "--model.init_args.pretrained_generator=null",
        "--model.init_args.perceptual=lightning_modules.perceptual.PerceptualLoss",
        "--model.init_args.perceptual.init_args.pretrained=false",
        "--model.init_args.perceptual.init_args.layer_weights={relu2_2: 1.0}",
        "--data.init_args.patch_size=32", "--data.init_args.batch_size=2", "--data.init_args.repeats=1",
    ]),
    "gan": ("configs/gan/digits.yaml", 2, [
        "--model.init_args.generator.init_args.base_width=8", "--model.init_args.discriminator.init_args.base_width=8",
        "--data.init_args.batch_size=16",
    ]),
    "vae": ("configs/vae/digits.yaml", 1, [
        "--model.init_args.network.init_args.widths=[8, 16, 16, 16]",
        "--model.init_args.network.init_args.latent_dim=8", "--data.init_args.batch_size=16",
    ]),
    "inpainting": ("configs/inpainting/embedded.yaml", 2, [
        "--model.init_args.generator.init_args.base_channels=4", "--model.init_args.generator.init_args.dilations=[2]",
        "--model.init_args.discriminator.init_args.base_channels=4",
        "--model.init_args.discriminator.init_args.num_layers=3",
        "--model.init_args.perceptual=lightning_modules.perceptual.PerceptualLoss",
        "--model.init_args.perceptual.init_args.pretrained=false",
        "--model.init_args.perceptual.init_args.layer_weights={relu2_2: 1.0}",
        "--data.init_args.crop_size=48", "--data.init_args.batch_size=2", "--data.init_args.repeats=1",
    ]),
    # Translation: dropout off, as its masks are drawn in memory order, so that channels_last would
    # draw other (equally random) ones.
    "translation": ("configs/translation/embedded.yaml", 2, [
        "--model.init_args.generator.init_args.num_downs=3", "--model.init_args.generator.init_args.ngf=4",
        "--model.init_args.generator.init_args.dropout=0",
        "--model.init_args.discriminator.init_args.ndf=4", "--model.init_args.discriminator.init_args.n_layers=1",
        "--model.init_args.perceptual=lightning_modules.perceptual.PerceptualLoss",
        "--model.init_args.perceptual.init_args.pretrained=false",
        "--model.init_args.perceptual.init_args.layer_weights={relu2_2: 1.0}",
        "--data.init_args.load_size=24", "--data.init_args.crop_size=16", "--data.init_args.eval_size=24",
        "--data.init_args.batch_size=2", "--data.init_args.repeats=1",
    ]),
    # Style transfer: the embedded VGG16 losses cut to relu2_2, on random weights.
    "style": ("configs/style/embedded.yaml", 1, [
        "--model.init_args.network.init_args.base_channels=4", "--model.init_args.network.init_args.num_residual=1",
        "--model.init_args.perceptual.init_args.pretrained=false",
        "--model.init_args.perceptual.init_args.style_layer_weights={relu1_2: 1.0, relu2_2: 1.0}",
        "--model.init_args.style_size=32", "--data.init_args.image_size=16", "--data.init_args.batch_size=2",
        "--data.init_args.repeats=1",
    ]),
    "segmentation": ("configs/segmentation/embedded.yaml", 1, [
        "--model.init_args.net.init_args.widths=[4, 8, 16]", "--data.init_args.num_train=8",
        "--data.init_args.num_val=8", "--data.init_args.num_test=8", "--data.init_args.batch_size=4",
    ]),
    # Sequence: 2 -> 2 frames of 16x16 (8 px digits), one 4-channel ConvLSTM layer on 4x4 patches.
    "sequence": ("configs/sequence/embedded.yaml", 1, [
        "--model.init_args.network.init_args.hidden_channels=[4]", "--data.init_args.frame_size=16",
        "--data.init_args.digit_size=8", "--data.init_args.input_frames=2", "--data.init_args.output_frames=2",
        "--data.init_args.num_train=8", "--data.init_args.num_val=4", "--data.init_args.num_test=4",
        "--data.init_args.batch_size=4", "--data.init_args.eval_batch_size=4",
    ]),
}


class StopAfterEpochs(Callback):
    """Ends fit after ``epochs`` epochs, like a kill right after that epoch's checkpoint, without
    changing the run's configuration (schedules sized from ``max_epochs`` stay the same)."""

    def __init__(self, epochs: int = 1):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class TinyFeatures(nn.Module):
    """A fixed random conv net standing in for the FID Inception: uint8 (N, 3, H, W) -> (N, width)."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, width, 3, stride=2), nn.Tanh(), nn.Conv2d(width, width, 3), nn.Tanh())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float() / 127.5 - 1).mean(dim=(2, 3))


def tiny_feature_file(folder: Path, width: int) -> str:
    """A TorchScript feature file for ``fid.feature_extractor``, the same for a given width."""
    torch.manual_seed(0)
    path = folder / "tiny-features.pt"
    torch.jit.script(TinyFeatures(width)).save(str(path))
    return str(path)
