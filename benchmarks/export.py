"""Exported SR generator against PyTorch: upscaling throughput on this CPU.

    python -m benchmarks.export                    # the SR default's generator as configured
    python -m benchmarks.export --ckpt last.ckpt   # its trained weights (speed does not depend on them)

Exports the evaluation generator of ``configs/sr/default.yaml`` as ``train.py export`` does
(ONNX and TorchScript, each checked against PyTorch before it is kept) and prints output
megapixels per second for one 128x128 LR image: PyTorch (float32, the generator's memory format
as predict uses it), ONNX Runtime (CPU provider, default threads) and TorchScript.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.common import argument_parser, build, per_second
from lightning_modules.callbacks import NetworkOptions
from lightning_modules.export import export_network

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "sr" / "default.yaml")


def exported_throughput(model, lr_size: int = 128) -> dict[str, float]:
    """Output MP/s of ``model``'s generator in PyTorch, ONNX Runtime and TorchScript."""
    import onnxruntime

    model = model.eval()
    spec = model.export_spec()
    image = torch.rand(1, 3, lr_size, lr_size)
    megapixels = (lr_size * model.scale) ** 2 / 1e6
    with tempfile.TemporaryDirectory() as folder:
        onnx_file = export_network(spec, Path(folder) / "sr.onnx", "onnx", {})
        script_file = export_network(spec, Path(folder) / "sr.pt", "torchscript", {})
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        scripted = torch.jit.load(str(script_file))
        feeds = {"lr": image.numpy()}
        with torch.no_grad():
            return {
                "pytorch": per_second(lambda: model.upscale(image), megapixels),
                "onnxruntime": per_second(lambda: session.run(None, feeds), megapixels),
                "torchscript": per_second(lambda: scripted(image), megapixels),
            }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--ckpt", help="checkpoint of configs/sr/default.yaml")
    args = parser.parse_args()
    model, _ = build(CONFIG, args.ckpt)
    NetworkOptions(channels_last=True).setup(None, model, "predict")  # as the config's predict runs
    speeds = exported_throughput(model)
    print(f"\n| SR default generator, 128x128 -> 512x512 (torch {torch.__version__}, {torch.get_num_threads()} threads) | MP/s |")
    print("|---|---|")
    for name, value in speeds.items():
        print(f"| {name} | {value:.3f} ({value / speeds['pytorch']:.2f}x PyTorch) |")


if __name__ == "__main__":
    main()
