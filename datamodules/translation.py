"""Paired image-to-image translation data (pix2pix): aligned (A, B) images, in [0, 1].

Batches are ``{"input": (N, 3, H, W), "target": (N, 3, H, W)}``: A -> B with ``direction: AtoB``,
B -> A with ``BtoA``; evaluation batches of the embedded default add ``baseline``, the output of a
parameter-free method for the same mapping; predict batches are ``{"input", "output_name"}``.

Sources, all decoded by :mod:`datamodules.image_io` (bad files raise an error naming them):

* the public pix2pix datasets (``dataset: facades``, ``edges2shoes``...) under
  ``data_root/<name>/{train,val,test}``, each file A and B side by side (A on the left);
  ``download: true`` fetches and unpacks the archive from the authors' server;
* any folders (``train_dir``, ``val_dir``, ``test_dir``) with ``layout: side_by_side`` (the same
  files) or ``layout: aligned`` (subfolders ``A/`` and ``B/`` with the same relative file names,
  any image suffix);
* the embedded default (nothing set): low-light enhancement of the scikit-image / scikit-learn
  photos (:data:`~datamodules.embedded.EMBEDDED_TRAIN` trains,
  :data:`~datamodules.embedded.EMBEDDED_VAL` validates and tests). A = the photo three stops
  underexposed with shot and read noise, in 8 bit (:func:`underexpose`), B = the photo; its
  baseline is the input amplified by the exposure ratio (:func:`amplify`). A dark exposure keeps
  the scene and loses what local image statistics recover (level, noise, banding), so 15 photos
  teach what carries over to unseen ones; colourization or edges -> photo would need to learn
  which colour or texture an object has (docs/translation.md).

Training resizes both images so the short side is ``load_size``, then draws the same random
``crop_size`` crop and horizontal flip for both (one ``transforms.v2`` call on the pair): the
pix2pix "random jitter and mirroring". Evaluation is deterministic: whole images resized so the
short side is ``eval_size`` (aspect kept), no flip; the embedded evaluation noise is fixed per photo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import tv_tensors
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from datamodules.embedded import EMBEDDED_TRAIN, EMBEDDED_VAL
from datamodules.image_io import DEFAULT_MAX_PIXELS, ImageReadError, PredictImages, image_size, list_images, read_image
from datamodules.loaders import make_loader

#: The pix2pix datasets on the authors' server, and where each archive is.
Pix2PixDataset = Literal["facades", "cityscapes", "maps", "edges2shoes", "edges2handbags", "night2day"]
PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"


def split_side_by_side(image: torch.Tensor, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of a side-by-side file: the left and the right half."""
    width = image.shape[2]
    if width % 2:
        raise ImageReadError(path, _odd_width(width, image.shape[1]))
    return image[..., : width // 2], image[..., width // 2 :]


def _odd_width(width: int, height: int) -> str:
    return (f"side-by-side file is {width}x{height}: its width must be even (A on the left and B on the right, "
            "each the same size)")


class SideBySidePairs:
    """Files each holding A (left half) and B (right half): the pix2pix datasets' layout."""

    def __init__(self, files: list[Path], max_pixels: int):
        self.files, self.max_pixels = files, max_pixels
        for path in files:
            height, width = image_size(path, max_pixels)
            if width % 2:
                raise ImageReadError(path, _odd_width(width, height))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.files[index]
        return split_side_by_side(read_image(path, self.max_pixels), path)


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found (layout: aligned needs the subfolders A/ and B/)")
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in list_images(folder)}


