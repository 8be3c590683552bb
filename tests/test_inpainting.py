"""Inpainting pieces without the CLI: networks, bit-exact composition, losses and metrics on
hand-computed values, the fixed evaluation set, and every bad-input case of the data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from datamodules.embedded import EMBEDDED_TRAIN, SKIMAGE_DATA
from datamodules.image_io import ImageReadError, read_image, save_image
from datamodules.inpainting import InpaintingDataModule
from datamodules.masks import FreeFormMasks, LamaMasks
from lightning_modules.inpainting import InpaintingMetrics, InpaintingModule, MaskedL1, composite, masked_l1
from lightning_modules.perceptual import PerceptualLoss
from networks.inpainting import GatedConv2d, GatedUNetGenerator, PatchDiscriminator, push_pull_fill


def tiny_module(**kwargs) -> InpaintingModule:
    torch.manual_seed(0)
    return InpaintingModule(
        generator=GatedUNetGenerator(base_channels=4, num_downsamples=2, dilations=(2,)),
        discriminator=PatchDiscriminator(base_channels=4, num_layers=3),
        loss="hinge",
        **kwargs,
    )


def quantized_image(*shape: int) -> torch.Tensor:
    """A random image holding exact 8-bit values, as decoded files do."""
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1)).float() / 255


def random_mask(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.stack([FreeFormMasks(reference_size=None, min_width=4, max_width=10)(height, width, rng) for _ in range(n)])


# ----------------------------------------------------------------------------------- networks
def test_gated_conv_is_elu_times_sigmoid_gate():
    layer = GatedConv2d(1, 1, kernel_size=1)
    with torch.no_grad():
        layer.conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        layer.conv.bias.zero_()
    x = torch.tensor([-1.0, 0.5]).view(1, 1, 1, 2)
    expected = F.elu(2 * x) * torch.sigmoid(-x)
    assert torch.allclose(layer(x), expected)


def test_push_pull_fill_keeps_known_pixels_and_interpolates_smoothly():
    image, mask = quantized_image(1, 3, 24, 40), random_mask(1, 24, 40)
    filled = push_pull_fill(image, mask)
    known = ~mask.bool().expand_as(image)
    assert torch.equal(filled[known], image[known])
    flat = torch.full((1, 3, 24, 40), 0.3)
    assert torch.allclose(push_pull_fill(flat, mask), flat)
    # Dark left, bright right, a vertical band missing between them: the fill is a convex
    # combination of known values and is darker on the band's dark side.
    halves = torch.full((1, 3, 24, 40), 0.2)
    halves[..., 20:] = 0.8
    band = torch.zeros(1, 1, 24, 40)
    band[..., 12:28] = 1
    inside = push_pull_fill(halves, band)[..., 12:28]
    assert 0.2 <= inside.min() and inside.max() <= 0.8
    assert inside[..., :4].mean() < 0.5 < inside[..., -4:].mean()


@pytest.mark.parametrize("initial_fill", ["zeros", "push_pull"])
@pytest.mark.parametrize("size", [(64, 64), (37, 53)])
def test_generator_keeps_any_size_and_never_sees_the_holes(size, initial_fill):
    generator = GatedUNetGenerator(base_channels=4, num_downsamples=2, dilations=(2, 4), initial_fill=initial_fill)
    image, mask = torch.rand(2, 3, *size), random_mask(2, *size)
    output = generator(image, mask)
    assert output.shape == image.shape and 0 <= output.min() and output.max() <= 1
    scrambled = torch.where(mask.bool(), torch.rand_like(image), image)
    assert torch.equal(generator(scrambled, mask), output)
    if initial_fill == "push_pull":  # the residual starts at zero
        assert torch.equal(output, push_pull_fill(image, mask).clamp(0, 1))


def test_patch_discriminator_is_spectrally_normalized_patch_logits():
    discriminator = PatchDiscriminator(base_channels=8, num_layers=4)
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(hasattr(c, "parametrizations") for c in convs)
    assert discriminator(torch.rand(3, 4, 64, 64)).shape == (3, 64, 4, 4)


# -------------------------------------------------------------------------------- composition
def test_composition_keeps_known_pixels_bit_exact():
    image, mask = quantized_image(2, 3, 40, 44), random_mask(2, 40, 44)
    prediction = torch.rand_like(image)
    prediction[0, 0, 0, 0] = float("nan")  # whatever the network does outside the holes
    known = ~mask.bool().expand_as(image)
    output = composite(prediction, image, mask)
    assert torch.equal(output[known], image[known])
    assert torch.equal(output[~known], prediction[~known])
    module = tiny_module().eval()
    output = module.inpaint(image, mask)
    assert torch.equal(output[known], image[known])


def test_known_pixels_survive_the_saved_png(tmp_path):
    photo = read_image(SKIMAGE_DATA / "coffee.png")[:, :48, :64]
    image, mask = photo.float().unsqueeze(0) / 255, random_mask(1, 48, 64)
    output = tiny_module().eval().inpaint(image, mask)[0]
    written = read_image(save_image(output, tmp_path / "out.png"))
    known = ~mask[0].bool().expand(3, -1, -1)
    assert torch.equal(written[known], photo[known])


# -------------------------------------------------------------------------------------- losses
def test_masked_l1_on_hand_computed_values():
    target = torch.zeros(1, 2, 2, 2)
    prediction = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # holes: (1 + 4 + 1 + 0) / (2 pixels x 2 channels); valid: (2 + 3 + 0 + 0) / 4
    assert masked_l1(prediction, target, mask).item() == pytest.approx(1.5)
    assert masked_l1(prediction, target, 1 - mask).item() == pytest.approx(1.25)
    assert masked_l1(prediction, target, torch.zeros_like(mask)).item() == 0.0


def test_generator_terms_are_weighted_hole_valid_and_perceptual_losses():
    perceptual = PerceptualLoss({"relu1_2": 1.0}, pretrained=False, weight=0.5)
    module = tiny_module(hole_l1_weight=6.0, valid_l1_weight=0.5, perceptual=perceptual)
    image = torch.full((1, 3, 16, 16), 0.25)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :4, :] = 1  # a quarter of the image is a hole
    fake = torch.full_like(image, 0.75)
    fake[..., 4:, :] = 0.5  # error 0.5 in the hole, 0.25 outside
    terms = module.extra_generator_losses(fake, {"image": image, "mask": mask})
    assert terms["hole_l1"].item() == pytest.approx(6.0 * 0.5)
    assert terms["valid_l1"].item() == pytest.approx(0.5 * 0.25)
    expected = perceptual(composite(fake, image, mask), image)
    assert terms["perceptual"].item() == pytest.approx(expected.item()) and expected.item() > 0


def test_discriminator_sees_composites_and_the_mask():
    module = tiny_module()
    image, mask = torch.rand(2, 3, 16, 16), random_mask(2, 16, 16)
    fake = torch.rand_like(image)
    batch = {"image": image, "mask": mask}
    assert torch.equal(module.discriminator_input(image, batch), torch.cat([image, mask], 1))
    assert torch.equal(module.discriminator_input(fake, batch), torch.cat([composite(fake, image, mask), mask], 1))


def test_hinge_is_the_adversarial_loss():
    module = tiny_module()
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert module.discriminator_loss(real, fake).item() == pytest.approx(0.75)
    assert module.generator_loss(fake).item() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------- metrics
def test_masked_l1_metric_averages_per_image_and_skips_images_without_holes():
    target = torch.zeros(3, 3, 4, 4)
    output = torch.zeros_like(target)
    mask = torch.zeros(3, 1, 4, 4)
    mask[0, :, 0, 0] = 1
    output[0, :, 0, 0] = 0.2  # image 0: 1 hole pixel, error 0.2 -> 20
    mask[1, :, :2, :] = 1
    output[1, :, 0, :] = 0.1  # image 1: 8 hole pixels, half of them 0.1 off -> 5
    output[2] = 1.0  # image 2: no hole, ignored
    metric = MaskedL1()
    metric.update(output, target, mask)
    assert metric.compute().item() == pytest.approx((20 + 5) / 2)


def test_psnr_and_ssim_are_the_whole_image_8_bit_values():
    metrics = InpaintingMetrics()
    target = torch.full((1, 3, 16, 16), 100 / 255)
    output = target.clone()
    output[..., :8, :] = 110 / 255  # half the pixels 10 levels off: MSE 50
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    metrics.update(output, target, mask)
    values = metrics.compute()
    assert values["psnr"].item() == pytest.approx(10 * math.log10(255**2 / 50), abs=1e-6)
    assert 0 < values["ssim"].item() < 1
    assert values["masked_l1"].item() == pytest.approx(100 * 10 / 255, rel=1e-6)


# ---------------------------------------------------------------------------------------- data
def embedded(**kwargs) -> InpaintingDataModule:
    return InpaintingDataModule(FreeFormMasks(), LamaMasks("medium"), crop_size=64, eval_crops_per_image=2, **kwargs)


def test_fixed_evaluation_set_is_identical_across_runs():
    first, second = embedded(), embedded()
    first.setup("validate")
    second.setup("validate")
    assert len(first.val_set) == 6  # 3 embedded validation photos x 2 crops
    items = [first.val_set[i] for i in range(6)]
    for i, item in enumerate(items):
        again = second.val_set[i]
        assert torch.equal(item["image"], again["image"]) and torch.equal(item["mask"], again["mask"])
        assert item["image"].shape == (3, 64, 64) and 0 < item["mask"].mean() <= 0.5
    assert not torch.equal(items[0]["mask"], items[1]["mask"])
    other_seed = embedded(eval_seed=1)
    other_seed.setup("validate")
    assert not torch.equal(other_seed.val_set[0]["mask"], items[0]["mask"])


def test_training_crops_get_fresh_masks():
    data = embedded(repeats=2)
    data.setup("fit")
    assert len(data.train_set) == len(EMBEDDED_TRAIN) * 2
    torch.manual_seed(0)
    a, b = data.train_set[0], data.train_set[0]
    assert a["image"].shape == (3, 64, 64) and a["mask"].shape == (1, 64, 64)
    assert not torch.equal(a["mask"], b["mask"])


def _pair(folder, masks, name, size=(40, 48), mask_size=None, mask_value=255):
    folder.mkdir(exist_ok=True)
    masks.mkdir(exist_ok=True)
    height, width = size
    photo = np.asarray(Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB"))[:height, :width]
    Image.fromarray(photo).save(folder / f"{name}.png")
    mask_height, mask_width = mask_size or size
    mask = np.zeros((mask_height, mask_width), np.uint8)
    mask[5:15, 10:30] = mask_value
    Image.fromarray(mask).save(masks / f"{name}.png")


def predict_data(images, masks) -> InpaintingDataModule:
    data = embedded(predict_path=str(images), predict_mask_dir=str(masks))
    data.setup("predict")
    return data


def test_predict_pairs_masks_by_stem_and_thresholds_them(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _pair(images, masks, "a", mask_value=200)  # non-binary: above 0.5, a hole
    _pair(images, masks, "b", mask_value=100)  # below 0.5: no hole
    data = predict_data(images, masks)
    a, b = data.predict_set[0], data.predict_set[1]
    assert a["output_name"] == "a.png" and a["image"].shape == (3, 40, 48)
    assert a["mask"].sum().item() == 10 * 20 and b["mask"].sum().item() == 0
    assert set(data.predict_set.files) == {images / "a.png", images / "b.png", masks / "a.png", masks / "b.png"}


def test_missing_mask_names_the_image_and_the_expected_mask(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _pair(images, masks, "a")
    Image.open(images / "a.png").save(images / "lonely.png")
    with pytest.raises(ImageReadError, match=r"lonely\.png: no mask for this image: expected .*masks/lonely\.png"):
        predict_data(images, masks)


def test_mask_of_another_size_names_both_files(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _pair(images, masks, "a", size=(40, 48), mask_size=(40, 47))
    with pytest.raises(ImageReadError, match=r"masks/a\.png: mask is 47x40 but its image .*images/a\.png is 48x40"):
        predict_data(images, masks)  # every pair is checked before predict writes anything


def test_predict_needs_a_separate_mask_folder(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _pair(images, masks, "a")
    with pytest.raises(ValueError, match="must not be the image folder"):
        predict_data(images, images)
    data = embedded(predict_path=str(images))
    with pytest.raises(ValueError, match="--data.predict_mask_dir"):
        data.setup("predict")


def test_evaluation_with_a_mask_folder_and_bad_image_files(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _pair(images, masks, "a", size=(80, 96))
    data = embedded(val_dir=str(images), val_mask_dir=str(masks))
    data.setup("validate")
    item = data.val_set[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].sum() > 0  # centre crops of both
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (masks / "broken.png").write_bytes((masks / "a.png").read_bytes())
    with pytest.raises(ImageReadError, match="broken.png"):
        embedded(val_dir=str(images), val_mask_dir=str(masks)).setup("validate")
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((30, 90, 3), np.uint8)).save(small / "tiny.png")
    with pytest.raises(ImageReadError, match=r"tiny\.png: image is 90x30, smaller than the crop data.crop_size=64"):
        embedded(train_dir=str(small)).setup("fit")
