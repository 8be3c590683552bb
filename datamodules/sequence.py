"""Image sequences for video prediction: clips of frames in [0, 1], split into inputs and targets.

Batches are ``{"input": (N, T_in, C, H, W), "target": (N, T_out, C, H, W)}`` with ``T_in =
input_frames`` and ``T_out = output_frames``; predict batches are ``{"input", "clip"}`` (the
clip's output folder name).

Sources:

* the embedded default (nothing set): moving digits made from scikit-learn's 1797 digits
  (8x8, resized to ``digit_size``), ``num_digits`` of them bouncing in a ``frame_size`` square
  with the Moving MNIST rules (:func:`bounce_trajectory`, :func:`render_clip`). Training clips
  use digit images ``0..1499``, validation and test clips the other 297 (:data:`DIGIT_SPLIT`);
  clip ``i`` of a split is drawn from a generator seeded with ``(clip_seed, split, i)``, so
  every run and every rank sees the same clips;
* ``dataset: moving_mnist``, the standard 10 -> 10 benchmark: training clips made the same way
  from the MNIST training digits (``torchvision.datasets.MNIST``), validation on the first
  ``num_val`` and test on all of the 10000 fixed sequences of ``torchvision.datasets.MovingMNIST``
  (``mnist_test_seq.npy``, 20 frames of 64x64), both under ``data_root``, fetched with
  ``download: true``;
* folders of clips (``train_dir``, ``val_dir``, ``test_dir``): every folder holding image files
  is one clip, its frames in natural name order (``2.png`` before ``10.png``), decoded by
  :mod:`datamodules.image_io`. A clip needs ``input_frames + output_frames`` frames (training
  draws a random window of that length from longer clips, evaluation takes the first); every
  frame of a split must have the same size. Clips with too few frames, frames of another size,
  non-image and corrupt files raise :class:`~datamodules.image_io.ImageReadError` naming the file.

``channels: 1`` turns colour frames to gray (ITU-R 601 luma); ``3`` repeats gray ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import rgb_to_grayscale

from datamodules.generation import load_digits_tensor
from datamodules.image_io import DEFAULT_MAX_PIXELS, ImageReadError, image_size, list_images, predict_inputs, read_image
from datamodules.loaders import SplitLoaders

#: Embedded digit images (indices into scikit-learn's digits) of each split: none in two splits.
DIGIT_SPLIT = {"train": range(0, 1500), "val": range(1500, 1797), "test": range(1500, 1797)}
#: Per-split seed offsets, so that validation and test clips differ though their digits are the same.
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
#: Moving MNIST's step per frame, as a fraction of the free range (frame_size - digit_size).
STEP_LENGTH = 0.1


def bounce_trajectory(rng: np.random.Generator, length: int, span: int) -> np.ndarray:
    """Top-left corners (length, 2) of a digit moving as in Moving MNIST (Srivastava et al., 2015):
    start uniform in [0, 1]^2, a direction uniform on the circle, ``STEP_LENGTH`` per frame; at a
    wall the position is clipped and that velocity component reversed; positions scaled by ``span``
    (the free range) and truncated to integer pixels. The first frame is one step after the start."""
    position = rng.uniform(size=2)
    theta = rng.uniform(0, 2 * np.pi)
    velocity = np.array([np.sin(theta), np.cos(theta)])
    corners = np.empty((length, 2), dtype=np.int64)
    for t in range(length):
        position = position + velocity * STEP_LENGTH
        for axis in range(2):
            if position[axis] <= 0:
                position[axis], velocity[axis] = 0.0, -velocity[axis]
            if position[axis] >= 1.0:
                position[axis], velocity[axis] = 1.0, -velocity[axis]
        corners[t] = (position * span).astype(np.int64)
    return corners


def render_clip(digits: torch.Tensor, corners: np.ndarray, frame_size: int) -> torch.Tensor:
    """Frames (T, 1, S, S) in [0, 1]: each (1, d, d) digit of ``digits`` pasted at its (T, D, 2)
    ``corners`` (row, column), overlaps combined by the maximum, as Moving MNIST does."""
    size = digits.shape[-1]
    frames = torch.zeros(corners.shape[0], 1, frame_size, frame_size)
    for t in range(corners.shape[0]):
        for digit, (row, col) in zip(digits, corners[t]):
            window = frames[t, :, row : row + size, col : col + size]
            torch.maximum(window, digit, out=window)
    return frames


class BouncingDigits(Dataset):
    """Clips of ``num_digits`` digits from ``digits`` (M, 1, d, d) in [0, 1] bouncing in a
    ``frame_size`` square: clip ``index`` is fixed by ``(seed, index)``, so every epoch, run and
    rank sees the same clips."""

    def __init__(self, digits: torch.Tensor, num_clips: int, length: int, frame_size: int, num_digits: int,
                 seed: tuple[int, ...]):
        if digits.shape[-1] > frame_size:
            raise ValueError(f"digits of {digits.shape[-1]} px do not fit in frames of {frame_size} px")
        self.digits, self.num_clips, self.length = digits, num_clips, length
        self.frame_size, self.num_digits, self.seed = frame_size, num_digits, seed

    def __len__(self) -> int:
        return self.num_clips

    def clip(self, index: int) -> tuple[torch.Tensor, list[int], np.ndarray]:
        """Frames (T, 1, S, S), the indices into ``digits`` of its digits and their (T, D, 2) corners."""
        rng = np.random.default_rng([*self.seed, index])
        chosen = rng.integers(len(self.digits), size=self.num_digits).tolist()
        span = self.frame_size - self.digits.shape[-1]
        corners = np.stack([bounce_trajectory(rng, self.length, span) for _ in chosen], axis=1)
        return render_clip(self.digits[chosen], corners, self.frame_size), chosen, corners

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.clip(index)[0]


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def find_clips(root: str | Path, files: list[Path] | None = None) -> dict[Path, list[Path]]:
    """Clip folder -> its frames in natural order, for every folder under ``root`` holding images
    (``root`` itself too); ``files`` are the images found already (default: listed here)."""
    root = Path(root)
    clips: dict[Path, list[Path]] = {}
    for file in files if files is not None else list_images(root):
        clips.setdefault(file.parent, []).append(file)
    return {folder: sorted(frames, key=_natural_key) for folder, frames in sorted(clips.items())}


def check_clips(clips: dict[Path, list[Path]], needed: int, what: str, max_pixels: int) -> None:
    """From the headers: a clip with fewer than ``needed`` frames (``what`` says which options set
    it), a frame of another size than the first one's, or a non-image file raises ImageReadError."""
    size, first = None, None
    for folder, frames in clips.items():
        if len(frames) < needed:
            raise ImageReadError(folder, f"clip has {len(frames)} frame(s), needs at least {needed} ({what})")
        for frame in frames:
            frame_size = image_size(frame, max_pixels)
            if size is None:
                size, first = frame_size, frame
            elif frame_size != size:
                raise ImageReadError(frame, f"frame is {frame_size[1]}x{frame_size[0]} but {first} is {size[1]}x{size[0]}; "
                                     "every frame of a split must have the same size")


