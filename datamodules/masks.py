"""Hole masks for inpainting. Convention everywhere: **1 = hole (to fill), 0 = known pixel**.

Every generator is called as ``generator(height, width, rng)`` with a NumPy ``Generator`` and
returns a float32 tensor (1, H, W) of zeros and ones. A drawn mask is kept only when its
coverage (fraction of hole pixels) satisfies ``min_coverage < coverage <= max_coverage``
(default: not empty, at most 50%, as LaMa's evaluation masks); otherwise it is redrawn.

* :class:`FreeFormMasks`: the DeepFill v2 free-form strokes (Yu et al., 2019).
* :class:`StrokeMasks` / :class:`BoxMasks`: LaMa's random irregular strokes and rectangles
  (Suvorov et al., 2022); :class:`LamaMasks` combines them into the thin / medium / thick
  evaluation presets.
* :class:`FileMasks`: masks read from image files (e.g. the NVIDIA irregular mask set).
* :class:`MaskMixture`: one of several generators per mask (training on varied holes).

Sizes in pixels (stroke widths, lengths, boxes) are those of the papers at 256x256 and are
scaled by ``min(H, W) / reference_size``, so a 128 crop gets proportionally the same holes;
``reference_size: null`` uses them as absolute pixels.

Mask files (predict, mask folders) are thresholded: a pixel is a hole when the mean of its
R, G, B values is above 0.5 of the full range (above 127.5 for 8-bit files).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from datamodules.image_io import DEFAULT_MAX_PIXELS, ImageReadError, list_images, read_image

#: A file pixel whose mean R, G, B value (on [0, 1]) is above this is a hole.
MASK_THRESHOLD = 0.5


def binarize(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) mask image -> float32 (1, H, W), 1 where the gray value is above :data:`MASK_THRESHOLD`."""
    gray = image.float().mean(dim=0, keepdim=True) / 255.0
    return (gray > MASK_THRESHOLD).float()


