"""Tiled inference: super-resolve large images with memory bounded by the tile size, without seams.

The LR image is cut into a grid of ``tile`` x ``tile`` cells. Each cell is run through the model
together with up to ``overlap`` pixels of surrounding context on every side (less at the image
border), and only the output of the cell itself is kept. Seams stay invisible as long as
``overlap`` covers most of the model's receptive field; the model never sees an input larger than
``tile + 2 * overlap`` on a side.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def tiled_forward(model: Callable[[Tensor], Tensor], image: Tensor, scale: int, tile: int, overlap: int) -> Tensor:
    """Apply ``model`` (LR (N, C, H, W) -> SR (N, C', H*scale, W*scale)) tile by tile.

    ``tile <= 0`` runs the whole image at once. Images smaller than a tile are one tile; sizes
    that are not multiples of ``tile`` get narrower last rows/columns of tiles.
    """
    if overlap < 0:
        raise ValueError(f"tile overlap must be >= 0, got {overlap}")
    height, width = image.shape[-2:]
    if tile <= 0 or (height <= tile and width <= tile):
        return model(image)

    output: Tensor | None = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            in_top, in_left = max(top - overlap, 0), max(left - overlap, 0)
            in_bottom, in_right = min(bottom + overlap, height), min(right + overlap, width)
            result = model(image[..., in_top:in_bottom, in_left:in_right])
            expected = ((in_bottom - in_top) * scale, (in_right - in_left) * scale)
            if tuple(result.shape[-2:]) != expected:
                raise ValueError(
                    f"model output {tuple(result.shape[-2:])} for a {in_bottom - in_top}x{in_right - in_left} tile "
                    f"is not the input size times scale={scale}"
                )
            if output is None:
                output = torch.empty(
                    (*result.shape[:-2], height * scale, width * scale), dtype=result.dtype, device=result.device
                )
            # Keep only the cell's own pixels: drop the context rows/columns of the result.
            y0, x0 = (top - in_top) * scale, (left - in_left) * scale
            output[..., top * scale : bottom * scale, left * scale : right * scale] = result[
                ..., y0 : y0 + (bottom - top) * scale, x0 : x0 + (right - left) * scale
            ]
    return output
