"""``train.py export``: every task's evaluation network to ONNX and TorchScript, checked against the
task's own inference path (the one predict uses), with its conventions in the file."""

import math

import onnxruntime
import pytest
import torch
from torch import nn

from lightning_modules.export import ExportSpec, export_network, image_inputs, parity_psnr, read_metadata
from tiny_configs import TASKS


def _task_inputs(task: str, model) -> tuple[torch.Tensor, ...]:
    """Inputs at a size other than the traced one, so that the exported axes must really vary."""
    generator = torch.Generator().manual_seed(1)
    if task in ("gan", "vae"):
        latent_dim = model.latent_dim if task == "gan" else model.network.latent_dim
        return (torch.randn(3, latent_dim, generator=generator),)
    if task == "sequence":
        return (torch.rand(2, model.input_frames, model.network.channels, 24, 20, generator=generator),)
    if task == "inpainting":
        image, mask = torch.rand(2, 3, 37, 53, generator=generator), torch.zeros(2, 1, 37, 53)
        mask[..., 5:30, 10:50] = 1
        return image, mask
    # Any size for SR and inpainting; multiples of 2**depth for the tiny U-Nets (see size_multiple).
    height, width = {"sr": (13, 21), "esrgan": (13, 21), "segmentation": (48, 64)}.get(task, (24, 40))
    return (torch.rand(2, 3, height, width, generator=generator),)


def _task_output(task: str, model, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """What the task itself computes for ``inputs`` (the predict path), as the exported file should."""
    with torch.no_grad():
        if task in ("sr", "esrgan"):
            return model.upscale(*inputs)
        if task == "gan":
            return model.sample(*inputs).add(1).div(2).clamp(0, 1)
        if task == "vae":
            return model.decode_images(*inputs).add(1).div(2).clamp(0, 1)
        if task == "inpainting":
            return model.inpaint(*inputs)
        if task == "translation":
            return model.translate(*inputs)
        if task == "style":
            return model.stylize(*inputs, strength=1.0)
        if task == "sequence":
            return model.forecast(*inputs, model.predict_frames)
        return model(*inputs)


def _run_file(path, names: list[str], inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})[0])
    with torch.no_grad():
        return torch.jit.load(str(path))(*inputs)


EXPORTING = ("sr", "esrgan", "gan", "vae", "inpainting", "translation", "segmentation", "style", "sequence")
# ONNX export costs seconds per network: ESRGAN's generator is SR's network, the VAE decoder
# takes latents as the GAN's does, and the style, translation and segmentation networks are
# plain conv nets (the inpainting U-Net has the same layers and more), so those are checked as
# TorchScript only.
CASES = [(task, "torchscript") for task in EXPORTING] + [
    (task, "onnx") for task in EXPORTING if task not in ("esrgan", "vae", "style", "translation", "segmentation")
]


@pytest.mark.parametrize(("task", "format"), CASES)
def test_export_matches_the_task(task, format, run_cli, tmp_path):
    config, _, tiny = TASKS[task]
    output = tmp_path / f"{task}.{'onnx' if format == 'onnx' else 'pt'}"
    if (task, format) == ("inpainting", "onnx"):
        # The push-pull fill's 16 pyramid levels take the ONNX exporter's shape solver most of a
        # minute; its TorchScript case covers it, so the ONNX case checks the plain fill.
        tiny = [*tiny, "--model.init_args.generator.init_args.initial_fill=zeros"]
    cli = run_cli("export", "--config", config, *tiny, "--auto_bf16=false", f"--format={format}", f"--output={output}")
    model = cli.model.eval()
    metadata = read_metadata(output)
    assert metadata["task"] and metadata["model_class"].endswith(type(model).__name__)
    inputs = _task_inputs(task, model)
    got = _run_file(output, metadata["inputs"].split(", "), inputs)
    assert parity_psnr(got, _task_output(task, model, inputs)) >= 50


def test_export_loads_the_checkpoint_weights(run_cli, tmp_path):
    config, _, tiny = TASKS["sr"]
    fit = run_cli("fit", "--config", config, *tiny, "--auto_bf16=false", "--trainer.max_steps=2",
                  "--trainer.limit_val_batches=0", "--progress_bar.refresh_rate=0")
    checkpoint = tmp_path / fit.trainer.checkpoint_callback.last_model_path
    output = tmp_path / "trained.pt"
    cli = run_cli("export", "--config", config, *tiny, "--format=torchscript", f"--output={output}",
                  f"--ckpt_path={checkpoint}")
    trained = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(trained[f"generator.{k}"], v) for k, v in cli.model.generator.state_dict().items())
    assert read_metadata(output)["weights"] == str(checkpoint)
    lr = torch.rand(1, 3, 8, 8)
    assert parity_psnr(_run_file(output, ["lr"], (lr,)), cli.model.upscale(lr)) >= 50
    with pytest.raises(ValueError, match="is the checkpoint being exported"):
        run_cli("export", "--config", config, *tiny, f"--output={checkpoint}", f"--ckpt_path={checkpoint}")


class _WidthScaled(nn.Module):
    """Scales by its input's width as a Python number, which a trace records as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (float(x.shape[-1]) / 16)


def test_a_trace_that_fixed_a_size_is_refused_and_nothing_is_written(tmp_path):
    spec = ExportSpec(_WidthScaled(), ("x",), "y", image_inputs(3), ((1, 16, 16), (1, 16, 32)), {"x": {3: "width"}})
    output = tmp_path / "broken.pt"
    with pytest.raises(RuntimeError, match=r"differs from PyTorch's at batch 1, size 16x32"):
        export_network(spec, output, "torchscript", {})
    assert not list(tmp_path.iterdir())


class _Eigenvalues(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x[..., :4, :4]).real


def test_an_operator_that_does_not_export_is_refused_by_name(tmp_path):
    spec = ExportSpec(_Eigenvalues(), ("x",), "y", image_inputs(3), ((1, 8, 8),), {})
    with pytest.raises(RuntimeError, match="ONNX export failed, nothing written: the operator aten.linalg_eig has no ONNX equivalent"):
        export_network(spec, tmp_path / "eig.onnx", "onnx", {})
    assert not list(tmp_path.iterdir())
    assert math.isinf(parity_psnr(torch.ones(2), torch.ones(2)))
