"""The shared FID: protocol details, error messages and the lifetime of the real statistics."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch

from datamodules.generation import load_digits_tensor
from lightning_modules.fid import GenerativeMetrics, to_uint8
from tiny_configs import tiny_feature_file


@pytest.fixture(scope="module")
def extractor_file(tmp_path_factory):
    path = tiny_feature_file(tmp_path_factory.mktemp("fid"), width=16)
    return str(path)


@pytest.fixture(scope="module")
def digits():
    return load_digits_tensor(16)[:400]


def fid_of(metrics: GenerativeMetrics, real: torch.Tensor, fake: torch.Tensor) -> float:
    if not metrics.has_real_features:
        metrics.update(real, real=True)
    metrics.update(fake, real=False)
    value = float(metrics.compute()["fid"])
    metrics.reset_fake()
    return value


def test_to_uint8_is_exact_at_the_ends_and_repeats_gray():
    images = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 5)
    out = to_uint8(images)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 1, 5)
    assert out[0, :, 0].tolist() == [[0, 0, 128, 255, 255]] * 3


def test_fid_is_zero_on_itself_and_grows_with_noise(extractor_file, digits):
    metrics = GenerativeMetrics(extractor_file, num_samples=400)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(digits.shape, generator=generator)
    values = [fid_of(metrics, digits, (digits + sigma * noise).clamp(-1, 1)) for sigma in (0.0, 0.1, 0.3, 0.6)]
    assert abs(values[0]) < 1e-3
    assert values[0] < values[1] < values[2] < values[3]


def test_real_features_survive_reset_and_state_dict(extractor_file, digits):
    metrics = GenerativeMetrics(extractor_file, num_samples=300, kid=True, kid_subset_size=100)
    assert metrics.remaining(real=True) == 300
    metrics.update(digits[:300], real=True)
    assert metrics.remaining(real=True) == 0
    fake = digits[300:].flip(-1)
    metrics.update(fake, real=False)
    first = metrics.compute()
    assert set(first) == {"fid", "kid_mean", "kid_std"}
    metrics.reset_fake()
    assert int(metrics.fid.real_features_num_samples) == 300 and int(metrics.fid.fake_features_num_samples) == 0
    assert metrics.has_real_features and metrics.remaining(real=True) == 0 and metrics.remaining(real=False) == 300

    state = metrics.state_dict()
    assert not any("net." in key for key in state), "the frozen extractor must not be saved"
    restored = GenerativeMetrics(extractor_file, num_samples=300, kid=True, kid_subset_size=100)
    assert not restored.has_real_features
    restored.load_state_dict(state)
    assert restored.has_real_features and restored.remaining(real=True) == 0
    restored.update(fake, real=False)
    again = restored.compute()
    assert torch.allclose(again["fid"], first["fid"])
    assert torch.allclose(again["kid_mean"], first["kid_mean"])


def test_missing_inception_weights_offline_fails_clearly(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="model.init_args.fid.init_args.weights_path"):
        GenerativeMetrics("inception")
    with pytest.raises(FileNotFoundError, match="fid.weights_path"):
        GenerativeMetrics("inception", weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="model.init_args.fid=null"):
        GenerativeMetrics(str(tmp_path / "missing-features.pt"))
