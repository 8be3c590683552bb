"""Shared test helpers: run the real CLI in-process, with every output under a tmp folder."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One thread per process: tiny test models gain nothing from two, and DDP tests run two processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def _free_port() -> str:
    """A free port in this xdist worker's own range, so that DDP tests on two workers never meet."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    for port in range(30000 + 1000 * worker, 31000 + 1000 * worker):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return str(port)
    raise RuntimeError("no free port for the DDP tests")


@pytest.fixture(autouse=True)
def ddp_port(monkeypatch):
    """Every test's DDP runs rendezvous on a port of their own (Lightning keeps MASTER_PORT in the environment)."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", _free_port())


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Call ``train.py`` in this process: ``run_cli("fit", "--config", cfg, "--trainer.max_steps=2")``.

    Runs from ``tmp_path`` (so ``runs/`` and ``predictions/`` land there) and returns the CLI
    object (``cli.trainer``, ``cli.model``, ``cli.datamodule``).
    """
    import torch

    from train import cli_main

    torch.set_num_threads(1)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])

    def _run(*args: str):
        resolved = [str(ROOT / a) if a.startswith("configs/") else str(a) for a in args]
        return cli_main(resolved)

    return _run


@pytest.fixture
def run_cli_subprocess(tmp_path):
    """Run ``python train.py ...`` as a child process (needed for DDP, which relaunches the script).

    Returns the ``CompletedProcess``; fails the test with the output when the exit code is not 0
    unless ``check=False``.
    """
    import subprocess

    def _run(*args: str, check: bool = True, timeout: float = 300):
        resolved = [str(ROOT / a) if a.startswith("configs/") else str(a) for a in args]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *resolved],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"train.py {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
        return proc

    return _run
