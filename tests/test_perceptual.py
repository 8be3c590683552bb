"""VGG19 features and the perceptual loss: torchvision-compatible layers, weight loading and its
errors (the download is always monkeypatched: tests never touch the network)."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from lightning_modules.perceptual import PerceptualLoss
from networks.vgg import VGG19Features, vgg19_layer_names

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def torchvision_features() -> nn.Sequential:
    """torchvision's own VGG19 ``features`` with random weights (its reference layer numbering)."""
    torch.manual_seed(0)
    return make_layers(cfgs["E"]).eval()


@pytest.fixture(scope="module")
def weights_file(torchvision_features, tmp_path_factory) -> str:
    """A state dict in the layout of torchvision's ``vgg19-dcbb9e9d.pth`` (features part)."""
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save({f"features.{k}": v for k, v in torchvision_features.state_dict().items()}, path)
    return str(path)


@pytest.fixture
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)


def test_layer_names_follow_the_paper():
    names = vgg19_layer_names()
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names.index("conv5_4") == 34 and names[-1] == "pool5" and len(names) == 37


def test_local_weights_match_torchvision_before_and_after_activation(torchvision_features, weights_file):
    vgg = VGG19Features(["conv5_4", "relu5_4", "conv1_1"], weights_path=weights_file)
    images = torch.rand(2, 3, 32, 32)
    normalized = (images - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        out = vgg(images)
        torch.testing.assert_close(out["conv5_4"], torchvision_features[:35](normalized))
        torch.testing.assert_close(out["relu5_4"], torchvision_features[:36](normalized))
        torch.testing.assert_close(out["conv1_1"], torchvision_features[:1](normalized))
    assert out["conv5_4"].min() < 0, "conv5_4 must be taken before its ReLU"
    assert not any(p.requires_grad for p in vgg.parameters())


def test_only_the_needed_layers_are_built_and_loaded(weights_file, tmp_path):
    assert len(VGG19Features(["relu2_1"], pretrained=False).features) == 7
    shallow = tmp_path / "first-layers.pth"
    state = torch.load(weights_file, weights_only=True)
    torch.save({k: v for k, v in state.items() if k.startswith(("features.0.", "features.2."))}, shallow)
    VGG19Features(["conv1_2"], weights_path=str(shallow))
    with pytest.raises(ValueError, match="not a VGG19 state dict, missing 5.bias, 5.weight"):
        VGG19Features(["conv2_1"], weights_path=str(shallow))


def test_without_network_or_file_the_error_names_the_option(offline):
    with pytest.raises(RuntimeError, match="could not be downloaded .*set `weights_path`"):
        PerceptualLoss()
    with pytest.raises(FileNotFoundError, match="missing.pth: VGG19 weights file not found .*`weights_path`"):
        PerceptualLoss(weights_path="missing.pth")
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        VGG19Features(["conv6_1"], pretrained=False)


def test_perceptual_loss_value_gradients_and_small_state_dict(weights_file):
    torch.manual_seed(0)
    loss = PerceptualLoss({"conv3_4": 0.5, "conv5_4": 1.0}, weights_path=weights_file, weight=2.0)
    output = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.rand(2, 3, 32, 32)
    value = loss(output, target)
    with torch.no_grad():
        a, b = loss.vgg(output), loss.vgg(target)
    expected = 2.0 * (0.5 * (a["conv3_4"] - b["conv3_4"]).abs().mean() + (a["conv5_4"] - b["conv5_4"]).abs().mean())
    torch.testing.assert_close(value, expected)
    assert loss(target, target).item() == 0.0
    value.backward()
    assert output.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.vgg.parameters())

    # The frozen VGG stays out of checkpoints, and loading a checkpoint keeps the loaded VGG.
    holder = nn.ModuleDict({"perceptual": loss, "head": nn.Linear(2, 2)})
    state = holder.state_dict()
    assert list(state) == ["head.weight", "head.bias"]
    before = loss.vgg.features[0].weight.clone()
    holder.load_state_dict(state)
    torch.testing.assert_close(loss.vgg.features[0].weight, before)
