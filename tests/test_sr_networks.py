"""RRDBNet and EDSR: reference sizes, state-dict layout, residual scaling and initialization."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.tiling import tiled_forward
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
    # x2 / x1 keep the x4 layout; only conv_first grows to 4x / 16x the input channels.
    with torch.device("meta"):  # shapes only: no memory, no initialization cost
        assert _num_params(RRDBNet(scale=2)) == 16_697_987 + 9 * 64 * 9  # RealESRGAN_x2plus size
        assert _num_params(RRDBNet(scale=1)) == 16_697_987 + 45 * 64 * 9


def _basicsr_state_dict_shapes(in_ch: int, num_block: int = 23, feat: int = 64, grow: int = 32) -> dict:
    """Key names and shapes of BasicSR's RRDBNet (``in_ch`` already multiplied for x2 / x1)."""
    shapes = {"conv_first": (feat, in_ch)}
    for block in range(num_block):
        for rdb in (1, 2, 3):
            for conv in range(1, 5):
                shapes[f"body.{block}.rdb{rdb}.conv{conv}"] = (grow, feat + (conv - 1) * grow)
            shapes[f"body.{block}.rdb{rdb}.conv5"] = (feat, feat + 4 * grow)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (feat, feat)
    shapes["conv_last"] = (3, feat)
    out = {}
    for name, (cout, cin) in shapes.items():
        out[f"{name}.weight"], out[f"{name}.bias"] = (cout, cin, 3, 3), (cout,)
    return out


def _basicsr_pixel_unshuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """BasicSR's arch_util.pixel_unshuffle, written out to pin the channel order."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // scale, scale, w // scale, scale).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * scale**2, h // scale, w // scale)


def test_rrdbnet_state_dict_has_the_reference_layout(esrgan_x4):
    expected = list(_basicsr_state_dict_shapes(3))
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


@pytest.mark.parametrize("scale, in_ch", [(2, 12), (1, 48)])
def test_rrdbnet_x2_x1_have_the_basicsr_layout_and_load_its_weights(scale, in_ch):
    """BasicSR's x2 / x1 pixel-unshuffle the input and keep the x4 layout (RealESRGAN_x2plus)."""
    reference = _basicsr_state_dict_shapes(in_ch)
    with torch.device("meta"):
        model = RRDBNet(scale=scale)
    state = model.state_dict()
    assert list(state) == list(reference)
    assert {k: tuple(v.shape) for k, v in state.items()} == reference
    assert state["conv_first.weight"].shape == (64, in_ch, 3, 3) and "conv_up2.weight" in state
    checkpoint = {k: torch.zeros(shape) for k, shape in reference.items()}
    checkpoint["conv_first.weight"] = torch.randn(reference["conv_first.weight"])
    with torch.device("meta"):
        model = RRDBNet(scale=scale)
    model.load_state_dict(checkpoint, strict=True, assign=True)
    assert torch.equal(model.conv_first.weight, checkpoint["conv_first.weight"])


@pytest.mark.parametrize("scale", [1, 2])
def test_rrdbnet_x2_x1_forward_matches_basicsr(scale):
    """Same as BasicSR's forward on divisible sizes; other sizes are reflect-padded, then cropped."""
    torch.manual_seed(0)
    model = RRDBNet(num_feat=8, num_block=1, grow_ch=4, scale=scale).double().eval()
    factor = 4 // scale

    def basicsr_forward(x):
        feat = model.conv_first(_basicsr_pixel_unshuffle(x, factor))
        feat = feat + model.conv_body(model.body(feat))
        feat = model.lrelu(model.conv_up1(torch.nn.functional.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = model.lrelu(model.conv_up2(torch.nn.functional.interpolate(feat, scale_factor=2, mode="nearest")))
        return model.conv_last(model.lrelu(model.conv_hr(feat)))

    with torch.no_grad():
        x = torch.rand(2, 3, 8, 12, dtype=torch.float64)
        torch.testing.assert_close(model(x), basicsr_forward(x), rtol=0, atol=0)
        odd = torch.rand(1, 3, 9, 11, dtype=torch.float64)
        padded = torch.nn.functional.pad(odd, (0, -11 % factor, 0, -9 % factor), mode="reflect")
        expected = basicsr_forward(padded)[..., : 9 * scale, : 11 * scale]
        torch.testing.assert_close(model(odd), expected, rtol=0, atol=0)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_output_size(scale):
    model = RRDBNet(num_feat=8, num_block=1, grow_ch=4, scale=scale)
    assert hasattr(model, "conv_up2")
    for height, width in ((11, 7), (13, 1), (1, 2)):  # odd sizes; 1-pixel sides cannot reflect-pad
        out = model(torch.rand(2, 3, height, width))
        assert out.shape == (2, 3, height * scale, width * scale)


@pytest.mark.parametrize("scale", [1, 2])
def test_rrdbnet_x2_x1_tiled_inference_matches_whole_image(scale):
    """With tile and overlap multiples of the unshuffle factor the tiles align with the whole image."""
    torch.manual_seed(0)
    model = RRDBNet(num_feat=8, num_block=1, grow_ch=4, scale=scale).eval()
    image = torch.rand(1, 3, 45, 39, generator=torch.Generator().manual_seed(0))  # odd: padded tiles
    with torch.no_grad():
        whole = model(image)
        tiled = tiled_forward(model, image, scale=scale, tile=16, overlap=16)
    assert tiled.shape == whole.shape == (1, 3, 45 * scale, 39 * scale)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


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
    for scale in (3, 8):
        with pytest.raises(ValueError, match="scale 1, 2 or 4"):
            RRDBNet(scale=scale)


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