def read_hole_mask(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read a mask file as float32 (1, H, W) with 1 = hole (thresholded at 0.5, see :func:`binarize`)."""
    return binarize(read_image(path, max_pixels))


def coverage(mask: torch.Tensor | np.ndarray) -> float:
    """Fraction of hole pixels."""
    return float(mask.mean())


class MaskGenerator(ABC):
    """Draws random hole masks, redrawing those outside the coverage bounds.

    Args:
        max_coverage: largest accepted fraction of hole pixels (LaMa rejects masks above 50%).
        min_coverage: masks must cover strictly more than this (0: only empty masks are rejected).
        max_tries: draws before giving up with an error (the bounds cannot be met).
    """

    def __init__(self, max_coverage: float = 0.5, min_coverage: float = 0.0, max_tries: int = 1000):
        if not 0.0 <= min_coverage < max_coverage <= 1.0:
            raise ValueError(f"need 0 <= min_coverage < max_coverage <= 1, got {min_coverage} and {max_coverage}")
        self.max_coverage, self.min_coverage, self.max_tries = max_coverage, min_coverage, max_tries

    @abstractmethod
    def draw(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """One candidate mask: a bool array (H, W), True = hole."""

    def __call__(self, height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
        for _ in range(self.max_tries):
            mask = self.draw(height, width, rng)
            if self.min_coverage < coverage(mask) <= self.max_coverage:
                return torch.from_numpy(mask.astype(np.float32)).unsqueeze(0)
        raise ValueError(
            f"{type(self).__name__}: no {width}x{height} mask with coverage in ({self.min_coverage}, "
            f"{self.max_coverage}] after {self.max_tries} draws; change the generator's sizes or max_coverage"
        )


def _scale(height: int, width: int, reference_size: int | None) -> float:
    return 1.0 if reference_size is None else min(height, width) / reference_size


def _stroke(draw: ImageDraw.ImageDraw, points: Sequence[tuple[float, float]], width: int) -> None:
    """A polyline of ``width`` pixels with discs at its vertices (round joints and ends)."""
    draw.line([tuple(map(int, p)) for p in points], fill=1, width=width)
    radius = width // 2
    for x, y in points:
        draw.ellipse((int(x) - radius, int(y) - radius, int(x) + radius, int(y) + radius), fill=1)


class FreeFormMasks(MaskGenerator):
    """DeepFill v2 free-form masks: 1-3 strokes of 4-11 vertices, each a thick polyline with round joints.

    Turning angles are ``2pi/5 +- U(0, 2pi/15)``, mirrored (``2pi - angle``) at every even vertex;
    segment lengths are ``clip(N(R, R/2), 0, 2R)`` with ``R = sqrt(H^2 + W^2) / 8``; stroke widths
    ``U(min_width, max_width)`` pixels at ``reference_size``. The mask is then flipped at random.
    """

    def __init__(
        self,
        max_strokes: int = 3,
        min_vertices: int = 4,
        max_vertices: int = 11,
        min_width: float = 12.0,
        max_width: float = 40.0,
        mean_angle: float = 2 * math.pi / 5,
        angle_range: float = 2 * math.pi / 15,
        reference_size: int | None = 256,
        max_coverage: float = 0.5,
        min_coverage: float = 0.0,
    ):
        super().__init__(max_coverage, min_coverage)
        self.max_strokes, self.min_vertices, self.max_vertices = max_strokes, min_vertices, max_vertices
        self.min_width, self.max_width = min_width, max_width
        self.mean_angle, self.angle_range = mean_angle, angle_range
        self.reference_size = reference_size

    def draw(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        scale = _scale(height, width, self.reference_size)
        radius = math.sqrt(height**2 + width**2) / 8
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for _ in range(rng.integers(1, self.max_strokes + 1)):
            vertices = int(rng.integers(self.min_vertices, self.max_vertices + 1))
            low = self.mean_angle - rng.uniform(0, self.angle_range)
            high = self.mean_angle + rng.uniform(0, self.angle_range)
            angles = [rng.uniform(low, high) for _ in range(vertices)]
            angles = [2 * math.pi - a if i % 2 == 0 else a for i, a in enumerate(angles)]
            points = [(float(rng.integers(0, width)), float(rng.integers(0, height)))]
            for angle in angles:
                step = float(np.clip(rng.normal(radius, radius / 2), 0, 2 * radius))
                x = float(np.clip(points[-1][0] + step * math.cos(angle), 0, width))
                y = float(np.clip(points[-1][1] + step * math.sin(angle), 0, height))
                points.append((x, y))
            _stroke(draw, points, max(1, int(rng.uniform(self.min_width, self.max_width) * scale)))
        mask = np.asarray(canvas, dtype=bool)
        if rng.random() < 0.5:
            mask = mask[:, ::-1]
        if rng.random() < 0.5:
            mask = mask[::-1, :]
        return np.ascontiguousarray(mask)


class StrokeMasks(MaskGenerator):
    """LaMa's random irregular masks: ``min_strokes..max_strokes`` strokes of 1-5 straight segments.

    Each segment turns by ``0.01 + randint(max_angle)`` radians (mirrored on even strokes), is
    ``10 + randint(max_length)`` long and ``5 + randint(max_width)`` wide (pixels at ``reference_size``).
    """

    def __init__(
        self,
        min_strokes: int = 0,
        max_strokes: int = 10,
        max_width: int = 20,
        max_length: int = 60,
        max_angle: int = 4,
        max_segments: int = 5,
        reference_size: int | None = 256,
        max_coverage: float = 0.5,
        min_coverage: float = 0.0,
    ):
        super().__init__(max_coverage, min_coverage)
        self.min_strokes, self.max_strokes = min_strokes, max_strokes
        self.max_width, self.max_length, self.max_angle = max_width, max_length, max_angle
        self.max_segments = max_segments
        self.reference_size = reference_size

    def draw(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        scale = _scale(height, width, self.reference_size)
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for stroke in range(rng.integers(self.min_strokes, self.max_strokes + 1)):
            x, y = float(rng.integers(width)), float(rng.integers(height))
            for _ in range(1 + rng.integers(self.max_segments)):
                angle = 0.01 + rng.integers(self.max_angle)
                if stroke % 2 == 0:
                    angle = 2 * math.pi - angle
                length = (10 + rng.integers(self.max_length)) * scale
                brush = max(1, int((5 + rng.integers(self.max_width)) * scale))
                end_x = float(np.clip(x + length * math.sin(angle), 0, width))
                end_y = float(np.clip(y + length * math.cos(angle), 0, height))
                _stroke(draw, [(x, y), (end_x, end_y)], brush)
                x, y = end_x, end_y
        return np.asarray(canvas, dtype=bool)


class BoxMasks(MaskGenerator):
    """Axis-aligned rectangles: ``min_boxes..max_boxes`` boxes with sides in ``[min_size, max_size)``
    pixels (at ``reference_size``), at least ``margin`` pixels away from the border."""

    def __init__(
        self,
        min_size: int = 30,
        max_size: int = 100,
        min_boxes: int = 1,
        max_boxes: int = 3,
        margin: int = 10,
        reference_size: int | None = 256,
        max_coverage: float = 0.5,
        min_coverage: float = 0.0,
    ):
        super().__init__(max_coverage, min_coverage)
        if not 0 < min_size < max_size:
            raise ValueError(f"need 0 < min_size < max_size, got {min_size} and {max_size}")
        self.min_size, self.max_size = min_size, max_size
        self.min_boxes, self.max_boxes, self.margin = min_boxes, max_boxes, margin
        self.reference_size = reference_size

    def draw(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        scale = _scale(height, width, self.reference_size)
        margin = int(self.margin * scale)
        largest = min(int(self.max_size * scale), height - 2 * margin, width - 2 * margin)
        smallest = max(1, min(int(self.min_size * scale), largest - 1))
        if largest <= smallest:
            raise ValueError(f"BoxMasks: a {width}x{height} image is too small for boxes of {self.min_size}+ px and margin {self.margin}")
        mask = np.zeros((height, width), dtype=bool)
        for _ in range(rng.integers(self.min_boxes, self.max_boxes + 1)):
            box_w, box_h = int(rng.integers(smallest, largest)), int(rng.integers(smallest, largest))
            left = int(rng.integers(margin, width - margin - box_w + 1))
            top = int(rng.integers(margin, height - margin - box_h + 1))
            mask[top : top + box_h, left : left + box_w] = True
        return mask


#: LaMa's evaluation presets at 256 (``configs/data_gen/random_{thin,medium,thick}_256.yaml``):
#: stroke arguments, probability of adding boxes, box arguments.
LAMA_PRESETS: dict[str, tuple[dict, float, dict]] = {
    "thin": (dict(min_strokes=4, max_strokes=50, max_width=10, max_length=40, max_angle=4), 0.0, {}),
    "medium": (
        dict(min_strokes=4, max_strokes=5, max_width=50, max_length=100, max_angle=4),
        0.3,
        dict(min_size=10, max_size=50, min_boxes=1, max_boxes=5, margin=0),
    ),
    "thick": (
        dict(min_strokes=1, max_strokes=5, max_width=100, max_length=200, max_angle=4),
        0.3,
        dict(min_size=30, max_size=150, min_boxes=1, max_boxes=3, margin=10),
    ),
}


class LamaMasks(MaskGenerator):
    """LaMa's thin / medium / thick evaluation masks: strokes, plus boxes with probability 0.3
    (medium, thick); the union is what the coverage bounds are applied to."""

    def __init__(
        self,
        preset: Literal["thin", "medium", "thick"] = "medium",
        reference_size: int | None = 256,
        max_coverage: float = 0.5,
        min_coverage: float = 0.0,
    ):
        super().__init__(max_coverage, min_coverage)
        if preset not in LAMA_PRESETS:
            raise ValueError(f"unknown LaMa mask preset {preset!r}; choose from {', '.join(LAMA_PRESETS)}")
        strokes, self.box_probability, boxes = LAMA_PRESETS[preset]
        self.preset = preset
        self.strokes = StrokeMasks(**strokes, reference_size=reference_size)
        self.boxes = BoxMasks(**boxes, reference_size=reference_size) if boxes else None

    def draw(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        mask = self.strokes.draw(height, width, rng)
        if self.boxes is not None and rng.random() < self.box_probability:
            mask = mask | self.boxes.draw(height, width, rng)
        return mask


class FileMasks(MaskGenerator):
    """Masks read from image files (thresholded at 0.5), one random file per mask, resized to the
    crop with nearest neighbour and randomly flipped; e.g. the NVIDIA irregular mask set."""

    def __init__(self, folder: str, max_coverage: float = 0.5, min_coverage: float = 0.0, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(max_coverage, min_coverage)
        self.folder, self.max_pixels = folder, max_pixels
        self.files = list_images(folder)

    def draw(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        path = self.files[int(rng.integers(len(self.files)))]
        mask = read_hole_mask(path, self.max_pixels)
        if mask.shape[1:] != (height, width):
            mask = F.interpolate(mask.unsqueeze(0), size=(height, width), mode="nearest")[0]
        mask = mask[0].numpy() > 0.5
        if rng.random() < 0.5:
            mask = mask[:, ::-1]
        if rng.random() < 0.5:
            mask = mask[::-1, :]
        return np.ascontiguousarray(mask)

    def __call__(self, height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
        try:
            return super().__call__(height, width, rng)
        except ValueError as err:
            raise ImageReadError(self.folder, str(err)) from None


class MaskMixture(MaskGenerator):
    """Each mask from one of ``generators``, picked with probability proportional to ``weights``;
    the picked generator's own coverage bounds apply, then this mixture's."""

    def __init__(
        self,
        generators: list[MaskGenerator],
        weights: list[float] | None = None,
        max_coverage: float = 0.5,
        min_coverage: float = 0.0,
    ):
        super().__init__(max_coverage, min_coverage)
        if not generators:
            raise ValueError("MaskMixture needs at least one generator")
        weights = weights or [1.0] * len(generators)
        if len(weights) != len(generators) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"MaskMixture: need one non-negative weight per generator, got {weights}")
        self.generators = generators
        self.probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)

    def draw(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        generator = self.generators[int(rng.choice(len(self.generators), p=self.probabilities))]
        return generator(height, width, rng)[0].numpy() > 0.5