def _frame(path: Path, channels: int, max_pixels: int) -> torch.Tensor:
    image = read_image(path, max_pixels).float()
    return (rgb_to_grayscale(image) if channels == 1 else image).div(255)


class ClipFolders(Dataset):
    """Clip folders (see the module docstring): windows of ``length`` frames, a random one per
    clip and epoch when ``random_window``, else the first; ``files`` are every frame."""

    def __init__(self, root: str | Path, length: int, channels: int, max_pixels: int, what: str, random_window: bool = False):
        clips = find_clips(root)
        check_clips(clips, length, what, max_pixels)
        self.clips = list(clips.values())
        self.length, self.channels, self.max_pixels, self.random_window = length, channels, max_pixels, random_window

    @property
    def files(self) -> list[Path]:
        return [frame for frames in self.clips for frame in frames]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        frames = self.clips[index]
        # Training windows come from torch's generator, which seed_everything and the epoch seed fix.
        start = int(torch.randint(len(frames) - self.length + 1, ())) if self.random_window else 0
        return torch.stack([_frame(path, self.channels, self.max_pixels) for path in frames[start : start + self.length]])


class MovingMNISTClips(Dataset):
    """The first ``limit`` of torchvision's 10000 Moving MNIST sequences (uint8, 20 x 1 x 64 x 64)."""

    def __init__(self, root: str, download: bool, limit: int | None):
        from torchvision.datasets import MovingMNIST

        try:
            self.data = MovingMNIST(root, download=download).data[:limit].clone()  # not a view of all 10000
        except (RuntimeError, OSError) as err:  # not there (RuntimeError), or no network (URLError is an OSError)
            raise FileNotFoundError(
                f"Moving MNIST is not under data.data_root={root!r} ({err}): set data.download=true to fetch "
                f"{MovingMNIST._URL} there, or put the file at {Path(root) / 'MovingMNIST' / 'mnist_test_seq.npy'}"
            ) from err

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index].float().div(255)


