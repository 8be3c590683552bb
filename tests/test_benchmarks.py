"""The shared benchmark helpers: peak memory, throughput and the combined table's rows."""

import json

import pytest
import torch

from benchmarks.__main__ import table
from benchmarks.common import (
    SUMMARY_FIELDS,
    peak_rss_mib,
    per_second,
    reset_peak_rss,
    write_summary,
)

ROW = {
    "task": "super-resolution", "config": "configs/sr/default.yaml", "quality": "PSNR-Y +0.84 dB over bicubic",
    "step_ratio": 0.9661, "train_samples_per_s": 125.0, "pipeline_samples_per_s": 22000.0, "predict": "0.96 MP/s",
    "peak_memory_mib": 812.4,
}


def test_peak_rss_sees_an_allocation_and_resets():
    reset_peak_rss()
    before = peak_rss_mib()
    block = torch.ones(128 * 2**20)  # 512 MiB, every page written
    assert peak_rss_mib() >= before + 400
    del block
    reset_peak_rss()
    # Wide margins: other threads of the test process (loggers, progress bars) may hold some memory.
    assert peak_rss_mib() < before + 256


def test_per_second_counts_items_over_repeats():
    calls = []
    rate = per_second(lambda: calls.append(1), items=10, repeats=4)
    assert len(calls) == 5 and rate > 0  # one warm-up call is not timed


def test_summary_rows_need_every_field_and_render_one_line_each(tmp_path):
    with pytest.raises(ValueError, match="predict"):
        write_summary(str(tmp_path / "x.json"), **{k: v for k, v in ROW.items() if k != "predict"})
    write_summary(str(tmp_path / "sr.json"), **ROW)
    lines = table([json.loads((tmp_path / "sr.json").read_text())]).splitlines()
    assert len(lines) == 3 and lines[0].count("|") == len(SUMMARY_FIELDS)
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells == ["super-resolution (`configs/sr/default.yaml`)", "PSNR-Y +0.84 dB over bicubic", "0.966", "125.0",
                     "22000 (176x)", "0.96 MP/s", "812 MiB"]
