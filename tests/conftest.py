"""Shared test helpers: run the real CLI in-process, with every output under a tmp folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Call ``train.py`` in this process: ``run_cli("fit", "--config", cfg, "--trainer.max_steps=2")``.

    Runs from ``tmp_path`` (so ``runs/`` and ``predictions/`` land there) and returns the CLI
    object (``cli.trainer``, ``cli.model``, ``cli.datamodule``).
    """
    from train import cli_main

    monkeypatch.chdir(tmp_path)

    def _run(*args: str):
        resolved = [str(ROOT / a) if a.startswith("configs/") else str(a) for a in args]
        return cli_main(resolved)

    return _run