def mnist_digits(root: str, download: bool) -> torch.Tensor:
    """The 60000 MNIST training digits as (60000, 1, 28, 28) floats in [0, 1]."""
    from torchvision.datasets import MNIST

    try:
        images = MNIST(root, train=True, download=download).data
    except (RuntimeError, OSError) as err:
        raise FileNotFoundError(
            f"MNIST (the Moving MNIST training digits) is not under data.data_root={root!r} ({err}): set "
            "data.download=true to fetch it, or put torchvision's MNIST/raw files there"
        ) from err
    return images.unsqueeze(1).float().div(255)


class Windows(Dataset):
    """A clip dataset's clips as ``{"input": first input_frames, "target": the next output_frames}``,
    at ``channels`` channels."""

    def __init__(self, clips: Dataset, input_frames: int, output_frames: int, channels: int):
        self.clips, self.input_frames, self.output_frames, self.channels = clips, input_frames, output_frames, channels

    @property
    def files(self) -> list[Path]:
        return getattr(self.clips, "files", [])

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frames = self.clips[index]
        if frames.shape[1] != self.channels:
            frames = frames.expand(-1, self.channels, -1, -1)
        needed = self.input_frames + self.output_frames
        if frames.shape[0] < needed:
            raise ValueError(f"clip {index} has {frames.shape[0]} frames, needs data.input_frames + data.output_frames = {needed}")
        return {"input": frames[: self.input_frames], "target": frames[self.input_frames : needed]}


class PredictClips(Dataset):
    """Clips to continue with predict: a clip folder or a folder of clip folders, every frame decoded
    before anything is written (:func:`~datamodules.image_io.predict_inputs`). Each clip's first
    ``input_frames`` frames are its inputs; its outputs go to the folder ``clip`` (its path
    relative to ``path``, or its own name when ``path`` is the clip)."""

    def __init__(self, path: str, input_frames: int, channels: int, max_pixels: int):
        root = Path(path)
        named = predict_inputs(root, max_pixels)
        self.files = [file for file, _ in named]
        clips = find_clips(root, self.files)
        for folder, frames in clips.items():
            check_clips({folder: frames}, input_frames, "data.input_frames", max_pixels)
        self.clips = list(clips.values())
        self.names = [root.name if folder == root else folder.relative_to(root).as_posix() for folder in clips]
        self.input_frames, self.channels, self.max_pixels = input_frames, channels, max_pixels

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        frames = self.clips[index][: self.input_frames]
        return {"input": torch.stack([_frame(path, self.channels, self.max_pixels) for path in frames]),
                "clip": self.names[index]}


class NamedClips(Dataset):
    """Evaluation clips of a split for predict: their inputs, named ``clip_00000``..."""

    def __init__(self, windows: Windows):
        self.windows = windows

    @property
    def files(self) -> list[Path]:
        return self.windows.files

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        return {"input": self.windows[index]["input"], "clip": f"clip_{index:05d}"}


