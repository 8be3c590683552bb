"""pix2pix pieces without the CLI: network shapes and receptive fields, the conditional steps and
their losses, the pair readers (side by side, aligned folders, the embedded low-light pairs), the
shared crop, and every bad-input case of the data."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from datamodules import translation as data
from datamodules.image_io import ImageReadError
from datamodules.translation import (
    PIX2PIX_URL,
    AlignedPairs,
    PairDataset,
    SideBySidePairs,
    TranslationDataModule,
    amplify,
    underexpose,
)
from lightning_modules.translation import TranslationModule, signed
from networks.pix2pix import PatchGANDiscriminator, UNetGenerator


def tiny_module(cls: type[TranslationModule] = TranslationModule, **kwargs) -> TranslationModule:
    torch.manual_seed(0)
    return cls(generator=UNetGenerator(num_downs=3, ngf=4), discriminator=PatchGANDiscriminator(ndf=4, n_layers=1),
               ema_decay=None, **kwargs)


def random_image(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def save(image: torch.Tensor, path) -> None:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


# ----------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("num_downs, size", [(8, 256), (6, 64), (3, 8)])
def test_unet_bottleneck_is_one_pixel_at_the_paper_depths(num_downs, size):
    generator = UNetGenerator(num_downs=num_downs, ngf=2)
    innermost = [m for m in generator.modules() if isinstance(m, nn.Conv2d)][-1]
    seen = []
    innermost.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    output = generator(torch.randn(2, 3, size, size))
    assert output.shape == (2, 3, size, size) and output.abs().max() <= 1  # Tanh
    assert seen == [(2, 2 * min(2 ** (num_downs - 1), 8), 1, 1)]
    dropouts = [m.p for m in generator.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.5] * min(3, num_downs - 2)


def test_unet_takes_any_input_size():
    generator = UNetGenerator(num_downs=4, ngf=4).eval()
    for height, width in ((37, 50), (16, 16), (5, 70)):  # 5 < the pad: replicate instead of reflect
        assert generator(torch.randn(1, 3, height, width)).shape == (1, 3, height, width)


@pytest.mark.parametrize("n_layers, field", [(0, 1), (1, 16), (3, 70)])
def test_patchgan_receptive_field(n_layers, field):
    discriminator = PatchGANDiscriminator(in_channels=6, ndf=4, n_layers=n_layers).eval()  # eval: no batch mixing
    image = torch.randn(1, 6, 128, 128, requires_grad=True)
    logits = discriminator(image)
    logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
    support = image.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = support.any(dim=1).nonzero(), support.any(dim=0).nonzero()
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (field, field)


def test_reference_sizes_normal_init_and_norm_choice():
    generator = UNetGenerator()
    assert sum(p.numel() for p in generator.parameters()) == 54_413_955  # the reference's 54.414 M
    assert sum(p.numel() for p in PatchGANDiscriminator().parameters()) == 2_768_705  # and 2.769 M
    weight = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)][1].weight
    assert weight.std().item() == pytest.approx(0.02, rel=0.01) and weight.mean().abs() < 1e-3
    scales = torch.cat([m.weight for m in generator.modules() if isinstance(m, nn.BatchNorm2d)])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.01) and scales.std().item() == pytest.approx(0.02, rel=0.1)
    instance = PatchGANDiscriminator(norm="instance")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in instance.modules())
    assert all(m.bias is not None for m in instance.modules() if isinstance(m, nn.Conv2d))  # no affine norm: biases


# ----------------------------------------------------------------------------------- training
class StepSpy(TranslationModule):
    """Records the networks between the discriminator and the generator step, and what D saw."""

    def discriminator_step(self, optimizer, real, fake, batch):
        self.before_d = {name: p.detach().clone() for name, p in self.named_parameters()}
        self.d_inputs = self.discriminator_input(real, batch), self.discriminator_input(fake, batch)
        return super().discriminator_step(optimizer, real, fake, batch)

    def generator_step(self, *args, **kwargs):
        self.after_d = {name: p.detach().clone() for name, p in self.named_parameters()}
        return super().generator_step(*args, **kwargs)


def _batches() -> list[dict]:
    """One batch of two 16x16 pairs."""
    torch.manual_seed(1)
    return [{"input": torch.rand(2, 3, 16, 16), "target": torch.rand(2, 3, 16, 16)}]


def _fit(model: TranslationModule, batches: list[dict]) -> Trainer:
    trainer = Trainer(max_steps=2 * len(batches), accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    return trainer


def test_each_step_changes_only_its_network_and_d_judges_conditional_pairs():
    model = tiny_module(StepSpy)
    batch = _batches()[0]
    _fit(model, [batch])
    after = dict(model.named_parameters())
    for name, before in model.before_d.items():
        d_step, g_step = not torch.equal(before, model.after_d[name]), not torch.equal(model.after_d[name], after[name])
        assert (d_step, g_step) == ((True, False) if name.startswith("discriminator.") else (False, True)), name
    real_pair, fake_pair = model.d_inputs  # the hooks see the batch in [-1, 1]
    assert real_pair.shape == (2, 6, 16, 16)
    torch.testing.assert_close(real_pair[:, :3], signed(batch["input"]))  # conditioned on the input
    torch.testing.assert_close(fake_pair[:, :3], signed(batch["input"]))
    torch.testing.assert_close(real_pair[:, 3:], signed(batch["target"]))


def test_generator_terms_are_weighted_l1_and_the_gan_losses():
    model = tiny_module(l1_weight=100.0)
    target = signed(_batches()[0]["target"])
    fake = torch.zeros(2, 3, 16, 16)
    torch.testing.assert_close(model.extra_generator_losses(fake, {"target": target})["l1"], 100 * target.abs().mean())
    assert tiny_module(loss="lsgan").generator_loss(torch.tensor([0.0, 1.0])).item() == pytest.approx(0.5)


def test_a_non_finite_loss_names_the_network_and_the_term():
    model = tiny_module()
    with torch.no_grad():
        model.generator.model.model[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite discriminator loss at global step 0 .*\['adversarial'\]"):
        _fit(model, _batches())


def test_translate_keeps_the_input_size_and_range():
    model = tiny_module().eval()
    output = model.translate(torch.rand(1, 3, 13, 21))
    assert output.shape == (1, 3, 13, 21) and 0 <= output.min() and output.max() <= 1


# ----------------------------------------------------------------------------------- data
def test_side_by_side_reader_splits_a_generated_ab_file(tmp_path):
    a, b = random_image(3, 20, 30, seed=1), random_image(3, 20, 30, seed=2)
    save(torch.cat([a, b], dim=2), tmp_path / "pair.png")
    read_a, read_b = SideBySidePairs([tmp_path / "pair.png"], max_pixels=10**6)[0]
    assert torch.equal(read_a, a) and torch.equal(read_b, b)
    for direction, (source, target) in (("AtoB", (a, b)), ("BtoA", (b, a))):
        sample = PairDataset(SideBySidePairs([tmp_path / "pair.png"], 10**6), direction, size=20)[0]
        assert torch.equal(sample["input"], source.float() / 255) and torch.equal(sample["target"], target.float() / 255)


def test_the_same_random_crop_and_flip_reach_both_images(tmp_path):
    a = random_image(3, 40, 60)
    b = a[[2, 0, 1]]  # B = A with its channels permuted: any geometric difference would show
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    save(a, tmp_path / "A" / "x.png")
    save(b, tmp_path / "B" / "x.png")
    dataset = PairDataset(AlignedPairs(tmp_path, 10**6), "AtoB", size=30, crop_size=16, flip=True, repeats=16)
    torch.manual_seed(0)
    samples = [dataset[i] for i in range(16)]
    for sample in samples:
        assert sample["input"].shape == (3, 16, 16)
        torch.testing.assert_close(sample["target"], sample["input"][[2, 0, 1]], atol=0, rtol=0)
    assert len({sample["input"].sum().item() for sample in samples}) > 8, "the crops are random"


def test_aligned_folders_pair_by_stem_and_name_the_missing_partner(tmp_path):
    for side in "AB":
        (tmp_path / side / "sub").mkdir(parents=True)
        save(random_image(3, 8, 8), tmp_path / side / "sub" / "one.png")
    save(random_image(3, 8, 8), tmp_path / "A" / "two.png")
    save(random_image(3, 8, 8), tmp_path / "B" / "two.jpg")  # any suffix
    assert len(AlignedPairs(tmp_path, 10**6)) == 2
    save(random_image(3, 8, 8), tmp_path / "B" / "three.png")
    with pytest.raises(ImageReadError, match=r"B/three\.png: no partner image: expected .*A/three\.<suffix>"):
        AlignedPairs(tmp_path, 10**6)
    (tmp_path / "B" / "three.png").unlink()
    (tmp_path / "B" / "sub" / "one.png").unlink()
    with pytest.raises(ImageReadError, match=r"A/sub/one\.png: no partner image: expected .*B/sub/one\.<suffix>"):
        AlignedPairs(tmp_path, 10**6)


def test_bad_files_are_named(tmp_path):
    save(random_image(3, 8, 8), tmp_path / "a.png")
    save(random_image(3, 8, 9), tmp_path / "b.png")
    with pytest.raises(ImageReadError, match=r"b\.png: side-by-side file is 9x8: its width must be even"):
        SideBySidePairs([tmp_path / "a.png", tmp_path / "b.png"], 10**6)
    (tmp_path / "b.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=r"b\.png: not an image file"):
        SideBySidePairs([tmp_path / "a.png", tmp_path / "b.png"], 10**6)
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes()[:80])  # header intact, data truncated
    pairs = SideBySidePairs([tmp_path / "a.png", tmp_path / "b.png"], 10**6)
    with pytest.raises(ImageReadError, match=r"b\.png: corrupt or truncated image data"):
        pairs[1]

    for side, size in (("A", (8, 8)), ("B", (8, 6))):
        (tmp_path / side).mkdir()
        save(random_image(3, *size), tmp_path / side / "x.png")
    with pytest.raises(ImageReadError, match=r"B/x\.png: image is 6x8 but its partner .*A/x\.png is 8x8"):
        AlignedPairs(tmp_path, 10**6)


def test_public_datasets_download_from_the_official_server(tmp_path, monkeypatch):
    module = TranslationDataModule(dataset="facades", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"facades/train: .*data\.download=true .*datasets/facades\.tar\.gz"):
        module.setup("fit")
    calls = []

    def fake_download(url, download_root, remove_finished):
        calls.append(url)
        for split in ("train", "val"):
            (tmp_path / "facades" / split).mkdir(parents=True)
            save(random_image(3, 8, 16), tmp_path / "facades" / split / "1.jpg")

    monkeypatch.setattr(data, "download_and_extract_archive", fake_download)
    module = TranslationDataModule(dataset="facades", data_root=str(tmp_path), download=True, load_size=8, crop_size=8)
    module.prepare_data()
    module.prepare_data()  # already there: no second download
    assert calls == [PIX2PIX_URL.format(name="facades")]
    assert calls == ["http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz"]
    module.setup("test")  # no test split in this archive: val
    assert module.test_set.files == [tmp_path / "facades" / "val" / "1.jpg"]


def test_embedded_low_light_pairs_fresh_for_training_fixed_for_evaluation():
    module = TranslationDataModule(load_size=48, crop_size=32, eval_size=40, repeats=2)
    module.setup("fit")
    first, again = module.val_set[0], module.val_set[0]
    assert torch.equal(first["input"], again["input"]) and first["input"].shape[1] == 40
    torch.testing.assert_close(first["baseline"], amplify(first["input"]))
    assert first["input"].mean() < first["target"].mean() / 2  # dark
    photo = (first["target"] * 255).round().to(torch.uint8)
    assert torch.equal(underexpose(photo, torch.Generator().manual_seed(0)), (first["input"] * 255).round().to(torch.uint8))
    assert len(module.train_set) == 2 * 15 and "baseline" not in module.train_set[0]
    torch.manual_seed(0)
    one = module.train_set[0]
    torch.manual_seed(0)
    same, other = module.train_set[0], module.train_set[0]
    assert one["input"].shape == (3, 32, 32) and torch.equal(one["input"], same["input"])  # reproducible from the seed
    assert not torch.equal(same["input"], other["input"]), "every training sample draws its crop and noise"


def test_configuration_errors():
    with pytest.raises(ValueError, match="not both"):
        TranslationDataModule(dataset="facades", train_dir="x")
    with pytest.raises(ValueError, match="load_size=100 is smaller than data.crop_size=128"):
        TranslationDataModule(load_size=100, crop_size=128)
    batch = [{"input": torch.zeros(3, 4, 4)}, {"input": torch.zeros(3, 4, 5)}]
    with pytest.raises(ValueError, match="eval_batch_size=1"):
        data.collate_same_size(batch)
