"""The feature losses: VGG16/VGG19 features with torchvision's layer numbering and weight files,
Gram / total variation on hand-computed values, the content, style and TV terms from one backbone
pass, LPIPS as a training term, the weight rules and their errors (the download is always
monkeypatched: tests never touch the network), and each task's loss unchanged by a term at weight 0."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from lightning_modules.inpainting import composite
from lightning_modules.perceptual import LPIPSLoss, PerceptualLoss, gram_matrix, total_variation
from lightning_modules.vae import VAEModule
from networks.vae import ConvVAE
from networks.vgg import VGGFeatures, vgg_layer_names

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def torchvision_features() -> dict[str, nn.Sequential]:
    """torchvision's own ``vgg16().features`` / ``vgg19().features`` with random weights (the reference
    numbering): the layers its ``vgg16()`` / ``vgg19()`` build, without their 100M-parameter classifiers."""
    torch.manual_seed(0)
    return {"vgg16": make_layers(cfgs["D"]).eval(), "vgg19": make_layers(cfgs["E"]).eval()}


@pytest.fixture(scope="module")
def weights_files(torchvision_features, tmp_path_factory) -> dict[str, str]:
    """State dicts in the layout of torchvision's ``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth`` (features part)."""
    folder = tmp_path_factory.mktemp("vgg")
    files = {}
    for arch, features in torchvision_features.items():
        files[arch] = str(folder / f"{arch}-random.pth")
        torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, files[arch])
    return files


@pytest.fixture
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)


def test_layer_names_follow_the_paper():
    names = vgg_layer_names("vgg19")
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names.index("conv5_4") == 34 and names[-1] == "pool5" and len(names) == 37
    names = vgg_layer_names("vgg16")
    # Johnson et al.'s layers at torchvision's indices of vgg16().features
    assert [names.index(layer) for layer in ("relu1_2", "relu2_2", "relu3_3", "relu4_3")] == [3, 8, 15, 22]
    assert len(names) == 31 and "conv5_4" not in names


@pytest.mark.parametrize("arch, layers", [
    ("vgg16", ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "conv5_3"]),
    ("vgg19", ["conv1_1", "relu2_2", "conv5_4", "relu5_4"]),
])
def test_local_weights_match_torchvision_at_every_named_layer(arch, layers, torchvision_features, weights_files):
    vgg = VGGFeatures(layers, arch=arch, weights_path=weights_files[arch])
    images = torch.rand(2, 3, 32, 32)
    normalized = (images - IMAGENET_MEAN) / IMAGENET_STD
    names = vgg_layer_names(arch)
    with torch.no_grad():
        out = vgg(images)
        for layer in layers:
            torch.testing.assert_close(out[layer], torchvision_features[arch][: names.index(layer) + 1](normalized))
    assert out[layers[-2 if arch == "vgg19" else -1]].min() < 0, "conv layers are taken before their ReLU"
    assert not any(p.requires_grad for p in vgg.parameters())


def test_only_the_needed_layers_are_built_and_loaded(weights_files, tmp_path):
    assert len(VGGFeatures(["relu2_1"], pretrained=False).features) == 7
    shallow = tmp_path / "first-layers.pth"
    state = torch.load(weights_files["vgg19"], weights_only=True)
    torch.save({k: v for k, v in state.items() if k.startswith(("features.0.", "features.2."))}, shallow)
    VGGFeatures(["conv1_2"], weights_path=str(shallow))
    with pytest.raises(ValueError, match="not a VGG19 state dict, missing 5.bias, 5.weight"):
        VGGFeatures(["conv2_1"], weights_path=str(shallow))
    # VGG19 and VGG16 differ from block 3 on: a VGG19 file is no VGG16 (index 17 is conv4_1 in VGG16 only).
    with pytest.raises(ValueError, match="not a VGG16 state dict, missing 17.bias"):
        VGGFeatures(["relu4_3"], arch="vgg16", weights_path=weights_files["vgg19"])


def test_without_network_or_file_the_error_names_the_option(offline):
    for arch, layers in (("vgg19", None), ("vgg16", {"relu2_2": 1.0})):
        with pytest.raises(RuntimeError, match=f"{arch.upper()} ImageNet weights could not be downloaded .*set `weights_path`"):
            PerceptualLoss(layers, arch=arch)
    with pytest.raises(FileNotFoundError, match="missing.pth: VGG19 weights file not found .*`weights_path`"):
        PerceptualLoss(weights_path="missing.pth")
    with pytest.raises(ValueError, match="unknown VGG16 layer"):
        VGGFeatures(["conv5_4"], arch="vgg16", pretrained=False)
    with pytest.raises(RuntimeError, match=r"LPIPS \(alex\) backbone ImageNet weights could not be downloaded .*`weights_path`"):
        LPIPSLoss()