class SequenceDataModule(SplitLoaders, LightningDataModule):
    """Clips for video prediction: ``input_frames`` in, ``output_frames`` to predict.

    Args:
        dataset: ``moving_mnist`` (see the module docstring); ``null`` with no folders: the
            embedded moving digits.
        data_root: where Moving MNIST and MNIST are (``<data_root>/MovingMNIST``, ``<data_root>/MNIST``).
        download: fetch them into ``data_root`` when they are not there.
        train_dir / val_dir / test_dir: folders of clip folders instead (test: default val).
        predict_path: a clip folder, or a folder of clip folders, to continue with ``predict``.
        predict_split: or continue the ``val`` or ``test`` clips of the configured data.
        input_frames / output_frames: frames read and frames predicted (linked to the model).
        channels: frame channels (linked to the network).
        frame_size / digit_size / num_digits: the generated clips (embedded, Moving MNIST
            training): square side, digit side, digits per clip.
        num_train / num_val / num_test: generated clips per split (Moving MNIST: training clips
            per epoch and validation sequences; its test is all 10000).
        clip_seed: seed of the generated clips, apart from the run's seed.
        batch_size / eval_batch_size: training and evaluation batch sizes.
        max_pixels: refuse larger frames (decompression bombs).
    """

    def __init__(
        self,
        dataset: Literal["moving_mnist"] | None = None,
        data_root: str = "data",
        download: bool = False,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        predict_path: str | None = None,
        predict_split: Literal["val", "test"] | None = None,
        input_frames: int = 10,
        output_frames: int = 10,
        channels: int = 1,
        frame_size: int = 64,
        digit_size: int = 28,
        num_digits: int = 2,
        num_train: int = 10000,
        num_val: int = 512,
        num_test: int = 1000,
        clip_seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        super().__init__()
        if dataset and (train_dir or val_dir or test_dir):
            raise ValueError("set either data.dataset or data.train_dir/val_dir/test_dir, not both")
        if predict_path and predict_split:
            raise ValueError("set either data.predict_path or data.predict_split, not both")
        if input_frames < 1 or output_frames < 1:
            raise ValueError(f"data.input_frames and data.output_frames must be >= 1, got {input_frames}, {output_frames}")
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels}")
        self.save_hyperparameters()

    @property
    def length(self) -> int:
        return self.hparams.input_frames + self.hparams.output_frames

    def _generated(self, digits: torch.Tensor, split: str, num_clips: int) -> BouncingDigits:
        hp = self.hparams
        return BouncingDigits(digits, num_clips, self.length, hp.frame_size, hp.num_digits, (hp.clip_seed, SPLIT_SEEDS[split]))

    def _clips(self, split: str) -> Dataset:
        hp = self.hparams
        if hp.dataset == "moving_mnist":
            if split == "train":
                digits = mnist_digits(hp.data_root, hp.download)
                if hp.digit_size != digits.shape[-1]:
                    digits = F.interpolate(digits, size=hp.digit_size, mode="bilinear", antialias=True)
                return self._generated(digits, split, hp.num_train)
            return MovingMNISTClips(hp.data_root, hp.download, hp.num_val if split == "val" else None)
        if hp.train_dir or hp.val_dir or hp.test_dir:
            folder = {"train": hp.train_dir, "val": hp.val_dir, "test": hp.test_dir or hp.val_dir}[split]
            if not folder:
                raise ValueError(f"data.{split}_dir is not set (data.train_dir and data.val_dir are needed together)")
            return ClipFolders(folder, self.length, hp.channels, hp.max_pixels, "data.input_frames + data.output_frames",
                               random_window=split == "train")
        digits = load_digits_tensor(hp.digit_size).add(1).div(2)[DIGIT_SPLIT[split]]
        return self._generated(digits, split, {"train": hp.num_train, "val": hp.num_val, "test": hp.num_test}[split])

    def _windows(self, split: str) -> Windows:
        hp = self.hparams
        return Windows(self._clips(split), hp.input_frames, hp.output_frames, hp.channels)

    def prepare_data(self) -> None:
        hp = self.hparams
        if hp.dataset == "moving_mnist" and hp.download:  # once per node, before the ranks read it
            MovingMNISTClips(hp.data_root, True, 1)
            mnist_digits(hp.data_root, True)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit":
            self.train_set = self._windows("train")
        if stage in ("fit", "validate"):
            self.val_set = self._windows("val")
        if stage == "test":
            self.test_set = self._windows("test")
        if stage == "predict":
            if hp.predict_split:
                self.predict_set = NamedClips(self._windows(hp.predict_split))
            elif hp.predict_path:
                self.predict_set = PredictClips(hp.predict_path, hp.input_frames, hp.channels, hp.max_pixels)
            else:
                raise ValueError("predict needs clips: set --data.init_args.predict_path to a clip folder (or a folder of "
                                 "clip folders), or --data.init_args.predict_split to val or test")
