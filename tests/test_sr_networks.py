"""RRDBNet and EDSR: reference sizes, state-dict layout, residual scaling and initialization."""

from __future__ import annotations

import math

import pytest
import torch

from networks.edsr import DIV2K_RGB_MEAN, EDSR
from networks.rrdbnet import RRDB, RRDBNet


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def esrgan_x4():
    torch.manual_seed(0)
    return RRDBNet()


def test_rrdbnet_parameter_counts_match_esrgan(esrgan_x4):
    assert _num_params(esrgan_x4) == 16_697_987  # ESRGAN / BasicSR RRDBNet x4
    # x2 has a single upsampling stage: x4 minus conv_up2 (64*64*9 + 64).
    with torch.device("meta"):  # shapes only: no memory, no initialization cost
        assert _num_params(RRDBNet(scale=2)) == 16_697_987 - 36_928


def test_rrdbnet_state_dict_has_the_reference_layout(esrgan_x4):
    expected = ["conv_first.weight", "conv_first.bias"]
    for block in range(23):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                expected += [f"body.{block}.rdb{rdb}.conv{conv}.{p}" for p in ("weight", "bias")]
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
        expected += [f"{name}.weight", f"{name}.bias"]
    state = esrgan_x4.state_dict()
    assert list(state) == expected
    assert state["body.0.rdb1.conv5.weight"].shape == (64, 64 + 4 * 32, 3, 3)
    # A checkpoint in the published layout (here: a copy) loads strictly.
    with torch.device("meta"):
        other = RRDBNet()
    other.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True, assign=True)
    assert torch.equal(other.conv_last.weight, esrgan_x4.conv_last.weight)


def test_dense_block_convs_use_kaiming_times_0_1(esrgan_x4):
    for conv in (esrgan_x4.body[0].rdb1.conv1, esrgan_x4.body[5].rdb2.conv5):
        fan_in = conv.weight[0].numel()
        assert conv.weight.std().item() == pytest.approx(0.1 * math.sqrt(2 / fan_in), rel=0.05)
        assert torch.count_nonzero(conv.bias) == 0
    # The trunk and upsampling convs keep PyTorch's default init (uniform, std 1/sqrt(3 fan_in)).
    fan_in = esrgan_x4.conv_body.weight[0].numel()
    assert esrgan_x4.conv_body.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.05)


def test_rrdb_residual_scaling_is_0_2_per_dense_block_and_per_rrdb():
    block = RRDB(num_feat=4, grow_ch=2)
    bias = torch.tensor([1.0, -2.0, 0.5, 3.0])
    with torch.no_grad():
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            rdb.conv5.weight.zero_()
            rdb.conv5.bias.copy_(bias)
    x = torch.randn(2, 4, 5, 6)
    # Each dense block adds 0.2 * bias; the RRDB returns 0.2 * (x + 0.6 * bias) + x.
    expected = 1.2 * x + 0.12 * bias.view(1, 4, 1, 1)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("scale", [2, 4])
def test_rrdbnet_output_size(scale):
    model = RRDBNet(num_feat=8, num_block=1, grow_ch=4, scale=scale)
    assert model(torch.rand(2, 3, 11, 7)).shape == (2, 3, 11 * scale, 7 * scale)
    assert hasattr(model, "conv_up2") == (scale == 4)


def test_rrdbnet_bicubic_skip_adds_the_bicubic_upsampling():
    torch.manual_seed(0)
    model = RRDBNet(num_feat=8, num_block=1, grow_ch=4, scale=4, bicubic_skip=True).double()
    x = torch.rand(1, 3, 6, 5, dtype=torch.float64)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bicubic)  # conv_last starts at zero
        torch.nn.init.normal_(model.conv_last.weight, std=0.1)
        # Same parameters as without the skip, so the weights load into either setting.
        plain = RRDBNet(num_feat=8, num_block=1, grow_ch=4, scale=4).double()
        plain.load_state_dict(model.state_dict(), strict=True)
        assert plain(x).abs().mean() > 1e-3
        torch.testing.assert_close(model(x), plain(x) + bicubic)


def test_rrdbnet_rejects_other_scales():
    with pytest.raises(ValueError, match="scale 2 or 4"):
        RRDBNet(scale=3)


def test_edsr_baseline_size_and_layout():
    with torch.device("meta"):
        model = EDSR()
    assert _num_params(model) == 1_517_571  # EDSR-baseline x4 (BasicSR EDSR_Mx4)
    state = model.state_dict()
    assert "mean" not in state  # the mean shift is a constant, as in the reference checkpoints
    assert {"conv_first.weight", "body.15.conv2.weight", "conv_after_body.weight"} <= set(state)
    assert state["upsample.0.weight"].shape == (256, 64, 3, 3) and "upsample.2.weight" in state
    with torch.device("meta"):
        assert EDSR(scale=3).state_dict()["upsample.0.weight"].shape == (576, 64, 3, 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_output_size(scale):
    model = EDSR(num_feat=8, num_block=2, scale=scale)
    assert model(torch.rand(1, 3, 9, 10)).shape == (1, 3, 9 * scale, 10 * scale)


def test_edsr_mean_shift():
    model = EDSR(num_feat=8, num_block=1, scale=2).double()
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
    # With a silent last conv the network outputs exactly the DIV2K mean it added back.
    out = model(torch.rand(1, 3, 6, 6, dtype=torch.float64))
    expected = torch.tensor(DIV2K_RGB_MEAN, dtype=torch.float64).view(1, 3, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected)
    assert model.mean.dtype == torch.float64


def test_edsr_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scale 2, 3 or 4"):
        EDSR(scale=8)
    with pytest.raises(ValueError, match="in_channels and out_channels must be 3"):
        EDSR(in_channels=1)