def test_gram_matrix_and_total_variation_on_hand_computed_values():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2 channels of H*W=2 values
    torch.testing.assert_close(gram_matrix(features), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gram_matrix(features.bfloat16()).dtype == torch.float32
    image = torch.tensor([[0.0, 1.0], [3.0, 5.0]]).view(1, 1, 2, 2)
    # vertical |3-0|, |5-1| -> mean 3.5; horizontal |1-0|, |5-3| -> mean 1.5
    assert total_variation(image).item() == pytest.approx(5.0)
    assert total_variation(torch.full((2, 3, 4, 4), 0.3)).item() == 0


def test_content_loss_value_gradients_and_small_state_dict(weights_files):
    loss = PerceptualLoss({"conv3_4": 0.5, "conv5_4": 1.0}, weights_path=weights_files["vgg19"], weight=2.0)
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


def test_style_and_tv_terms_from_one_backbone_pass():
    torch.manual_seed(0)
    loss = PerceptualLoss({"relu2_2": 1.0}, pretrained=False, distance="mse", arch="vgg16",
                          style_layer_weights={"relu1_2": 1.0, "relu2_2": 0.5}, style_weight=10.0, tv_weight=0.1)
    image = nn.functional.interpolate(torch.rand(2, 3, 4, 4), size=24, mode="bilinear")  # smooth
    same = loss.terms(image, image)
    assert same["content"].item() == 0 and same["style"].item() == 0
    assert same["tv"].item() == pytest.approx(0.1 * total_variation(image).item())
    shuffled = image.flatten(2)[..., torch.randperm(24 * 24)].view_as(image)  # same colours, no structure
    terms = loss.terms(shuffled, image)
    with torch.no_grad():
        a, b = loss.vgg(shuffled), loss.vgg(image)
    expected = 10.0 * sum(w * ((gram_matrix(a[k]) - gram_matrix(b[k])) ** 2).mean() for k, w in loss.style_layer_weights.items())
    torch.testing.assert_close(terms["style"], expected)
    assert terms["style"] > 0 and terms["tv"] > same["tv"]

    calls = []
    loss.vgg.features[0].register_forward_hook(lambda *args: calls.append(1))
    grams = loss.style_grams(image[:1])  # one style image serves a batch
    assert len(calls) == 1 and grams["relu1_2"].shape == (1, 64, 64)
    calls.clear()
    with_grams = loss.terms(shuffled, shuffled, grams)
    assert len(calls) == 2, "one pass over the output serves content, style and tv; one over the target"
    assert with_grams["content"].item() == 0 and with_grams["style"] > 0
    calls.clear()
    style_only = PerceptualLoss({}, pretrained=False, arch="vgg16", style_layer_weights={"relu1_2": 1.0})
    style_only.vgg.features[0].register_forward_hook(lambda *args: calls.append(1))
    style_only.terms(shuffled, image, style_only.style_grams(image))
    assert len(calls) == 2 and list(style_only.terms(image, image)) == ["style"]  # style grams: 1, output: 1


def test_lpips_loss_is_torchmetrics_lpips_with_the_file_weights(tmp_path, monkeypatch):
    from torchmetrics.functional.image import lpips as tm_lpips
    from torchmetrics.image import LearnedPerceptualImagePatchSimilarity

    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet()
    path = tmp_path / "alexnet-random.pth"
    torch.save(alexnet.state_dict(), path)
    loss = LPIPSLoss("alex", weights_path=str(path), weight=2.0)
    # torchmetrics' own metric on the same backbone weights (its download replaced by them)
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda net, pretrained=False: alexnet.features)
    metric = LearnedPerceptualImagePatchSimilarity("alex", normalize=True)
    output = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.rand(2, 3, 32, 32)
    value = loss(output, target)
    torch.testing.assert_close(value, 2.0 * metric(output.detach(), target))
    value.backward()
    assert output.grad.abs().sum() > 0 and loss(target, target).item() == pytest.approx(0, abs=1e-7)
    assert list(loss.state_dict()) == []
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: not a torchvision alex state dict, missing features.0.bias"):
        LPIPSLoss("alex", weights_path=str(tmp_path / "other.pth"))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")  # no trainer to log to
def test_a_feature_term_at_weight_zero_leaves_each_task_loss_unchanged():
    """Inpainting's style term and the VAE's feature term at weight 0 give the loss without them."""
    from lightning_modules.inpainting import InpaintingModule
    from networks.inpainting import GatedUNetGenerator, PatchDiscriminator

    torch.manual_seed(0)
    image, mask = torch.rand(2, 3, 16, 16), (torch.rand(2, 1, 16, 16) > 0.7).float()
    fake = torch.rand(2, 3, 16, 16)
    content = {"relu1_2": 1.0}

    def inpainting_total(perceptual):
        torch.manual_seed(0)
        module = InpaintingModule(generator=GatedUNetGenerator(base_channels=4, num_downsamples=2, dilations=(2,)),
                                  discriminator=PatchDiscriminator(base_channels=4, num_layers=3), perceptual=perceptual)
        return sum(module.extra_generator_losses(fake, {"image": image, "mask": mask}).values())

    torch.manual_seed(1)
    without = inpainting_total(PerceptualLoss(content, pretrained=False, arch="vgg16"))
    torch.manual_seed(1)
    zero = inpainting_total(PerceptualLoss(content, pretrained=False, arch="vgg16", style_layer_weights={"relu1_2": 1.0},
                                           style_weight=0.0))
    torch.manual_seed(1)
    styled = PerceptualLoss(content, pretrained=False, arch="vgg16", style_layer_weights={"relu1_2": 1.0}, style_weight=1e6)
    assert zero.item() == without.item()
    assert inpainting_total(styled).item() > without.item()
    assert styled.terms(composite(fake, image, mask), image)["style"] > 0

    digits = torch.rand(4, 1, 16, 16) * 2 - 1

    def vae_loss(perceptual):
        torch.manual_seed(0)
        module = VAEModule(ConvVAE(1, 16, latent_dim=4, widths=(8, 16)), perceptual=perceptual)
        torch.manual_seed(2)  # the same posterior sample
        return module.training_step({"image": digits}, 0)

    without = vae_loss(None)
    zero = vae_loss(PerceptualLoss(content, pretrained=False, arch="vgg16", weight=0.0))
    on = vae_loss(PerceptualLoss(content, pretrained=False, arch="vgg16", weight=1.0))
    assert zero.item() == without.item() and on.item() > without.item()
