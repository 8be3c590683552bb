"""Segmentation pieces: metrics vs a hand-computed confusion matrix, aligned joint transforms,
mask checks, the VOC/Pet/folder DataModules on small on-disk copies, and the networks."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from datamodules.image_io import ImageReadError, read_label_mask
from datamodules.segmentation import (
    FolderSegmentationDataModule,
    OxfordPetSegmentationDataModule,
    SegmentationPairs,
    VOCSegmentationDataModule,
    pad_collate,
    segmentation_transforms,
)
from datamodules.segmentation_embedded import EmbeddedSegmentationDataModule, make_digit_scenes
from lightning_modules.segmentation import (
    PALETTE,
    SegmentationModule,
    dice_loss,
    palette_image,
    segmentation_metrics,
)
from networks.segmentation import TorchvisionSegmentation
from networks.unet import UNet


def save_rgb(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def save_labels(path: Path, labels: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))
    if palette:
        image.putpalette(PALETTE.numpy().tobytes())
    image.save(path)
    return path


# --- metrics -----------------------------------------------------------------------------


def test_miou_matches_hand_computed_confusion_matrix_with_ignore_index():
    target = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 255, 255]])
    preds = torch.tensor([[0, 0, 1, 1, 1, 2, 0, 1, 2, 0]])
    # Confusion matrix (rows = target, cols = prediction), the two 255 pixels left out:
    #        p0 p1 p2
    #   t0 [ 2, 1, 0 ]
    #   t1 [ 0, 2, 0 ]
    #   t2 [ 1, 1, 1 ]
    # IoU_c = TP / (row + col - TP): 2/(3+3-2) = 1/2, 2/(2+4-2) = 1/2, 1/(3+1-1) = 1/3.
    metrics = segmentation_metrics(num_classes=3, ignore_index=255, prefix="val/")
    metrics.update(preds[:, :5], target[:, :5])  # two updates: the state must accumulate
    metrics.update(preds[:, 5:], target[:, 5:])
    values = metrics.compute()
    torch.testing.assert_close(values["val/iou"], torch.tensor([1 / 2, 1 / 2, 1 / 3]))
    torch.testing.assert_close(values["val/miou"], torch.tensor((1 / 2 + 1 / 2 + 1 / 3) / 3))
    torch.testing.assert_close(values["val/pixel_acc"], torch.tensor(5 / 8))


def test_miou_skips_classes_absent_from_targets_and_predictions():
    metrics = segmentation_metrics(num_classes=4, ignore_index=255, prefix="test/")
    metrics.update(torch.tensor([[0, 1, 1, 3]]), torch.tensor([[0, 1, 1, 255]]))
    values = metrics.compute()
    # Class 2 never occurs, class 3 only where the target is ignored: both are left out.
    torch.testing.assert_close(values["test/miou"], torch.tensor(1.0))


def test_dice_loss_is_zero_for_perfect_predictions_and_ignores_ignored_pixels():
    target = torch.tensor([[[0, 1], [2, 255]]])
    perfect = torch.nn.functional.one_hot(target.clamp(max=2), 3).movedim(-1, 1).float() * 100
    perfect[0, :, 1, 1] = torch.tensor([0.0, 0.0, 100.0])  # a wrong class under the ignored pixel
    assert dice_loss(perfect, target, ignore_index=255).item() < 1e-3
    assert dice_loss(-perfect, target, ignore_index=255).item() > 0.5


# --- joint transforms --------------------------------------------------------------------


def crafted_pair(height: int = 40, width: int = 56, block: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose red channel encodes the mask: red = 20 * label + 10, labels in asymmetric blocks."""
    rows = (torch.arange(height)[:, None] // block).expand(height, width)
    cols = (torch.arange(width)[None, :] // block).expand(height, width)
    labels = (rows * 3 + cols * 5 + (rows * cols) % 4) % 7
    image = torch.stack([20 * labels + 10, cols * 30, rows * 40]).to(torch.uint8)
    return image, labels.to(torch.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_flips_and_crops_move_image_and_mask_together(seed):
    image, labels = crafted_pair()
    transform = segmentation_transforms(
        train=True, base_size=None, crop_size=48, scale_range=(1.0, 1.0), hflip=True, ignore_index=255
    )
    torch.manual_seed(seed)
    sample = transform({"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(labels)})
    out_image, out_mask = sample["image"], sample["mask"]
    assert type(out_image) is torch.Tensor and out_image.dtype == torch.float32 and out_mask.dtype == torch.int64
    assert out_image.shape == (3, 48, 48) and out_mask.shape == (48, 48)
    red = (out_image[0] * 255).round().long()
    padded = out_mask == 255  # the crop is taller than the image: padding rows get ignore_index
    assert padded.any() and (red[padded] == 0).all()
    assert torch.equal((red[~padded] - 10) // 20, out_mask[~padded])


def test_random_resize_uses_nearest_for_masks_and_keeps_alignment():
    image, labels = crafted_pair(96, 96, block=16)
    transform = segmentation_transforms(
        train=True, base_size=96, crop_size=None, scale_range=(0.6, 1.7), hflip=True, ignore_index=255
    )
    for seed in range(4):
        torch.manual_seed(seed)
        sample = transform({"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(labels)})
        mask = sample["mask"]
        assert set(mask.unique().tolist()) <= set(range(7)), "interpolated mask values"
        red = sample["image"][0] * 255
        around = torch.nn.functional.unfold(red[None, None], 3, padding=1).view(9, *red.shape)[:, 1:-1, 1:-1]
        interior = (around.amax(0) - around.amin(0)) < 1.0  # inside a block, away from blurred edges
        assert interior.float().mean() > 0.3
        decoded = ((red[1:-1, 1:-1] - 10) / 20).round().long()
        assert torch.equal(decoded[interior], mask[1:-1, 1:-1][interior])
    val = segmentation_transforms(False, 32, None, (0.5, 2.0), True, 255)
    sample = val({"image": tv_tensors.Image(image[:, :64, :48]), "mask": tv_tensors.Mask(labels[:64, :48])})
    assert sample["image"].shape == (3, 42, 32) and sample["mask"].shape == (42, 32)


def test_pad_collate_pads_masks_with_ignore_index():
    samples = [
        {"image": torch.ones(3, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.int64), "path": "a"},
        {"image": torch.ones(3, 5, 3), "mask": torch.ones(5, 3, dtype=torch.int64), "path": "b"},
    ]
    batch = pad_collate(samples, ignore_index=255)
    assert batch["image"].shape == (2, 3, 5, 6) and batch["mask"].shape == (2, 5, 6)
    assert (batch["mask"][0, 4] == 255).all() and (batch["mask"][1, :, 3:] == 255).all()
    assert (batch["image"][1, :, :, 3:] == 0).all() and batch["path"] == ["a", "b"]


# --- masks and bad input -----------------------------------------------------------------


def pairs_dataset(tmp_path: Path, labels: np.ndarray, image_shape=(6, 8), **kwargs) -> SegmentationPairs:
    image = save_rgb(tmp_path / "img" / "a.png", np.full((*image_shape, 3), 128))
    mask = save_labels(tmp_path / "mask" / "a.png", labels)
    transform = segmentation_transforms(False, None, None, (1.0, 1.0), False, 255)
    return SegmentationPairs([image], [mask], 3, transform, **kwargs)


def test_mask_with_labels_outside_the_class_range_names_file_and_labels(tmp_path):
    labels = np.zeros((6, 8))
    labels[0, :3] = [7, 5, 255]
    with pytest.raises(ImageReadError, match=r"mask[/\\]a\.png: labels \[5, 7\] are outside the class range 0\.\.2"):
        pairs_dataset(tmp_path, labels)[0]


def test_mask_size_mismatch_names_both_files(tmp_path):
    with pytest.raises(ImageReadError, match=r"mask[/\\]a\.png: mask is 8x5 but its image .*img[/\\]a\.png is 8x6"):
        pairs_dataset(tmp_path, np.zeros((5, 8)))[0]


def test_missing_mask_names_the_image_and_the_expected_mask(tmp_path):
    for name in ("a", "b"):
        save_rgb(tmp_path / "img" / f"{name}.jpg", np.zeros((6, 8, 3)))
    save_labels(tmp_path / "mask" / "a.png", np.zeros((6, 8)))
    data = FolderSegmentationDataModule(["bg", "fg"], str(tmp_path / "img"), str(tmp_path / "mask"), num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"no mask for 1 image\(s\): .*img[/\\]b\.jpg \(expected .*mask[/\\]b\.png\)"):
        data.setup("fit")


def test_colour_and_corrupt_masks_are_refused(tmp_path):
    colour = save_rgb(tmp_path / "colour.png", np.stack([np.zeros((4, 4)), np.ones((4, 4)), np.zeros((4, 4))], -1))
    with pytest.raises(ImageReadError, match="colour.png: mask is a colour image"):
        read_label_mask(colour)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="broken.png: mask is not an image file"):
        read_label_mask(broken)
    gray_as_rgb = save_rgb(tmp_path / "gray.png", np.full((4, 4, 3), 2))
    assert read_label_mask(gray_as_rgb).unique().tolist() == [2]


def test_label_map_turns_0_255_masks_into_class_ids(tmp_path):
    labels = np.zeros((6, 8))
    labels[:, 4:] = 255
    sample = pairs_dataset(tmp_path, labels, label_map={0: 0, 255: 1}, ignore_index=254)[0]
    assert sample["mask"][:, :4].eq(0).all() and sample["mask"][:, 4:].eq(1).all()
    labels[0, 0] = 3
    with pytest.raises(ImageReadError, match=r"labels \[3\] are outside the label_map keys \[0, 255\]"):
        pairs_dataset(tmp_path, labels, label_map={0: 0, 255: 1}, ignore_index=254)[0]


# --- DataModules on small on-disk copies of the real layouts --------------------------------


def test_folder_datamodule_splits_and_pads(tmp_path):
    for i in range(10):
        h, w = 20 + i, 30 - i
        save_rgb(tmp_path / "images" / "sub" / f"{i:02d}.jpg", np.random.default_rng(i).integers(0, 255, (h, w, 3)))
        save_labels(tmp_path / "masks" / "sub" / f"{i:02d}_label.png", np.full((h, w), i % 3), palette=i % 2 == 0)
    data = FolderSegmentationDataModule(
        ["a", "b", "c"], str(tmp_path / "images"), str(tmp_path / "masks"), val_fraction=0.3, mask_suffix="_label.png",
        batch_size=4, num_workers=0, crop_size=16, hflip=True,
    )
    data.setup("fit")
    train, val = data.datasets["train"], data.datasets["val"]
    assert len(train) == 7 and len(val) == 3 and not set(train.files) & set(val.files)
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape[0] == 3 and batch["mask"].shape == batch["image"][:, 0].shape
    for mask, path in zip(batch["mask"], batch["path"]):
        stored = int(Path(path).stem) % 3
        assert set(mask.unique().tolist()) <= {stored, 255}
    assert next(iter(data.train_dataloader()))["image"].shape == (4, 3, 16, 16)


def test_oxford_pet_trimaps_become_binary_or_three_classes(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    trimap = np.full((12, 16), 2)
    trimap[3:9, 4:12] = 3
    trimap[4:8, 5:11] = 1
    for name in ("Abyssinian_1", "beagle_2", "beagle_3"):
        save_rgb(base / "images" / f"{name}.jpg", np.full((12, 16, 3), 100))
        save_labels(base / "annotations" / "trimaps" / f"{name}.png", trimap)
    (base / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbeagle_2 2 2 1\n")
    (base / "annotations" / "test.txt").write_text("beagle_3 2 2 1\n")
    for mode, expected in (("binary", {0: 2, 1: 1, 1 + 2: 1}), ("trimap", {0: 2, 1: 1, 3: 2})):
        data = OxfordPetSegmentationDataModule(str(tmp_path), mode=mode, download=False, val_fraction=0.5, num_workers=0)
        data.setup("test")
        mask = data.datasets["test"][0]["mask"]
        for stored, class_id in expected.items():
            assert (mask[torch.from_numpy(trimap) == stored] == class_id).all()
        assert data.class_names == (["background", "pet"] if mode == "binary" else ["background", "pet", "border"])
    data.setup("fit")
    assert len(data.datasets["train"]) == 1 and len(data.datasets["val"]) == 1


def test_oxford_pet_missing_download_says_what_to_set(tmp_path):
    data = OxfordPetSegmentationDataModule(str(tmp_path), download=False, num_workers=0)
    with pytest.raises(RuntimeError, match="Oxford-IIIT Pet not found .*--data.download=true"):
        data.setup("fit")


def test_voc_palette_masks_with_border_ignore(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    labels = np.zeros((10, 12))
    labels[2:8, 3:9] = 15  # person
    labels[2, 3:9] = 255  # the VOC border
    for split, name in (("train", "2007_000032"), ("val", "2007_000033")):
        save_rgb(voc / "JPEGImages" / f"{name}.jpg", np.full((10, 12, 3), 90))
        save_labels(voc / "SegmentationClass" / f"{name}.png", labels, palette=True)
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(f"{name}\n")
    data = VOCSegmentationDataModule(str(tmp_path), download=False, num_workers=0)
    data.setup("fit")
    assert data.num_classes == 21 and data.class_names[15] == "person"
    mask = data.datasets["val"][0]["mask"]
    assert torch.equal(mask, torch.from_numpy(labels).long())


def test_embedded_scenes_are_deterministic_and_cover_every_class():
    images, masks = make_digit_scenes("val", 32, 0, 64, tuple(range(10)), (1, 3), (20, 32))
    again, masks_again = make_digit_scenes.__wrapped__("val", 32, 0, 64, tuple(range(10)), (1, 3), (20, 32))
    assert torch.equal(images, again) and torch.equal(masks, masks_again)
    assert images.shape == (32, 3, 64, 64) and images.dtype == torch.uint8
    assert set(masks.unique().tolist()) == set(range(11))
    train, _ = make_digit_scenes("train", 32, 0, 64, tuple(range(10)), (1, 3), (20, 32))
    assert not torch.equal(train, images)
    data = EmbeddedSegmentationDataModule(digits=[3, 7], num_val=8, num_workers=0)
    assert data.class_names == ["background", "digit_3", "digit_7"]
    with pytest.raises(ValueError, match="digits must be distinct values in 0..9"):
        EmbeddedSegmentationDataModule(digits=[3, 3])


# --- networks and the module -------------------------------------------------------------


@pytest.mark.parametrize("upsample", ["bilinear", "transpose"])
def test_unet_any_input_size(upsample):
    net = UNet(num_classes=5, widths=(4, 8, 16), upsample=upsample)
    assert net(torch.rand(2, 3, 37, 50)).shape == (2, 5, 37, 50)


def test_torchvision_models_random_init_and_aux_loss():
    net = TorchvisionSegmentation("fcn_resnet50", num_classes=4, pretrained="random", aux_loss=True)
    module = SegmentationModule(net, num_classes=4, aux_weight=0.5)
    images, target = torch.rand(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    outputs = module.net(images)
    assert outputs["out"].shape == outputs["aux"].shape == (2, 4, 32, 32)
    terms = module.loss_terms(outputs, target)
    expected_aux = 0.5 * torch.nn.functional.cross_entropy(outputs["aux"], target)
    torch.testing.assert_close(terms["aux"], expected_aux)
    with pytest.raises(ValueError, match="no auxiliary head"):
        TorchvisionSegmentation("lraspp_mobilenet_v3_large", num_classes=4, pretrained="random", aux_loss=True)


def test_pretrained_weights_from_local_files(tmp_path):
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    backbone = mobilenet_v3_large()
    torch.save(backbone.state_dict(), tmp_path / "mobilenet.pth")
    net = TorchvisionSegmentation(
        "lraspp_mobilenet_v3_large", 3, pretrained="imagenet", weights_path=str(tmp_path / "mobilenet.pth"), aux_loss=False
    )
    torch.testing.assert_close(net.model.backbone["16"][0].weight, backbone.features[16][0].weight)

    full = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    torch.save({"model": full.state_dict()}, tmp_path / "full.pth")  # torchvision reference checkpoint layout
    net = TorchvisionSegmentation(
        "lraspp_mobilenet_v3_large", 3, pretrained="coco_voc", weights_path=str(tmp_path / "full.pth"), aux_loss=False
    )
    torch.testing.assert_close(net.model.classifier.cbr[0].weight, full.classifier.cbr[0].weight)
    assert net.model.classifier.high_classifier.weight.shape[0] == 3

    with pytest.raises(ValueError, match="the weights do not fit lraspp_mobilenet_v3_large backbone"):
        TorchvisionSegmentation(
            "lraspp_mobilenet_v3_large", 3, pretrained="imagenet", weights_path=str(tmp_path / "full.pth"), aux_loss=False
        )
    with pytest.raises(FileNotFoundError, match="missing.pth: weights file not found"):
        TorchvisionSegmentation("lraspp_mobilenet_v3_large", 3, "imagenet", str(tmp_path / "missing.pth"), aux_loss=False)


def test_failed_download_names_the_config_option(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="could not download .*weights_path.*pretrained: random"):
        TorchvisionSegmentation("lraspp_mobilenet_v3_large", 3, pretrained="imagenet", aux_loss=False)


def test_palette_masks_store_class_ids():
    labels = torch.tensor([[0, 1, 2], [20, 255, 3]])
    image = palette_image(labels)
    assert image.mode == "P"
    assert torch.equal(torch.from_numpy(np.array(image)).long(), labels)
    assert image.getpalette()[3:6] == PALETTE[1].tolist()
