"""What this CPU gives the default job: matrix-product speed and its drift, and the SR training step
in each precision, memory format and thread count.

    python -m benchmarks.cpu            # about 2 minutes; run it alone on the machine

Two tables. Matrix products (1024x1024, float32 and bfloat16) in GFLOP/s over one-second windows
for ``--seconds`` each: the spread between the slowest and fastest window is the drift a
wall-time promise has to absorb (shared cores). The SR step of ``configs/sr/default.yaml``
(RRDBNet 32/2/16 with the bicubic skip, batch 16 of 64-px HR patches, L1, Adam) in ms, median
of 20 steps, for float32 / bf16 autocast x NCHW / channels_last x 1 / 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import seconds_per_call
from lightning_modules.callbacks import NetworkOptions
from train import cli_main, cpu_bf16_is_emulated

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "sr" / "default.yaml")


def matmul_windows(dtype: torch.dtype, threads: int, seconds: float, size: int = 1024) -> list[float]:
    """GFLOP/s of back-to-back size x size products, one figure per one-second window."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    windows, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            a @ b
            count += 1
        windows.append(2 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return windows


def sr_step_ms(bf16: bool, channels_last: bool, threads: int) -> float:
    torch.set_num_threads(threads)
    cli = cli_main(["--config", CONFIG, "--trainer.logger=false", "--auto_bf16=false"], run=False)
    module = cli.model
    NetworkOptions(channels_last=channels_last).setup(None, module, "fit")
    generator, optimizer = module.generator, module.optimizer(module.generator.parameters())
    lr, hr = torch.rand(16, 3, 16, 16), torch.rand(16, 3, 64, 64)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = generator(lr)
        loss = F.l1_loss(out.float(), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return 1000 * seconds_per_call(step, calls=20, warmup=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each matrix-product run")
    args = parser.parse_args()
    native = not cpu_bf16_is_emulated()
    print(f"\nbfloat16 native on this CPU (AVX512-BF16/AMX, allowed by ONEDNN_MAX_CPU_ISA): {native}")
    print("\n| matrix product 1024x1024 | threads | GFLOP/s min / median / max over 1-s windows |")
    print("|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for threads in (1, 2):
            w = matmul_windows(dtype, threads, args.seconds)
            print(f"| {str(dtype).removeprefix('torch.')} | {threads} | {min(w):.0f} / {statistics.median(w):.0f} / {max(w):.0f} |")
    print("\n| SR default training step (batch 16, 64-px HR) | threads | ms (median of 20) |")
    print("|---|---|---|")
    for bf16 in (False, True):
        for channels_last in (False, True):
            for threads in (1, 2):
                name = f"{'bf16 autocast' if bf16 else 'float32'}, {'channels_last' if channels_last else 'NCHW'}"
                print(f"| {name} | {threads} | {sr_step_ms(bf16, channels_last, threads):.1f} |")


if __name__ == "__main__":
    main()
