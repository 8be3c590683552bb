"""Generator weights files (``pretrained_generator``): every RRDBNet key layout in circulation loads
and gives the network's own output, a wrong file names what would fit, and the PSNR-stage module
takes a file through the real CLI for fit, validate, test and predict."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules.embedded import SKIMAGE_DATA
from datamodules.image_io import read_image
from lightning_modules.generator_weights import load_generator_weights
from networks.rrdbnet import RRDBNet, rrdbnet_options, to_basicsr_keys
from tiny_configs import SR_TINY

TINY = {"num_feat": 8, "num_block": 2, "grow_ch": 4}
CONFIG = "configs/sr/default.yaml"


def random_rrdbnet(seed: int = 0, **options) -> RRDBNet:
    """A tiny RRDBNet whose every weight and bias is random (none left at zero by the init)."""
    torch.manual_seed(seed)
    net = RRDBNet(**(TINY | options))
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0, 0.1)
    return net.eval()


# Writers of BasicSR-named state dicts in the other layouts, written from the ESRGAN repository's
# RRDBNet_arch.py (new arch) and the mapping of its transer_RRDB_models.py (original arch).
ESRGAN_REPO = {"body.": "RRDB_trunk.", "conv_body.": "trunk_conv.", "conv_up1.": "upconv1.", "conv_up2.": "upconv2.",
               "conv_hr.": "HRconv."}
ORIGINAL_X4 = {"conv_first": "model.0", "conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8",
               "conv_last": "model.10"}


def in_esrgan_repo_layout(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for new, old in ESRGAN_REPO.items():
            if key.startswith(new):
                key = old + key.removeprefix(new)
        out[re.sub(r"\.rdb(\d)\.", r".RDB\1.", key)] = value
    return out


def in_original_layout(state: dict, num_block: int) -> dict:
    out = {}
    for key, value in state.items():
        name, kind = key.rsplit(".", 1)
        if m := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)", name):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{kind}"] = value
        elif name == "conv_body":
            out[f"model.1.sub.{num_block}.{kind}"] = value
        else:
            out[f"{ORIGINAL_X4[name]}.{kind}"] = value
    return out


LAYOUTS = {
    "basicsr_plain": (4, lambda s: s),
    "basicsr_params_ema": (4, lambda s: {"params_ema": s, "params": {k: torch.zeros_like(v) for k, v in s.items()}}),
    "basicsr_params": (4, lambda s: {"params": s}),
    "esrgan_repo": (4, in_esrgan_repo_layout),
    "esrgan_original_x4": (4, lambda s: in_original_layout(s, TINY["num_block"])),
    "dataparallel_esrgan_repo": (4, lambda s: {f"module.{k}": v for k, v in in_esrgan_repo_layout(s).items()}),
    "basicsr_x2_pixel_unshuffle": (2, lambda s: {"params_ema": s}),
    "basicsr_x1_pixel_unshuffle": (1, lambda s: {"params": s}),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_loads_back_with_the_same_output(layout, tmp_path):
    scale, write = LAYOUTS[layout]
    reference = random_rrdbnet(scale=scale)
    torch.save(write(reference.state_dict()), tmp_path / "weights.pth")
    loaded = RRDBNet(**TINY, scale=scale).eval()
    load_generator_weights(loaded, str(tmp_path / "weights.pth"))
    lr = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        expected, output = reference(lr), loaded(lr)
    assert output.shape == (1, 3, 12 * scale, 16 * scale)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)


def test_conversion_covers_every_key_and_reads_the_options():
    state = random_rrdbnet().state_dict()
    for written in (in_esrgan_repo_layout(state), in_original_layout(state, TINY["num_block"])):
        converted = to_basicsr_keys(written)
        assert converted.keys() == state.keys()
        assert all(converted[k] is written_value for k, written_value in zip(converted, written.values()))
    assert rrdbnet_options(state) == TINY | {"scale": 4}
    assert rrdbnet_options(random_rrdbnet(scale=2).state_dict()) == TINY | {"scale": 2}
    assert rrdbnet_options(random_rrdbnet(scale=1).state_dict()) == TINY | {"scale": 1}
    assert rrdbnet_options({"head.0.weight": torch.zeros(1)}) is None


def test_wrong_architecture_names_the_keys_and_the_options_that_fit(tmp_path):
    path = tmp_path / "RRDB_PSNR_x4.pth"
    torch.save(in_original_layout(random_rrdbnet().state_dict(), TINY["num_block"]), path)
    # Wider and with one block more than the file: shapes differ and body.2 is missing.
    with pytest.raises(ValueError) as caught:
        load_generator_weights(RRDBNet(num_feat=16, num_block=3, grow_ch=4), str(path))
    message = str(caught.value)
    assert str(path) in message and "model.init_args.pretrained_generator" in message
    assert "Missing keys (30): body.2.rdb1.conv1.weight; " in message and "; ..." in message
    assert "Shape mismatches (47)" in message and "conv_first.weight (8, 3, 3, 3) in the file, (16, 3, 3, 3) in the model" in message
    assert "The file fits RRDBNet(num_feat=8, num_block=2, grow_ch=4, scale=4)" in message
    # An x2 pixel-unshuffle file in an x4 network: the scale is read from conv_first's input.
    torch.save({"params_ema": random_rrdbnet(scale=2).state_dict()}, path)
    with pytest.raises(ValueError, match=r"fits RRDBNet\(num_feat=8, num_block=2, grow_ch=4, scale=2\)"):
        load_generator_weights(RRDBNet(**TINY), str(path))
    # Keys of another network are reported as unexpected.
    torch.save({"params": {"head.0.weight": torch.zeros(3)}}, path)
    with pytest.raises(ValueError, match=r"Unexpected keys \(1\): head\.0\.weight\.") as caught:
        load_generator_weights(RRDBNet(**TINY), str(path))
    assert "fits RRDBNet" not in str(caught.value)


def test_original_layout_at_another_scale_is_refused(tmp_path):
    # The original x2 generator: model.0 conv, 1 trunk, 2-4 one upsample block, 5 HR conv, 7 last conv.
    state = in_original_layout(random_rrdbnet().state_dict(), TINY["num_block"])
    x2 = {re.sub(r"^model\.(6|8|10)\.", lambda m: f"model.{ {'6': '5', '8': '7', '10': '9'}[m[1]] }.", k): v
          for k, v in state.items() if not k.startswith("model.3.")}
    torch.save(x2, tmp_path / "x2.pth")
    with pytest.raises(ValueError, match=r"x2.pth .*pretrained_generator.*only at x4.*model\.0, 1, 5, 7, 9"):
        load_generator_weights(RRDBNet(**TINY), str(tmp_path / "x2.pth"))


# ----------------------------------------------------------------- the PSNR-stage module, real CLI
def _generator_file(folder: Path) -> tuple[Path, RRDBNet]:
    """A random generator of SR_TINY's size (default.yaml's bicubic skip), in the original ESRGAN layout."""
    net = random_rrdbnet(seed=1, num_block=1, bicubic_skip=True)
    path = folder / "generator.pth"
    torch.save(in_original_layout(net.state_dict(), 1), path)
    return path, net


def _assert_generator_is(module, net: RRDBNet) -> None:
    for key, value in net.state_dict().items():
        torch.testing.assert_close(module.generator.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_psnr_stage_takes_the_file_for_fit_validate_test_and_predict(run_cli, tmp_path):
    weights, net = _generator_file(tmp_path)
    option = f"--model.init_args.pretrained_generator={weights}"
    tiny = [*SR_TINY, "--trainer.val_check_interval=1"]
    # fit: starts from the file (lr 0 keeps it, so the checkpoint holds the file's weights).
    fit = run_cli("fit", "--config", CONFIG, *tiny, option, "--trainer.max_steps=1",
                  "--model.init_args.optimizer.init_args.lr=0")
    _assert_generator_is(fit.model, net)
    checkpoint = tmp_path / fit.trainer.log_dir / "checkpoints" / "last.ckpt"
    fit_psnr = fit.trainer.callback_metrics["val/psnr_y"].item()

    validate = run_cli("validate", "--config", CONFIG, *tiny, option)
    _assert_generator_is(validate.model, net)
    assert validate.trainer.callback_metrics["val/psnr_y"].item() == fit_psnr

    # test: the file gives the metrics of a checkpoint with the same weights; a restored
    # checkpoint wins over the option (the file need not exist then).
    from_file = run_cli("test", "--config", CONFIG, *tiny, option).trainer.callback_metrics
    from_checkpoint = run_cli("test", "--config", CONFIG, *tiny, "--ckpt_path", str(checkpoint),
                              "--model.init_args.pretrained_generator=gone.pth").trainer.callback_metrics
    assert {k: v.item() for k, v in from_file.items()} == {k: v.item() for k, v in from_checkpoint.items()}
    assert from_file["test/psnr_y"].item() != from_file["test/bicubic_psnr_y"].item()

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB").crop((0, 0, 40, 32)).save(inputs / "coffee.png")
    run_cli("predict", "--config", CONFIG, *tiny, option, f"--data.init_args.predict_path={inputs}",
            f"--predict_writer.output_dir={tmp_path / 'out'}")
    with torch.no_grad():
        lr = read_image(inputs / "coffee.png").float().div(255).unsqueeze(0)
        expected = net(lr).clamp(0, 1).mul(255).round()[0]
    assert (read_image(tmp_path / "out" / "coffee.png").float() - expected).abs().max() <= 1


def test_psnr_stage_stops_at_start_for_a_missing_or_wrong_file(run_cli, tmp_path):
    with pytest.raises(FileNotFoundError, match="generator weights not found.*pretrained_generator"):
        run_cli("test", "--config", CONFIG, *SR_TINY, "--model.init_args.pretrained_generator=nowhere.pth")
    weights, _ = _generator_file(tmp_path)
    with pytest.raises(ValueError, match=r"fits RRDBNet\(num_feat=8, num_block=1, grow_ch=4, scale=4\)"):
        run_cli("test", "--config", CONFIG, *SR_TINY, "--model.init_args.generator.init_args.num_feat=16",
                f"--model.init_args.pretrained_generator={weights}")


def test_translation_takes_a_pix2pix_reference_generator_file(run_cli, tmp_path):
    """pytorch-CycleGAN-and-pix2pix saves ``netG.state_dict()`` (older files without batch-norm
    ``num_batches_tracked``): it loads into the U-Net and its EMA for test, as it was written."""
    from networks.pix2pix import UNetGenerator
    from tiny_configs import TASKS

    config, _, tiny = TASKS["translation"]
    torch.manual_seed(3)
    reference = UNetGenerator(num_downs=3, ngf=4, dropout=0)
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_(0, 0.1)
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "latest_net_G.pth")
    cli = run_cli("test", "--config", config, *tiny, f"--model.init_args.pretrained_generator={tmp_path / 'latest_net_G.pth'}",
                  "--model.init_args.fid=null", "--model.init_args.perceptual=null", "--trainer.limit_test_batches=1",
                  "--trainer.logger=false", "--progress_bar.refresh_rate=0")
    model = cli.model
    for name, value in state.items():
        assert torch.equal(model.generator.state_dict()[name], value), name
        assert torch.equal(model.eval_generator().state_dict()[name], value), name
    assert "test/psnr" in cli.trainer.callback_metrics
