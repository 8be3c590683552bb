"""Deployable files of a task's evaluation network: ``python train.py export --format onnx|torchscript``.

A task declares what to export by returning an :class:`ExportSpec` from ``export_spec()``: a
plain network that takes the task's user-facing inputs (images in [0, 1], latents, masks) and
returns its outputs, how to make example inputs of a given size, which axes may vary and the
conventions a user needs, which are written into the file's metadata. A file is written only
after its outputs match PyTorch's (at least :data:`PARITY_DB` PSNR) at every size in the spec:
an operator that does not export, or a trace that fixed a size, ends in an error, not a broken file.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

#: Outputs of the exported file must match PyTorch's to this PSNR (peak: the PyTorch output's range).
PARITY_DB = 50.0
FORMATS = ("onnx", "torchscript")
#: The metadata entry of a TorchScript file (``torch.jit.load(path, _extra_files={METADATA_FILE: ""})``).
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class ExportSpec:
    """What ``export`` writes for a task.

    Args:
        network: maps ``inputs(batch, height, width)`` to one output tensor; eval mode.
        input_names / output_name: names in the file.
        inputs: example inputs of a batch size and image size (latent inputs ignore the size).
        sizes: ``(batch, height, width)`` to check: the first is the one traced, the others prove
            that the axes in ``dynamic`` really vary in the file.
        dynamic: per input, the axes that may vary (``{0: "batch", 2: "height", 3: "width"}``).
        conventions: what the inputs and output mean (range, channels, mask values, scale ...).
        size_multiple: image heights and widths the file takes are multiples of it (the task's
            predict pads to it; the exported network does not), written into the metadata.
    """

    network: nn.Module
    input_names: tuple[str, ...]
    output_name: str
    inputs: Callable[[int, int, int], tuple[Tensor, ...]]
    sizes: tuple[tuple[int, int, int], ...]
    dynamic: dict[str, dict[int, str]]
    conventions: dict[str, str] = field(default_factory=dict)
    size_multiple: int = 1


def image_inputs(channels: int = 3) -> Callable[[int, int, int], tuple[Tensor]]:
    """Random [0, 1] images of ``channels`` channels, seeded by their shape."""

    def make(batch: int, height: int, width: int) -> tuple[Tensor]:
        generator = torch.Generator().manual_seed(batch * 1_000_003 + height * 1009 + width)
        return (torch.rand(batch, channels, height, width, generator=generator),)

    return make


def latent_inputs(latent_dim: int) -> Callable[[int, int, int], tuple[Tensor]]:
    """Standard normal latents (N, latent_dim); the image size is the network's own."""

    def make(batch: int, height: int, width: int) -> tuple[Tensor]:
        return (torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(batch)),)

    return make


IMAGE_AXES = {0: "batch", 2: "height", 3: "width"}


class ImageNetwork(nn.Module):
    """A network seen with [0, 1] images on both sides: maps to [-1, 1] before it where its
    input is signed, back after it where its output is, and clamps the output to [0, 1]."""

    def __init__(self, network: nn.Module, signed_input: bool = False, signed_output: bool = False):
        super().__init__()
        self.network, self.signed_input, self.signed_output = network, signed_input, signed_output

    def forward(self, x: Tensor) -> Tensor:
        y = self.network(x * 2 - 1 if self.signed_input else x)
        return ((y + 1) / 2 if self.signed_output else y).clamp(0, 1)


