"""Precision and memory options for every task through the real CLI: ``--trainer.precision=bf16-mixed``,
``--network_options.channels_last=true`` and ``--network_options.compile=true`` give the fp32 losses
of the first training batch (SR: the second; same seed, data and weights; bf16 within rel 3e-2, the others within
rel 1e-4), and the networks really are NHWC."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric, MetricCollection

import train
from lightning_modules.callbacks import NetworkOptions, networks
from tiny_configs import TASKS
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
# Fit for one batch (GAN-type modules: D step + G step = 2 optimizer steps; SR: two batches, see
# TASKS), log it, no validation.
ONE_BATCH = ["--trainer.log_every_n_steps=1", "--trainer.limit_val_batches=0", "--checkpoint.monitor=null",
             "--trainer.enable_model_summary=false", "--progress_bar.refresh_rate=0"]
BF16 = ("--trainer.precision=bf16-mixed",)
CHANNELS_LAST = ("--network_options.channels_last=true",)


def _cli(workdir: Path, args: list[str], run: bool = True):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(sys, "argv", ["train.py"])
        return cli_main(args, run=run)


def _fit(workdir: Path, task: str, *switches: str):
    config, steps, tiny = TASKS[task]
    # The reference is NCHW fp32 even where a config switches channels_last on (configs/sr/default.yaml).
    return _cli(workdir, ["fit", "--config", str(ROOT / config), *tiny, *ONE_BATCH, f"--trainer.max_steps={steps}",
                          "--network_options.channels_last=false", "--auto_bf16=false", *switches])


def _losses(cli) -> dict[str, float]:
    """The logged training losses and loss terms (not the GAN's mean logits, which are diagnostics)."""
    metrics = cli.trainer.callback_metrics
    return {k: v.item() for k, v in metrics.items() if k.startswith("train/") and not k.endswith("_logit")}


def _conv_weights(module: nn.Module) -> list[torch.Tensor]:
    """The 4D weights of the networks whose layout tells NCHW from NHWC (1x1 kernels or one channel tell nothing)."""
    return [p for net in networks(module) for p in net.parameters()
            if p.dim() == 4 and p.shape[1] > 1 and p.shape[2:] != (1, 1)]


@pytest.fixture(scope="module")
def first_batch(tmp_path_factory):
    """Training losses of the first batch of a task under a set of switches (each run once)."""
    runs: dict[tuple, dict] = {}

    def run(task: str, *switches: str) -> dict:
        if (task, switches) not in runs:
            workdir = tmp_path_factory.mktemp(task)
            torch.set_num_threads(1)
            cli = _fit(workdir, task, *switches)
            assert cli.trainer.global_step == TASKS[task][1]
            weights = _conv_weights(cli.model)
            assert weights, "the task's networks have convolutions"
            runs[task, switches] = {
                "losses": _losses(cli),
                "nhwc": all(w.is_contiguous(memory_format=torch.channels_last) for w in weights),
                "nchw": all(w.is_contiguous() for w in weights),
                "networks": sorted(name for name, child in cli.model.named_children() if child in networks(cli.model)),
            }
            shutil.rmtree(workdir, ignore_errors=True)
        return runs[task, switches]

    return run


@pytest.mark.parametrize("task", list(TASKS))
def test_bf16_with_channels_last_gives_the_fp32_losses(first_batch, task):
    """Both switches together, as the SR default runs them: a layout bug in a network shows as a
    loss off by far more than bfloat16's rounding (see the fp32 channels_last test below)."""
    reference, run = first_batch(task), first_batch(task, *BF16, *CHANNELS_LAST)
    assert reference["losses"] and run["losses"].keys() == reference["losses"].keys()
    for name, value in reference["losses"].items():
        # abs: for terms that start near 0 (the adversarial terms of the generators)
        assert run["losses"][name] == pytest.approx(value, rel=3e-2, abs=3e-5), name
    assert run["losses"] != reference["losses"], "autocast really ran in bfloat16"
    assert reference["nchw"] and not reference["nhwc"]
    assert run["nhwc"]


@pytest.mark.parametrize("task", ["sr", "inpainting", "sequence"])
def test_channels_last_in_fp32_gives_the_fp32_losses(first_batch, task):
    """The SR default's path on CPUs without native bfloat16, and the networks with the most
    reshaping (the inpainting composite, the recurrent cells), to fp32's rounding."""
    reference, run = first_batch(task), first_batch(task, *CHANNELS_LAST)
    assert run["losses"].keys() == reference["losses"].keys()
    for name, value in reference["losses"].items():
        assert run["losses"][name] == pytest.approx(value, rel=1e-4, abs=1e-7), name
    assert run["nhwc"] and not reference["nhwc"]


def test_the_options_reach_every_network_and_nothing_else(first_batch):
    expected = {
        "sr": ["generator"],
        "realesrnet": ["generator"],
        "esrgan": ["discriminator", "generator", "generator_ema", "perceptual"],
        "gan": ["discriminator", "generator", "generator_ema"],
        "vae": ["network"],
        "inpainting": ["discriminator", "generator", "generator_ema", "perceptual"],
        "segmentation": ["net"],
        "translation": ["discriminator", "generator", "perceptual"],
    }
    for task, names in expected.items():
        assert first_batch(task)["networks"] == names, task


def test_networks_skip_metrics_and_the_options_apply_once():
    class Module(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
            self.ema = AveragedModel(self.net)
            self.metric = MeanMetric()
            self.collection = MetricCollection({"mean": MeanMetric()})
            lpips_like = MeanMetric()
            lpips_like.backbone = nn.Conv2d(3, 4, 3)  # a metric with a network inside (like LPIPS)
            self.metric_dict = nn.ModuleDict({"model": lpips_like})
            self.no_parameters = nn.ReLU()

    module = Module()
    assert networks(module) == [module.net, module.ema]
    options = NetworkOptions(channels_last=True)
    options.setup(None, module, "fit")
    weight = module.net[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert module.ema.module[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert module.metric_dict["model"].backbone.weight.is_contiguous()
    module.net.to(memory_format=torch.contiguous_format)
    options.setup(None, module, "validate")  # a second stage leaves the networks as they are
    assert weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last)

    module = Module()
    options = NetworkOptions(compile=True, compile_mode="reduce-overhead")
    options.setup(None, module, "fit")  # torch.compile is lazy: nothing is compiled before a call
    compiled = module.net._compiled_call_impl
    assert compiled is not None and module.ema.module._compiled_call_impl is not None  # the averaged network
    assert module.metric_dict._compiled_call_impl is None
    options.setup(None, module, "validate")
    assert module.net._compiled_call_impl is compiled
    assert list(module.state_dict()) == list(Module().state_dict())  # no `_orig_mod.` in the keys


def _cpp_compiler_problem() -> str | None:
    """Why inductor cannot build CPU kernels on this machine, or None when it can."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # private module moved: look for a compiler ourselves
        found = any(shutil.which(name) for name in ("g++", "c++", "clang++"))
        return None if found else "none of g++, c++, clang++ is on PATH"
    try:
        get_cpp_compiler()
    except (RuntimeError, OSError) as err:  # inductor's InvalidCxxCompiler is a RuntimeError
        return f"{type(err).__name__}: {err}"
    return None


def test_compile_gives_the_fp32_loss_and_plain_checkpoint_keys(first_batch, tmp_path):
    """torch.compile (inductor) on one small task, a one-level segmentation U-Net: ~20 s on one CPU core."""
    problem = _cpp_compiler_problem()
    if problem is not None:
        pytest.skip(f"torch.compile's CPU backend (inductor) needs a C++ compiler: {problem}")
    one_level = "--model.init_args.net.init_args.widths=[4, 8]"
    reference = first_batch("segmentation", one_level)
    counters.clear()
    cli = _fit(tmp_path, "segmentation", one_level, "--network_options.compile=true")
    assert counters["stats"]["unique_graphs"] > 0, "the network ran compiled"
    losses = _losses(cli)
    assert losses.keys() == reference["losses"].keys()
    for name, value in reference["losses"].items():
        assert losses[name] == pytest.approx(value, rel=1e-4), name
    checkpoint = tmp_path / cli.trainer.checkpoint_callback.dirpath / "last.ckpt"
    state_dict = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert state_dict and not [k for k in state_dict if "_orig_mod" in k]
    config, _, tiny = TASKS["segmentation"]
    plain = _cli(tmp_path, ["--config", str(ROOT / config), *tiny, one_level], run=False).model
    plain.load_state_dict(state_dict)  # strict: the keys of an uncompiled model


@pytest.mark.parametrize("precision, warns", [("bf16-mixed", True), ("32-true", False)])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(tmp_path, monkeypatch, precision, warns):
    """Emulated bf16 made the SR step 2.5-10x slower than fp32: say so and name the option to set."""
    monkeypatch.setattr(train, "cpu_bf16_is_emulated", lambda: True)
    config, _, tiny = TASKS["sr"]
    args = ["--config", str(ROOT / config), *tiny, f"--trainer.precision={precision}"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _cli(tmp_path, args, run=False)
    messages = [str(w.message) for w in caught if "native bfloat16" in str(w.message)]
    assert len(messages) == int(warns)
    if warns:
        assert "--trainer.precision=32-true" in messages[0]
