"""Run every task's benchmark and print one markdown table: ``python -m benchmarks``.

Each task's benchmark runs in its own process (so that peak memory and threads are its own),
prints its detailed tables as it goes, and hands back one row; the combined table comes last.
Each trains its task's embedded-default config (minutes each on a 2-core CPU; the whole run
takes about an hour there). The ESRGAN GAN stage starts from the PSNR-stage checkpoint that the
super-resolution benchmark just trained. Pass task names to run a subset, e.g.
``python -m benchmarks sr gan``. FID figures need ``--fid-features PATH`` (a TorchScript
Inception features file); without it the GAN benchmark downloads the standard Inception and
the VAE row has no FID. ``python -m benchmarks.pipeline`` is the quick check of the data
pipelines alone (no training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import SUMMARY_FIELDS

TASKS = ("sr", "esrgan", "gan", "vae", "inpainting", "segmentation", "translation", "style", "sequence")
WITH_FID = {"gan", "vae"}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def table(rows: list[dict]) -> str:
    header = [SUMMARY_FIELDS[key] for key in SUMMARY_FIELDS if key != "config"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        pipeline_ratio = row["pipeline_samples_per_s"] / row["train_samples_per_s"]
        lines.append(
            f"| {row['task']} (`{row['config']}`) | {row['quality']} | {row['step_ratio']:.3f} "
            f"| {row['train_samples_per_s']:.1f} | {row['pipeline_samples_per_s']:.0f} ({pipeline_ratio:.0f}x) "
            f"| {row['predict']} | {row['peak_memory_mib']:.0f} MiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help=f"any of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--fid-features", help="TorchScript Inception features file for the FID figures")
    args = parser.parse_args()
    unknown = set(args.tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown task(s): {', '.join(sorted(unknown))}; choose from {', '.join(TASKS)}")

    print(f"machine: {machine()}", flush=True)
    rows: dict[str, dict] = {}
    failed = []
    with tempfile.TemporaryDirectory() as workdir:
        for task in [task for task in TASKS if task in (args.tasks or TASKS)]:
            summary = Path(workdir) / f"{task}.json"
            command = [sys.executable, "-m", f"benchmarks.{task}", "--summary", str(summary)]
            if task in WITH_FID and args.fid_features:
                command += ["--fid-features", args.fid_features]
            if task == "sr":
                command += ["--workdir", str(Path(workdir) / "sr")]
            if task == "esrgan" and "sr" in rows:
                command += ["--psnr-ckpt", rows["sr"]["checkpoint"]]
            print(f"\n## {task}\n", flush=True)
            if subprocess.run(command, check=False).returncode != 0 or not summary.is_file():
                failed.append(task)
                continue
            rows[task] = json.loads(summary.read_text())
    if rows:
        print(f"\n## All tasks\n\nMachine: {machine()}.\n")
        print(table(list(rows.values())))
        print("\nStep ratio: Lightning training step / plain PyTorch loop on the same batch (target <= 1.05). "
              "Data pipeline: samples/s of the DataLoader alone with the default workers, and its multiple of "
              "what training consumes (target >= 5x). Peak memory: resident memory of a fresh process that builds "
              "the config and runs three training steps on CPU.")
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
