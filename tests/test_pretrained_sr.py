"""Published SR weights through spandrel (networks.pretrained.PretrainedSR): detection of the
project's own RRDBNet files, the same test metrics as loading them into RRDBNet, clear errors."""

import pytest
import torch

from networks.pretrained import PretrainedSR
from networks.rrdbnet import RRDBNet

# spandrel infers RRDBNet's widths from the shapes but assumes the published growth of 32.
TINY = {"num_feat": 8, "num_block": 1, "grow_ch": 32}


@pytest.mark.parametrize("scale", [4, 2])
def test_spandrel_detects_the_project_rrdbnet_files(scale, tmp_path):
    network = RRDBNet(**TINY, scale=scale).eval()
    torch.save({"params_ema": network.state_dict()}, tmp_path / "net.pth")
    pretrained = PretrainedSR(str(tmp_path / "net.pth"), scale=scale)
    assert (pretrained.architecture, pretrained.scale) == ("ESRGAN", scale)
    assert not any(p.requires_grad for p in pretrained.parameters())
    lr = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        assert torch.allclose(pretrained(lr), network(lr), atol=1e-6)
        # Not a multiple of x2's pixel-unshuffle factor: padded to it and cropped back.
        assert pretrained(lr[..., :11, :13]).shape == (2, 3, 11 * scale, 13 * scale)


def test_the_pretrained_config_tests_a_file_as_rrdbnet_does(run_cli, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "RRDB_tiny_x4.pth"
    torch.save(RRDBNet(**TINY, scale=4).state_dict(), weights)
    limit = ["--trainer.limit_test_batches=2", "--trainer.logger=false", "--progress_bar.refresh_rate=0"]
    published = run_cli("test", "--config", "configs/sr/pretrained_x4.yaml", *limit,
                        f"--model.init_args.generator.init_args.weights_path={weights}")
    own = run_cli("test", "--config", "configs/sr/pretrained_x4.yaml", *limit,
                  "--model.init_args.generator=networks.rrdbnet.RRDBNet",
                  *(f"--model.init_args.generator.init_args.{k}={v}" for k, v in TINY.items()),
                  f"--model.init_args.pretrained_generator={weights}")
    for name in ("test/psnr_y", "test/ssim_y", "test/psnr_rgb"):
        assert published.trainer.callback_metrics[name] == pytest.approx(own.trainer.callback_metrics[name].item(), abs=1e-4)


def test_wrong_scale_missing_and_unknown_files_are_named(tmp_path):
    torch.save(RRDBNet(**TINY, scale=4).state_dict(), tmp_path / "x4.pth")
    with pytest.raises(ValueError, match=r"x4 ESRGAN network, but the run's scale is x2: set data.init_args.scale=4"):
        PretrainedSR(str(tmp_path / "x4.pth"), scale=2)
    with pytest.raises(FileNotFoundError, match="missing.pth: SR weights file not found.*weights_path"):
        PretrainedSR(str(tmp_path / "missing.pth"))
    torch.save({"layer.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: spandrel recognises no architecture"):
        PretrainedSR(str(tmp_path / "other.pth"))
