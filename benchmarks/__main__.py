"""Run every task's benchmark in turn and print their markdown tables: ``python -m benchmarks``.

Each benchmark trains its task's embedded-default config (minutes each on a 2-core CPU), so the
whole run takes a while; pass task names to run a subset, e.g. ``python -m benchmarks sr gan``.
Benchmarks that compute FID take the Inception features file with ``--fid-features PATH``.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys

TASKS = ("sr", "esrgan", "gan", "vae", "inpainting", "segmentation", "pipeline")
WITH_FID = {"gan", "vae"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help=f"any of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--fid-features", help="TorchScript Inception features file for the FID figures")
    args = parser.parse_args()
    unknown = set(args.tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown task(s): {', '.join(sorted(unknown))}; choose from {', '.join(TASKS)}")
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    failed = []
    for task in args.tasks or TASKS:
        module = f"benchmarks.{task}"
        if importlib.util.find_spec(module) is None:
            continue
        command = [sys.executable, "-m", module]
        if task in WITH_FID and args.fid_features:
            command += ["--fid-features", args.fid_features]
        print(f"\n## {task}\n", flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(task)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
