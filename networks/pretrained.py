"""Published super-resolution networks of any architecture spandrel knows, as a generator.

spandrel reads a weights file (``.pth``, ``.pt``, ``.ckpt``, ``.safetensors``) and detects the
architecture and its options from the keys and shapes: ESRGAN / Real-ESRGAN (every RRDBNet
layout), SwinIR, HAT, DAT, OmniSR, SPAN and more. :class:`PretrainedSR` puts the result where a
generator is expected, so that ``test`` and ``predict`` measure and tile published models with
this codebase's protocol.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class PretrainedSR(nn.Module):
    """A published SR network loaded by spandrel; [0, 1] RGB in, ``scale`` times larger out.

    Inputs are padded to the network's size requirements (a multiple of the window size for
    transformers) as spandrel does (reflect, then replicate), and the output cropped back.

    Args:
        weights_path: the published weights file.
        scale: the data's scale (linked from ``data.init_args.scale``); must be the file's.
        trainable: ``False`` (default) freezes the network (evaluation); ``True`` lets ``fit``
            fine-tune it.
    """

    def __init__(self, weights_path: str, scale: int | None = None, trainable: bool = False):
        super().__init__()
        from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: SR weights file not found (generator option `weights_path`)")
        try:
            descriptor = ModelLoader(device="cpu").load_from_file(path)
        except UnsupportedModelError as err:
            raise ValueError(f"{path}: spandrel recognises no architecture in this file (generator option `weights_path`)") from err
        except (RuntimeError, KeyError, ValueError) as err:  # a recognised layout whose shapes or keys do not fit
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path}: spandrel could not build the network from this file: {first_line}") from err
        name = descriptor.architecture.name
        if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose not in ("SR", "Restoration"):
            raise ValueError(f"{path}: a {name} model for {descriptor.purpose}, not an image-to-image SR network")
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise ValueError(f"{path}: {name} with {descriptor.input_channels} -> {descriptor.output_channels} channels; RGB is needed")
        if scale is not None and scale != descriptor.scale:
            raise ValueError(
                f"{path}: a x{descriptor.scale} {name} network, but the run's scale is x{scale}: "
                f"set data.init_args.scale={descriptor.scale}"
            )
        self.model = descriptor.model
        self.scale, self.architecture = descriptor.scale, name
        self.size_requirements = descriptor.size_requirements
        self.model.requires_grad_(trainable)
        self.model.train(False)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        height, width = lr.shape[-2:]
        pad_w, pad_h = self.size_requirements.get_padding(width, height)
        if pad_w or pad_h:
            reflect_w, reflect_h = min(pad_w, width - 1), min(pad_h, height - 1)
            lr = F.pad(lr, (0, reflect_w, 0, reflect_h), mode="reflect")
            lr = F.pad(lr, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")
        return self.model(lr)[..., : height * self.scale, : width * self.scale]