class AlignedPairs:
    """``root/A/<name>`` and ``root/B/<name>`` paired by relative path without suffix; both must
    exist and have the same size."""

    def __init__(self, root: str | Path, max_pixels: int):
        root = Path(root)
        a_files, b_files = _by_stem(root / "A"), _by_stem(root / "B")
        for files, partners, other in ((a_files, b_files, "B"), (b_files, a_files, "A")):
            for key, path in files.items():
                if key not in partners:
                    raise ImageReadError(path, f"no partner image: expected {root / other / key}.<suffix> "
                                         "(aligned folders pair files by their path without suffix)")
        self.pairs = [(a_files[key], b_files[key]) for key in sorted(a_files)]
        self.max_pixels = max_pixels
        for a, b in self.pairs:
            self._check_sizes(a, b, image_size(a, max_pixels), image_size(b, max_pixels))

    @staticmethod
    def _check_sizes(a: Path, b: Path, a_size: tuple[int, ...], b_size: tuple[int, ...]) -> None:
        if a_size != b_size:
            raise ImageReadError(b, f"image is {b_size[1]}x{b_size[0]} but its partner {a} is {a_size[1]}x{a_size[0]}; "
                                 "paired images must have the same size")

    @property
    def files(self) -> list[Path]:
        return [path for pair in self.pairs for path in pair]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a_path, b_path = self.pairs[index]
        a, b = read_image(a_path, self.max_pixels), read_image(b_path, self.max_pixels)
        self._check_sizes(a_path, b_path, tuple(a.shape[1:]), tuple(b.shape[1:]))
        return a, b


Pairs = SideBySidePairs | AlignedPairs


def _augmentation(crop_size: int | None, flip: bool) -> v2.Transform:
    """Random crop (``None``: none) and horizontal flip, drawn once per call for all its images."""
    steps = ([v2.RandomCrop(crop_size)] if crop_size is not None else []) + ([v2.RandomHorizontalFlip()] if flip else [])
    return v2.Compose(steps) if steps else v2.Identity()


#: The embedded low-light mapping: exposure ratio (3 stops under), and the noise variance
#: ``SHOT_NOISE * x + READ_NOISE ** 2`` at linear intensity ``x`` in [0, 1].
EXPOSURE_RATIO, SHOT_NOISE, READ_NOISE, GAMMA = 8.0, 0.004, 0.003, 2.2


