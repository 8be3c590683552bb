"""Generator weights from a file (``model.init_args.pretrained_generator``) for both SR modules
and the pix2pix translation module.

Read: a Lightning checkpoint (its ``generator_ema.module.*`` weights, else ``generator.*``), a
BasicSR / Real-ESRGAN file (``params_ema``, else ``params``) or a plain state dict, with RRDBNet
keys in any of the three layouts in circulation (converted by
:func:`networks.rrdbnet.to_basicsr_keys`); pytorch-CycleGAN-and-pix2pix's ``latest_net_G.pth``
files are plain state dicts in the layout of :class:`networks.pix2pix.UNetGenerator`. Files
saved before PyTorch counted batch-norm batches (no ``num_batches_tracked``) load too. A file that does not fit the configured generator
stops the run naming the missing, unexpected and mis-shaped keys and, for RRDBNet files, the
arguments the file would fit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from networks.rrdbnet import rrdbnet_options, to_basicsr_keys

OPTION = "model.init_args.pretrained_generator"
#: Keys of each kind quoted in the error for a file that does not fit.
QUOTED_KEYS = 5


def _loading_first(hook: str):
    """A LightningModule start hook that loads the pretrained generator, then runs the inherited ``hook``."""

    def start(self) -> None:
        self.load_pretrained_generator()
        getattr(super(LoadsPretrainedGenerator, self), hook)()

    start.__name__ = hook
    return start


class LoadsPretrainedGenerator:
    """Hooks of a LightningModule with ``self.generator`` and ``self.pretrained_generator``
    (``str | None``; list this class before the LightningModule base): the file is loaded into the
    generator at the start of fit, validate, test and predict, once, unless the run restored a
    checkpoint (whose weights win: resuming or evaluating a checkpoint does not need the file).

    ``pretrained_generator_kind`` / ``pretrained_generator_hint`` word the error for a missing
    file; ``pretrained_generator_loaded()`` runs after loading."""

    pretrained_generator: str | None
    pretrained_generator_kind = "generator weights"
    pretrained_generator_hint = ""

    def pretrained_generator_loaded(self) -> None:
        """The EMA generator, where there is one, starts as a copy of the loaded weights."""
        ema = getattr(self, "generator_ema", None)
        if ema is not None:
            ema.module.load_state_dict(self.generator.state_dict())

    def load_pretrained_generator(self) -> None:
        if self.pretrained_generator is None or getattr(self, "_pretrained_generator_done", False):
            return
        load_generator_weights(
            self.generator, self.pretrained_generator, self.pretrained_generator_kind, self.pretrained_generator_hint
        )
        self.pretrained_generator_loaded()
        self._pretrained_generator_done = True

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._pretrained_generator_done = True  # the checkpoint's weights win over pretrained_generator
        super().on_load_checkpoint(checkpoint)

    # Each start hook loads the file first, then runs the inherited hook (the GAN core's EMA start).
    on_fit_start = _loading_first("on_fit_start")
    on_validation_start = _loading_first("on_validation_start")
    on_test_start = _loading_first("on_test_start")
    on_predict_start = _loading_first("on_predict_start")


def load_generator_weights(generator: nn.Module, path: str, kind: str = "generator weights", hint: str = "") -> None:
    """Load the generator weights in the file at ``path`` into ``generator`` (formats: see the
    module docstring). ``kind`` and ``hint`` word the error for a missing file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: {kind} not found ({OPTION}){hint}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state, source = _generator_state(checkpoint, path)
    try:
        state = to_basicsr_keys(state)
    except ValueError as err:
        raise ValueError(f"{path} ({OPTION}): {err}") from err
    for key, value in generator.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)  # only counts batches; not in files saved before PyTorch 0.4.1
    try:
        generator.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(_mismatch(generator, state, path, source)) from err


def _mismatch(generator: nn.Module, state: dict[str, Tensor], path: str, source: str) -> str:
    """What differs between ``state`` and ``generator``, and which RRDBNet the file would fit."""
    expected = generator.state_dict()
    differences = {
        "Missing keys": [key for key in expected if key not in state],
        "Unexpected keys": [key for key in state if key not in expected],
        "Shape mismatches": [
            f"{key} {tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model"
            for key, value in expected.items()
            if key in state and state[key].shape != value.shape
        ],
    }
    details = " ".join(
        f"{name} ({len(items)}): {'; '.join(items[:QUOTED_KEYS])}{'; ...' if len(items) > QUOTED_KEYS else ''}."
        for name, items in differences.items()
        if items
    )
    message = (
        f"{path}: its {source} weights do not fit the configured {type(generator).__name__} ({OPTION}); the "
        f"generator's init_args must match the file's. {details}"
    )
    options = rrdbnet_options(state)
    if options is not None:
        arguments = ", ".join(f"{name}={value}" for name, value in options.items())
        message += (
            f" The file fits RRDBNet({arguments}) (model.init_args.generator.init_args.*; the scale comes from "
            "data.init_args.scale)."
        )
    return message


def _generator_state(checkpoint: object, path: str) -> tuple[dict[str, Tensor], str]:
    """The generator's state dict inside a Lightning, BasicSR or plain state-dict file, and its source."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a checkpoint or state dict, found a {type(checkpoint).__name__}")
    if "state_dict" in checkpoint:
        for prefix in ("generator_ema.module.", "generator."):
            state = {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
            if state:
                return state, f"Lightning checkpoint '{prefix}*'"
        raise ValueError(f"{path}: a Lightning checkpoint without 'generator.*' weights ({OPTION})")
    for key in ("params_ema", "params"):
        if key in checkpoint:
            return _strip_module_prefix(checkpoint[key]), f"BasicSR '{key}'"
    if not all(isinstance(value, Tensor) for value in checkpoint.values()):
        raise ValueError(f"{path}: neither a Lightning checkpoint, a BasicSR file nor a state dict of tensors")
    return _strip_module_prefix(checkpoint), "state dict"


def _strip_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights saved from ``DataParallel``/DDP carry a ``module.`` prefix."""
    return {key.removeprefix("module."): value for key, value in state.items()}