def export_network(
    spec: ExportSpec, output: str | Path, format: Literal["onnx", "torchscript"], metadata: dict[str, str]
) -> Path:
    """Write ``spec.network`` to ``output`` once its outputs match PyTorch's at every size."""
    output = Path(output)
    if format not in FORMATS:
        raise ValueError(f"--format {format}: choose one of {', '.join(FORMATS)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    network = spec.network.eval()
    metadata = {**metadata, **spec.conventions, "inputs": ", ".join(spec.input_names), "output": spec.output_name,
                "dynamic_axes": json.dumps(spec.dynamic)}
    if any("height" in axes.values() for axes in spec.dynamic.values()):
        metadata["size_multiple"] = str(spec.size_multiple)
    staged = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:
        with torch.no_grad():
            references = [(size, inputs, network(*inputs)) for size in spec.sizes for inputs in [spec.inputs(*size)]]
        run = (_write_onnx if format == "onnx" else _write_torchscript)(spec, staged, metadata)
        for size, inputs, expected in references:
            got = run(inputs)
            psnr = parity_psnr(got, expected)
            if not psnr >= PARITY_DB:
                raise RuntimeError(
                    f"the {format} file's output differs from PyTorch's at batch {size[0]}, size {size[1]}x{size[2]} "
                    f"(PSNR {psnr:.1f} dB < {PARITY_DB:.0f}): the network does not export faithfully, nothing written"
                )
        staged.replace(output)
    finally:
        staged.unlink(missing_ok=True)
    return output


def parity_psnr(got: Tensor, expected: Tensor) -> float:
    """PSNR of ``got`` against ``expected``, the peak being ``expected``'s range (1 for images)."""
    if got.shape != expected.shape:
        return -math.inf
    peak = max(float(expected.max() - expected.min()), 1e-6)
    mse = float((got.double() - expected.double()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def _write_onnx(spec: ExportSpec, path: Path, metadata: dict[str, str]) -> Callable[[tuple[Tensor, ...]], Tensor]:
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise RuntimeError(f"ONNX export needs onnx, onnxscript and onnxruntime: pip install -e '.[export]' ({err})") from err
    example = spec.inputs(*spec.sizes[0])
    shapes = tuple({axis: torch.export.Dim.DYNAMIC for axis in spec.dynamic.get(name, {})} for name in spec.input_names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                spec.network, example, input_names=list(spec.input_names), output_names=[spec.output_name],
                dynamic_shapes=shapes, dynamo=True, verbose=False, report=False,
            )
    except Exception as err:
        raise RuntimeError(f"ONNX export failed, nothing written: {_export_failure(err)}") from err
    program.save(str(path))
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(inputs: tuple[Tensor, ...]) -> Tensor:
        feeds = {name: tensor.numpy() for name, tensor in zip(spec.input_names, inputs)}
        return torch.from_numpy(session.run([spec.output_name], feeds)[0])

    return run


def _export_failure(err: BaseException) -> str:
    """The operator that has no ONNX equivalent, or else the first line of the innermost error."""
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for error in chain:
        operator = re.search(r"OpOverload\(op='([^']+)'", str(error))
        if operator:
            return f"the operator {operator.group(1)} has no ONNX equivalent ({type(error).__name__})"
    innermost = chain[-1]
    return f"{type(innermost).__name__}: {str(innermost).strip().splitlines()[0] if str(innermost).strip() else ''}"


def _write_torchscript(spec: ExportSpec, path: Path, metadata: dict[str, str]) -> Callable[[tuple[Tensor, ...]], Tensor]:
    example = spec.inputs(*spec.sizes[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated but still the TorchScript route
        traced = torch.jit.trace(spec.network, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    loaded = torch.jit.load(str(path))

    def run(inputs: tuple[Tensor, ...]) -> Tensor:
        with torch.no_grad():
            return loaded(*inputs)

    return run


def read_metadata(path: str | Path) -> dict[str, str]:
    """The conventions written into an exported file (ONNX or TorchScript)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        return {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
    files = {METADATA_FILE: ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files[METADATA_FILE])


def checked_sizes(multiple: int, base: int = 16) -> tuple[tuple[int, int, int], ...]:
    """Traced size, then another batch and a non-square size, all multiples of ``multiple``."""
    side = max(base, multiple) // multiple * multiple
    return ((1, side, side), (2, side + multiple, side + 2 * multiple))

