"""Reading and writing image files with errors that name the file and the reason.

Every DataModule and every predict command goes through these functions, so the rules are
the same everywhere:

* grayscale, palette, RGBA/LA (alpha dropped) and CMYK files are converted to RGB;
* 16-bit files (``I;16``, ``I``) are rescaled to 8 bit (``round(v / 257)``);
* corrupt, truncated and non-image files raise :class:`ImageReadError`;
* images above ``max_pixels`` (decompression bombs) raise :class:`ImageReadError`.

Label masks (:func:`read_label_mask`) keep their values as class ids, with the same checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Default limit on decoded pixels per image (about 16k x 16k); configurable per DataModule.
DEFAULT_MAX_PIXELS = 268_435_456
# The explicit ``max_pixels`` check below replaces PIL's global decompression-bomb limit, so
# that the limit is a per-DataModule setting with an error that names the option.
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(ValueError):
    """An input image that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder``; other files are skipped with a warning.

    Raises :class:`FileNotFoundError` for a missing folder and :class:`ImageReadError`
    when the folder holds no image file at all.
    """
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such file or folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if skipped:
        names = ", ".join(str(p) for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        log.warning("skipping %d non-image file(s) in %s: %s", len(skipped), folder, names)
    if not images:
        raise ImageReadError(folder, f"folder contains no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return images


def predict_inputs(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, check: Callable[[Path], object] | None = None
) -> list[tuple[Path, str]]:
    """The images of a predict run (a file, or a folder searched recursively) with their output names
    (the path relative to the folder, without suffix: ``a/b.jpg`` -> ``a/b``).

    Every input is checked here, before anything is written: decoded, or passed to ``check``
    (e.g. reading it with its mask), which raises :class:`ImageReadError`. A bad file stops the run
    with nothing half done and the error lists every bad file; two inputs that would write the same
    output name (``x.png`` and ``x.jpg``) are refused too, instead of one overwriting the other.
    """
    path = Path(path)
    root = path if path.is_dir() else path.parent
    files = list_images(path)
    named = [(file, file.relative_to(root).with_suffix("").as_posix()) for file in files]
    owners: dict[str, list[Path]] = {}
    for file, name in named:
        owners.setdefault(name, []).append(file)
    clashes = [f"{', '.join(map(str, paths))} -> {name}" for name, paths in owners.items() if len(paths) > 1]
    if clashes:
        raise ImageReadError(
            path, "inputs that differ only in their suffix would write the same output file; rename or move one of "
            f"each: {'; '.join(clashes)}"
        )
    bad = []
    for file in files:
        try:
            (check or (lambda f: read_image(f, max_pixels)))(file)
        except ImageReadError as err:
            bad.append(str(err))
    if bad:
        raise ImageReadError(path, f"{len(bad)} of {len(files)} input image(s) cannot be read, nothing was written: " + "; ".join(bad))
    return named


class PredictImages(Dataset):
    """The inputs of a predict run (a file or folder, see :func:`predict_inputs`) as ``{key: image
    in [0, 1], "output_name": "<relative name>.png"}``; ``files`` are never overwritten by predict."""

    def __init__(self, path: str, max_pixels: int, key: str):
        self.inputs = predict_inputs(path, max_pixels)
        self.files = [file for file, _ in self.inputs]
        self.max_pixels, self.key = max_pixels, key

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        path, name = self.inputs[index]
        return {self.key: read_image(path, self.max_pixels).float().div(255), "output_name": f"{name}.png"}


def _open_checked(path: Path, max_pixels: int, kind: str | None = None) -> Image.Image:
    """``path`` opened (header only), or :class:`ImageReadError` for a non-image file or one above
    ``max_pixels``; ``kind`` (e.g. "mask") names what the file holds in the messages, else "image"."""
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise
    except UnidentifiedImageError:
        reason = "not an image file, or an unsupported format"
        raise ImageReadError(path, f"{kind} is {reason}" if kind else reason) from None
    except OSError as err:
        raise ImageReadError(path, f"cannot open{' ' + kind if kind else ''} ({err})") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageReadError(
            path,
            f"{kind or 'image'} is {width}x{height} = {width * height} pixels, above the limit of {max_pixels} "
            "(possible decompression bomb; raise `max_pixels` in the data config if this is intended)",
        )
    return img


def image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) read from the header only, without decoding the pixels."""
    with _open_checked(Path(path), max_pixels) as img:
        return img.size[1], img.size[0]


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode ``path`` into a ``uint8`` tensor of shape (3, H, W)."""
    path = Path(path)
    img = _open_checked(path, max_pixels)
    try:
        img.load()
        rgb = to_rgb_array(img)
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"corrupt or truncated image data ({err})") from None
    finally:
        img.close()
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def read_label_mask(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode a label mask into an (H, W) int64 tensor of class ids.

    Accepts grayscale (``L``, 16-bit ``I;16``/``I``), bilevel (``1``) and palette (``P``) images,
    whose pixel values are the class ids, and RGB files whose three channels are equal. Colour
    masks are rejected: their colours would need a palette to become class ids.
    """
    path = Path(path)
    with _open_checked(path, max_pixels, kind="mask") as img:
        if img.mode not in ("1", "L", "P", "I;16", "I;16B", "I;16L", "I", "RGB"):
            raise ImageReadError(path, f"mask must be a single-channel index or palette image, got mode {img.mode}")
        try:
            labels = np.array(img, dtype=np.int64)
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(path, f"corrupt or truncated mask data ({err})") from None
    if labels.ndim == 3:
        if not ((labels[:, :, 0] == labels[:, :, 1]).all() and (labels[:, :, 0] == labels[:, :, 2]).all()):
            raise ImageReadError(
                path, "mask is a colour image; save it as an index (grayscale) or palette PNG holding class ids"
            )
        labels = labels[:, :, 0]
    return torch.from_numpy(labels)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to an (H, W, 3) uint8 array; 16-bit values are rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.round(values * (255.0 if values.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write a (C, H, W) uint8 tensor, or a float tensor in [0, 1], in the format of the suffix."""
    path = Path(path)
    if image.dtype != torch.uint8:
        image = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    array = image.cpu().permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
