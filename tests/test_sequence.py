"""Video prediction pieces: the cell equations on hand-checked numbers, closed-loop generation that
reads no future frame, the per-frame metrics, the embedded moving digits (bounce rule, disjoint
digit splits, the same clips everywhere) and the refusals of bad clip folders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.image_io import ImageReadError
from datamodules.sequence import DIGIT_SPLIT, STEP_LENGTH, PredictClips, SequenceDataModule, bounce_trajectory
from lightning_modules.sequence import FrameMetrics, SequenceModule
from networks.convlstm import ConvGRUCell, ConvLSTMCell, EncoderForecaster


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_convlstm_cell_follows_the_equations_and_carries_its_state():
    cell = ConvLSTMCell(1, 1, kernel_size=1)
    assert cell.gates.out_channels == 4 and cell.gates.bias[1] == 1.0  # i, f, g, o; forget bias 1
    with torch.no_grad():  # gate = w_x * x + w_h * h + b, in the order i, f, g, o
        cell.gates.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0]]).view(4, 2, 1, 1))
        cell.gates.bias.copy_(torch.tensor([0.0, 0.5, 0.0, -1.0]))
    x = torch.full((1, 1, 1, 1), 0.5)
    h, c = cell(x, cell.initial_state(x))
    c1 = sigmoid(0.5) * math.tanh(1.0)  # f * 0 + i * g
    h1 = sigmoid(-0.5) * math.tanh(c1)
    assert (c.item(), h.item()) == pytest.approx((c1, h1), abs=1e-6)
    h, c = cell(x, (h, c))  # the second step reads h1 and c1
    c2 = sigmoid(h1 + 0.5) * c1 + sigmoid(0.5) * math.tanh(1.0)
    h2 = sigmoid(0.5 + h1 - 1.0) * math.tanh(c2)
    assert (c.item(), h.item()) == pytest.approx((c2, h2), abs=1e-6)

    wide = ConvLSTMCell(2, 3, kernel_size=3)
    state = wide.initial_state(torch.zeros(2, 2, 5, 6))
    h, c = wide(torch.rand(2, 2, 5, 6), state)
    assert wide.gates.out_channels == 12 and h.shape == c.shape == (2, 3, 5, 6)


def test_convgru_cell_follows_the_equations():
    cell = ConvGRUCell(1, 1, kernel_size=1)
    with torch.no_grad():  # r, z = sigmoid(w_x * x + w_h * h + b); n = tanh(a * x + u * (r h) + b_n)
        cell.gates.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]).view(2, 2, 1, 1))
        cell.gates.bias.zero_()
        cell.candidate_input.weight.fill_(3.0)
        cell.candidate_input.bias.fill_(0.1)
        cell.candidate_hidden.weight.fill_(-2.0)
    x, h0 = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.25)
    (h,) = cell(x, (h0,))
    r, z = sigmoid(0.5 + 0.5), sigmoid(-0.5 + 0.25)
    n = math.tanh(1.5 + 0.1 - 2.0 * r * 0.25)
    assert h.item() == pytest.approx((1 - z) * 0.25 + z * n, abs=1e-6)
    assert cell.initial_state(torch.zeros(2, 1, 3, 4))[0].shape == (2, 1, 3, 4)


@pytest.mark.parametrize("cell", ["convlstm", "convgru"])
def test_closed_loop_generation_reads_no_future_frame(cell):
    torch.manual_seed(0)
    net = EncoderForecaster(channels=1, patch_size=2, hidden_channels=[4, 4], kernel_size=3, cell=cell).eval()
    inputs, targets = torch.rand(2, 3, 1, 8, 8), torch.rand(2, 4, 1, 8, 8)
    closed = net(inputs, 4)
    assert closed.shape == (2, 4, 1, 8, 8) and net(inputs, 7).shape == (2, 7, 1, 8, 8)  # more frames than trained on
    never = torch.zeros(2, 3, dtype=torch.bool)
    assert torch.equal(net(inputs, 4, targets, never), closed)
    assert torch.equal(net(inputs, 4, torch.rand(2, 4, 1, 8, 8), never), closed)
    always = torch.ones(2, 3, dtype=torch.bool)  # teacher forcing reads the targets: frames 2.. change
    forced = net(inputs, 4, targets, always)
    assert torch.equal(forced[:, 0], closed[:, 0]) and not torch.allclose(forced[:, 1:], closed[:, 1:])
    with pytest.raises(ValueError, match="frames are 9x8: both sides must be multiples of the network's patch_size 2"):
        net(torch.rand(1, 3, 1, 8, 9), 2)


def test_evaluation_predictions_do_not_change_with_the_targets():
    torch.manual_seed(0)
    module = SequenceModule(EncoderForecaster(1, 2, [4], 3), input_frames=3, output_frames=2, num_grid_images=2)
    inputs = torch.rand(2, 3, 1, 8, 8)
    predicted = []
    for targets in (torch.rand(2, 2, 1, 8, 8), torch.zeros(2, 2, 1, 8, 8)):
        module._grid.rows = []
        module.evaluate_batch({"input": inputs, "target": targets}, 0, "val")
        predicted.append(torch.stack([row[1] for row in module._grid.rows]))
    assert torch.equal(*predicted)
    first, second = module.metrics["val_model"].compute(), None  # both batches counted: their targets differ
    module.metrics["val_model"].reset()
    module.evaluate_batch({"input": inputs, "target": torch.zeros(2, 2, 1, 8, 8)}, 0, "val")
    second = module.metrics["val_model"].compute()
    assert first["mse"] != second["mse"]


def test_frame_metrics_sum_over_pixels_per_frame_and_average_over_clips():
    metric = FrameMetrics(frames=2)
    target = torch.zeros(2, 2, 1, 4, 4)
    predicted = target.clone()
    predicted[:, 0, :, :2, :2] = 1.0  # frame 1: 4 pixels off by 1; frame 2 exact
    predicted[1, 1, :, 0, 0] = 0.5  # clip 2, frame 2: one pixel off by 0.5
    metric.update(predicted, target)
    values = metric.compute()
    assert values["mse_frame01"].item() == pytest.approx(4.0) and values["mae_frame01"].item() == pytest.approx(4.0)
    assert values["mse_frame02"].item() == pytest.approx(0.25 / 2) and values["mae_frame02"].item() == pytest.approx(0.5 / 2)
    assert values["mse"].item() == pytest.approx((4.0 + 0.125) / 2)
    assert values["psnr_frame01"].item() == pytest.approx(10 * math.log10(16 / 4), abs=1e-4)  # MSE per pixel 1/4
    assert values["psnr_frame02"].item() == pytest.approx((100.0 + 10 * math.log10(16 / 0.25)) / 2, abs=1e-4)  # exact: capped
    assert 0 < values["ssim_frame01"].item() < values["ssim_frame02"].item() <= 1


def test_bounce_rule_keeps_digits_inside_at_constant_speed_and_reflects_at_the_walls():
    span = 36
    corners = bounce_trajectory(np.random.default_rng(3), 400, span)
    assert corners.min() >= 0 and corners.max() <= span
    steps = np.diff(corners, axis=0)
    assert np.abs(steps).max() <= math.ceil(STEP_LENGTH * span)
    walls = 0
    for axis in range(2):
        moving = np.sign(steps[:, axis])
        for t in range(1, len(moving)):
            if moving[t] and moving[t - 1] and moving[t] != moving[t - 1]:  # turned around at corner t
                assert corners[t, axis] in (0, span), (axis, t, corners[t - 1 : t + 2, axis])
                walls += 1
    assert walls > 10


def _embedded(**overrides) -> SequenceDataModule:
    args = dict(input_frames=3, output_frames=3, frame_size=24, digit_size=10, num_train=6, num_val=4, num_test=4)
    return SequenceDataModule(**(args | overrides))


def test_embedded_clips_are_fixed_render_the_digits_and_splits_share_no_digit_image():
    assert not set(DIGIT_SPLIT["train"]) & set(DIGIT_SPLIT["val"]) and not set(DIGIT_SPLIT["train"]) & set(DIGIT_SPLIT["test"])
    data, again = _embedded(), _embedded()
    for module in (data, again):
        module.setup("fit")
        module.setup("test")
    train, val, test = data.train_set.clips, data.val_set.clips, data.test_set.clips
    assert len(train.digits) == 1500 and len(val.digits) == 297
    same = (val.digits.flatten(1)[:, None] == train.digits.flatten(1)[None]).all(-1)
    assert not same.any()  # the pools hold other images
    frames, chosen, corners = train.clip(5)
    assert frames.shape == (6, 1, 24, 24) and len(chosen) == 2 and corners.shape == (6, 2, 2)
    for t in range(6):
        for digit, (row, col) in zip(chosen, corners[t]):
            assert (frames[t, :, row : row + 10, col : col + 10] >= train.digits[digit]).all()
    assert frames.max() <= 1 and frames.min() >= 0
    sample = data.train_set[5]
    assert torch.equal(sample["input"], frames[:3]) and torch.equal(sample["target"], frames[3:])
    for split in ("train_set", "val_set", "test_set"):  # every run (and rank) sees the same clips
        assert all(torch.equal(getattr(data, split)[i]["input"], getattr(again, split)[i]["input"]) for i in range(4))
    assert not torch.equal(val[0], test[0])  # validation and test clips differ
    other = _embedded(clip_seed=1)
    other.setup("validate")
    assert not torch.equal(other.val_set[0]["input"], data.val_set[0]["input"])


def _clip(folder, frames: int, size=(8, 8), names="{}.png"):
    folder.mkdir(parents=True)
    for index in range(frames):
        Image.fromarray(np.full((size[1], size[0], 3), 20 * index, dtype=np.uint8)).save(folder / names.format(index))
    return folder


def test_clip_folders_read_frames_in_natural_order_as_gray(tmp_path):
    _clip(tmp_path / "train" / "a", 12)
    _clip(tmp_path / "val" / "x" / "b", 4)
    data = SequenceDataModule(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), input_frames=2,
                              output_frames=2)
    data.setup("validate")
    sample = data.val_set[0]
    assert sample["input"].shape == (2, 1, 8, 8)
    levels = [round(v.item() * 255) for v in torch.cat([sample["input"], sample["target"]])[:, 0, 0, 0]]
    assert levels == [0, 20, 40, 60]
    data.setup("fit")
    first = data.train_set.clips.clips[0]
    assert [p.name for p in first[:3]] + [first[-1].name] == ["0.png", "1.png", "2.png", "11.png"]  # 2 before 10


def test_bad_clip_folders_name_the_file(tmp_path):
    def setup(train):
        data = SequenceDataModule(train_dir=str(train), val_dir=str(train), input_frames=2, output_frames=2)
        data.setup("fit")
        return data

    _clip(tmp_path / "short" / "a", 4)
    _clip(tmp_path / "short" / "b", 3)
    with pytest.raises(ImageReadError, match=r"short/b: clip has 3 frame\(s\), needs at least 4 \(data.input_frames"):
        setup(tmp_path / "short")
    _clip(tmp_path / "sizes" / "a", 4)
    _clip(tmp_path / "sizes" / "b", 4)
    Image.new("RGB", (12, 8)).save(tmp_path / "sizes" / "b" / "2.png")
    with pytest.raises(ImageReadError, match=r"sizes/b/2\.png: frame is 12x8 but .*sizes/a/0\.png is 8x8"):
        setup(tmp_path / "sizes")
    _clip(tmp_path / "corrupt" / "a", 4)
    frame = tmp_path / "corrupt" / "a" / "1.png"
    frame.write_bytes(frame.read_bytes()[:-30])  # header intact, data truncated
    data = setup(tmp_path / "corrupt")
    with pytest.raises(ImageReadError, match=r"corrupt/a/1\.png: corrupt or truncated"):
        data.val_set[0]
    (tmp_path / "corrupt" / "a" / "3.png").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"corrupt/a/3\.png: not an image file"):
        setup(tmp_path / "corrupt")


def test_predict_clips_are_checked_before_anything_is_written(tmp_path):
    _clip(tmp_path / "clips" / "a", 3)
    _clip(tmp_path / "clips" / "b" / "c", 2)
    clips = PredictClips(str(tmp_path / "clips"), input_frames=2, channels=3, max_pixels=10**6)
    assert clips.names == ["a", "b/c"] and clips[0]["input"].shape == (2, 3, 8, 8) and len(clips.files) == 5
    assert PredictClips(str(tmp_path / "clips" / "a"), 2, 1, 10**6).names == ["a"]  # a clip folder itself
    data, test = _embedded(predict_split="test"), _embedded()
    data.setup("predict")
    test.setup("test")
    assert data.predict_set[3]["clip"] == "clip_00003" and torch.equal(data.predict_set[3]["input"], test.test_set[3]["input"])
    with pytest.raises(ImageReadError, match=r"b/c: clip has 2 frame\(s\), needs at least 3 \(data.input_frames\)"):
        PredictClips(str(tmp_path / "clips"), input_frames=3, channels=1, max_pixels=10**6)
    frame = tmp_path / "clips" / "a" / "1.png"
    frame.write_bytes(frame.read_bytes()[:-30])
    with pytest.raises(ImageReadError, match=r"1 of 5 input image\(s\) cannot be read, nothing was written: .*a/1\.png"):
        PredictClips(str(tmp_path / "clips"), input_frames=2, channels=1, max_pixels=10**6)


def test_moving_mnist_without_its_file_names_the_options(tmp_path):
    data = SequenceDataModule(dataset="moving_mnist", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Moving MNIST is not under data.data_root=.*set data.download=true"):
        data.setup("validate")


def test_a_non_finite_loss_stops_training_naming_the_term():
    module = SequenceModule(EncoderForecaster(1, 2, [4], 3), input_frames=2, output_frames=2, sampling_steps=10)
    with torch.no_grad():
        module.network.head.bias.fill_(float("nan"))
    batch = {"input": torch.rand(2, 2, 1, 8, 8), "target": torch.rand(2, 2, 1, 8, 8)}
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at global step 0 .*\['mse'\]"):
        module.training_step(batch, 0)