def underexpose(photo: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uint8 photo as a dark, noisy 8-bit exposure: linear light divided by ``EXPOSURE_RATIO``,
    Gaussian shot and read noise, back to gamma 2.2 and rounded (few levels left: banding)."""
    linear = (photo.float() / 255) ** GAMMA / EXPOSURE_RATIO
    sigma = (SHOT_NOISE * linear + READ_NOISE**2).sqrt()
    noisy = linear + torch.randn(linear.shape, generator=generator) * sigma
    return (noisy.clamp(0, 1) ** (1 / GAMMA) * 255).round().to(torch.uint8)


def amplify(dark: torch.Tensor) -> torch.Tensor:
    """The low-light mapping's parameter-free baseline, on [0, 1] images: the input's linear light
    multiplied by the exposure ratio (brightened, its noise and banding with it)."""
    return (dark**GAMMA * EXPOSURE_RATIO).clamp(0, 1) ** (1 / GAMMA)


class LowLightDataset(Dataset):
    """The embedded pairs: photos resized so the short side is ``size``, B = the photo, A = its
    :func:`underexpose`. Training takes a random crop (and flip) of the photo, then underexposes
    it with fresh noise, ``repeats`` samples per photo per epoch; evaluation takes whole photos
    with noise fixed by the photo's index, and adds the :func:`amplify` baseline (A -> B only)."""

    def __init__(self, files: list[Path], size: int, direction: Literal["AtoB", "BtoA"], crop_size: int | None = None,
                 flip: bool = False, repeats: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.files, self.direction, self.repeats, self.train = files, direction, repeats, crop_size is not None
        self._photos = [v2.functional.resize(read_image(path, max_pixels), size, antialias=True) for path in files]
        self.augment = _augmentation(crop_size, flip)

    def __len__(self) -> int:
        return len(self._photos) * self.repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index %= len(self._photos)
        photo = self.augment(self._photos[index])
        # Training noise comes from torch's generator, which seed_everything and the epoch seed fix.
        dark = underexpose(photo, None if self.train else torch.Generator().manual_seed(index)).float() / 255
        photo = photo.float() / 255
        if self.direction == "BtoA":
            return {"input": photo, "target": dark}
        sample = {"input": dark, "target": photo}
        return sample if self.train else sample | {"baseline": amplify(dark)}


class PairDataset(Dataset):
    """Pairs resized so the short side is ``size``, then (training) the same random crop and flip
    for both images, ``repeats`` samples per pair per epoch; or (evaluation) the whole pair."""

    def __init__(self, pairs: Pairs, direction: Literal["AtoB", "BtoA"], size: int, crop_size: int | None = None,
                 flip: bool = False, repeats: int = 1, cache: bool = False):
        self.pairs, self.direction, self.repeats = pairs, direction, repeats
        self.resize = v2.Resize(size, antialias=True)
        self.augment = _augmentation(crop_size, flip)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    @property
    def files(self) -> list[Path]:
        return self.pairs.files

    def __len__(self) -> int:
        return len(self.pairs) * self.repeats

    def _resized(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        a, b = self.resize(*(tv_tensors.Image(image) for image in self.pairs[index]))
        if self._cache is not None:
            self._cache[index] = (a, b)
        return a, b

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a, b = self.augment(*self._resized(index % len(self.pairs)))
        source, target = (a, b) if self.direction == "AtoB" else (b, a)
        return {"input": source.as_subclass(torch.Tensor).float().div(255),
                "target": target.as_subclass(torch.Tensor).float().div(255)}


def collate_same_size(samples: list[dict]) -> dict:
    """The default collate, with an error naming the option when whole images of several sizes meet."""
    sizes = {tuple(sample["input"].shape) for sample in samples}
    if len(sizes) > 1:
        raise ValueError(f"evaluation images of different sizes {sorted(sizes)} in one batch: set data.eval_batch_size=1")
    return default_collate(samples)


class TranslationDataModule(LightningDataModule):
    """Aligned (A, B) pairs for pix2pix training and deterministic evaluation; inputs for predict.

    Args:
        dataset: a public pix2pix dataset, read from ``data_root/<dataset>`` (splits ``train``,
            ``val`` and ``test``; test falls back to val where the archive has no test split).
        data_root: the folder holding the public datasets.
        download: fetch and unpack ``dataset`` into ``data_root`` when it is not there.
        train_dir / val_dir / test_dir: folders of your own pairs instead (test: default val).
        layout: how those folders hold the pairs: ``side_by_side`` (one file, A left, B right) or
            ``aligned`` (``A/`` and ``B/`` subfolders, files paired by relative path without suffix).
        direction: ``AtoB`` translates A into B, ``BtoA`` the other way.
        predict_path: image file or folder to translate with ``predict``.
        load_size: training images are resized so the short side has this length...
        crop_size: ...then cropped at random to this square (``load_size == crop_size``: no jitter).
        flip: random horizontal flip of the training pairs.
        eval_size: short side of the validation/test images (``null``: ``crop_size``).
        repeats: random crops per training pair per epoch.
        eval_batch_size: evaluation batch size; above 1 every image must have the same size.
        cache_images: keep decoded (resized) pairs in memory (off for large datasets).
        max_pixels: refuse larger images (decompression bombs).
    """

    def __init__(
        self,
        dataset: Pix2PixDataset | None = None,
        data_root: str = "data",
        download: bool = False,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        layout: Literal["side_by_side", "aligned"] = "side_by_side",
        direction: Literal["AtoB", "BtoA"] = "AtoB",
        predict_path: str | None = None,
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        eval_size: int | None = None,
        repeats: int = 1,
        batch_size: int = 1,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        cache_images: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        super().__init__()
        if dataset and (train_dir or val_dir or test_dir):
            raise ValueError("set either data.dataset or data.train_dir/val_dir/test_dir, not both")
        if load_size < crop_size:
            raise ValueError(f"data.load_size={load_size} is smaller than data.crop_size={crop_size}")
        self.save_hyperparameters()

    @property
    def embedded(self) -> bool:
        hp = self.hparams
        return not (hp.dataset or hp.train_dir or hp.val_dir or hp.test_dir)

    # ----------------------------------------------------------------- public datasets
    @property
    def dataset_dir(self) -> Path:
        return Path(self.hparams.data_root) / self.hparams.dataset

    def prepare_data(self) -> None:
        hp = self.hparams
        if hp.dataset and hp.download and not self.dataset_dir.is_dir():
            url = PIX2PIX_URL.format(name=hp.dataset)
            try:
                download_and_extract_archive(url, download_root=hp.data_root, remove_finished=True)
            except OSError as err:  # no network (URLError), refused, or a broken archive
                raise OSError(f"cannot download {url} into data.data_root={hp.data_root!r} ({err}); fetch it elsewhere "
                              f"and unpack it there, so that {self.dataset_dir}/train exists") from err

    def _split_dir(self, split: str) -> str:
        folder = self.dataset_dir / split
        if split == "test" and not folder.is_dir() and (self.dataset_dir / "val").is_dir():
            folder = self.dataset_dir / "val"
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: the {self.hparams.dataset} {split} split is not there; set data.download=true to fetch "
                f"{PIX2PIX_URL.format(name=self.hparams.dataset)} into data.data_root={self.hparams.data_root!r}, or "
                "unpack it there yourself (docs/translation.md)"
            )
        return str(folder)

    # ----------------------------------------------------------------- datasets
    def _pairs(self, split: str) -> Pairs:
        hp = self.hparams
        if hp.dataset:
            folder, layout = self._split_dir(split), "side_by_side"
        else:
            folder = {"train": hp.train_dir, "val": hp.val_dir, "test": hp.test_dir or hp.val_dir}[split]
            if not folder:
                raise ValueError(f"data.{split}_dir is not set (data.train_dir and data.val_dir are needed together)")
            layout = hp.layout
        if layout == "aligned":
            return AlignedPairs(folder, hp.max_pixels)
        return SideBySidePairs(list_images(folder), hp.max_pixels)

    def _eval_set(self, split: str) -> Dataset:
        hp = self.hparams
        if self.embedded:
            return LowLightDataset(list(EMBEDDED_VAL), hp.eval_size or hp.crop_size, hp.direction, max_pixels=hp.max_pixels)
        return PairDataset(self._pairs(split), hp.direction, hp.eval_size or hp.crop_size, cache=hp.cache_images)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit":
            if self.embedded:
                self.train_set = LowLightDataset(list(EMBEDDED_TRAIN), hp.load_size, hp.direction, hp.crop_size, hp.flip,
                                                 hp.repeats, hp.max_pixels)
            else:
                self.train_set = PairDataset(self._pairs("train"), hp.direction, hp.load_size, hp.crop_size, hp.flip,
                                             hp.repeats, cache=hp.cache_images)
        if stage in ("fit", "validate"):
            self.val_set = self._eval_set("val")
        if stage == "test":
            self.test_set = self._eval_set("test")
        if stage == "predict":
            if not hp.predict_path:
                raise ValueError("predict needs input images: set --data.init_args.predict_path to an image file or folder")
            self.predict_set = PredictImages(hp.predict_path, hp.max_pixels, key="input")

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.train_set, hp.batch_size, shuffle=True, num_workers=hp.num_workers, drop_last=True)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        hp = self.hparams
        return make_loader(dataset, hp.eval_batch_size, num_workers=hp.num_workers, collate_fn=collate_same_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self.predict_set, 1, num_workers=self.hparams.num_workers)
