"""MATLAB's ``imresize(img, scale, 'bicubic')`` in PyTorch, for making LR images like the papers do.

SR benchmarks (Set5, Set14, BSD100, Urban100, DIV2K) build their LR inputs with MATLAB's bicubic
resize. torch's ``interpolate(mode="bicubic")`` differs (a = -0.75 without antialiasing; with
``antialias=True`` it matches in the interior but truncates the kernel at the borders), and such
differences move PSNR by tenths of a dB. This module follows MATLAB's ``contributions()``:

* cubic kernel with a = -0.5 (Keys), width 4;
* when downscaling with ``antialias``, the kernel is stretched by ``1 / scale`` (``scale * k(scale * x)``);
* output pixel ``x`` (1-based) maps to input coordinate ``u = x / scale + 0.5 * (1 - 1 / scale)``;
* weights are normalized to sum to 1 per output pixel;
* out-of-range taps read the mirror image with the edge pixel repeated (``[1..n, n..1]``);
* output size is ``ceil(scale * size)``, and with an explicit ``size`` the per-dimension scale is
  ``size_out / size_in``;
* the dimension with the smaller scale is resized first (for floats the result does not depend on
  the order up to rounding; MATLAB's order also does the least work).

No clamping or rounding happens here: callers quantize if they want 8-bit images.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_KERNEL_WIDTH = 4.0


def _cubic(x: Tensor) -> Tensor:
    """Keys cubic convolution kernel with a = -0.5, as in MATLAB."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(in_length: int, out_length: int, scale: float, antialias: bool) -> tuple[Tensor, Tensor]:
    """Weights (out, taps) in float64 and 0-based input indices (out, taps) for one dimension, on the CPU."""
    kernel_width = _KERNEL_WIDTH
    stretch = scale < 1 and antialias
    if stretch:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if stretch else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric border: 1-based index i reads aux[(i - 1) mod 2n] with aux = [1..n, n..1].
    period = 2 * in_length
    wrapped = torch.remainder(indices.long() - 1, period)
    zero_based = torch.where(wrapped < in_length, wrapped, period - 1 - wrapped)
    return weights, zero_based


def _resize_dim(image: Tensor, dim: int, out_length: int, scale: float, antialias: bool) -> Tensor:
    weights, indices = _contributions(image.shape[dim], out_length, scale, antialias)
    # Cast on the CPU first: some accelerators (MPS) have no float64.
    weights, indices = weights.to(image.dtype).to(image.device), indices.to(image.device)
    weight_shape = [1] * image.ndim
    weight_shape[dim] = out_length
    # One tap at a time keeps memory at a few output-sized tensors, even for very large images.
    out = image.index_select(dim, indices[:, 0]) * weights[:, 0].reshape(weight_shape)
    for tap in range(1, indices.shape[1]):
        out.add_(image.index_select(dim, indices[:, tap]) * weights[:, tap].reshape(weight_shape))
    return out


def imresize(
    image: Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> Tensor:
    """Resize ``image`` (..., H, W), e.g. (C, H, W) or (N, C, H, W), like MATLAB bicubic ``imresize``.

    Give exactly one of ``scale`` (output ``ceil(H * scale) x ceil(W * scale)``) or ``size``
    (``(height, width)``). The computation runs in the input's floating dtype (float64 gives
    MATLAB-exact results; half precision is computed in float32 and cast back).
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of `scale` or `size`")
    if not image.is_floating_point():
        raise TypeError(f"imresize expects a floating-point image, got dtype {image.dtype}")
    if image.ndim < 2:
        raise ValueError(f"imresize expects an image of shape (..., H, W), got shape {tuple(image.shape)}")
    in_h, in_w = image.shape[-2:]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scales = (float(scale), float(scale))
    else:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"imresize size must be positive, got {tuple(size)}")
        scales = (out_h / in_h, out_w / in_w)

    compute_dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    out = image.to(compute_dtype)
    steps = [(-2, out_h, scales[0]), (-1, out_w, scales[1])]
    # MATLAB resizes the dimension with the smaller scale first (stable: height first on ties).
    for dim, length, dim_scale in sorted(steps, key=lambda step: step[2]):
        if dim_scale != 1:  # scale 1 puts all weight on the pixel itself: nothing to do
            out = _resize_dim(out, out.ndim + dim, length, dim_scale, antialias)
    return out.to(image.dtype)
