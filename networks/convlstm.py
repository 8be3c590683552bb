"""Recurrent video prediction: ConvLSTM (Shi et al., 2015) and ConvGRU cells stacked into an
encoder-forecaster.

The cells replace the matrix products of LSTM/GRU with convolutions, so their states are feature
maps and motion is learnt as local transitions. The encoder-forecaster follows Shi et al.: an
encoder stack reads the input frames, a forecaster stack of the same shape starts from its final
states and generates the future one frame at a time, a 1x1 convolution over all its hidden
states giving each frame. Frames go in and out through space-to-depth (``pixel_unshuffle`` by
``patch_size``, 64x64x1 -> 16x16x16 as in Shi et al. and PredRNN), so the recurrence runs at a
lower resolution. Unlike Shi et al.'s forecaster, which has no input, it reads the previous
frame: its own output (closed loop) or, in training, the ground truth (teacher forcing /
scheduled sampling). The output is linear, as PredRNN's (frames are in [0, 1]: clamp them for
display and metrics); a sigmoid would need large negative logits for the black background, which
leaves a haze that SSIM punishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step (Shi et al., 2015, without the peephole terms, as most implementations):

        i, f, o = sigmoid(W_{i,f,o} * [x, h] + b),  g = tanh(W_g * [x, h] + b_g)
        c' = f . c + i . g,  h' = o . tanh(c')

    ``*`` is a convolution with ``kernel_size`` (one convolution gives all four gates, in the
    order i, f, g, o), ``.`` the elementwise product. The forget-gate bias starts at 1 so that
    the cell state is kept at first (Jozefowicz et al., 2015). The state is ``(h, c)``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 5):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size states), got {kernel_size}")
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def initial_state(self, x: Tensor) -> State:
        zeros = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
        return zeros, zeros

    def forward(self, x: Tensor, state: State) -> State:
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvGRUCell(nn.Module):
    """One ConvGRU step (Ballas et al., 2016): fewer gates than the LSTM and no cell state.

        r, z = sigmoid(W_{r,z} * [x, h] + b),  n = tanh(W_n * x + U_n * (r . h) + b_n)
        h' = (1 - z) . h + z . n

    The state is ``(h,)``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 5):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size states), got {kernel_size}")
        self.hidden_channels = hidden_channels
        padding = kernel_size // 2
        self.gates = nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, kernel_size, padding=padding)
        self.candidate_input = nn.Conv2d(in_channels, hidden_channels, kernel_size, padding=padding)
        self.candidate_hidden = nn.Conv2d(hidden_channels, hidden_channels, kernel_size, padding=padding, bias=False)

    def initial_state(self, x: Tensor) -> State:
        return (x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:]),)

    def forward(self, x: Tensor, state: State) -> State:
        (h,) = state
        r, z = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate_input(x) + self.candidate_hidden(r * h))
        return ((1 - z) * h + z * n,)


CELLS = {"convlstm": ConvLSTMCell, "convgru": ConvGRUCell}


class RecurrentStack(nn.Module):
    """Cells on top of each other: each reads the hidden state of the one below at the same step."""

    def __init__(self, cell: Literal["convlstm", "convgru"], in_channels: int, hidden_channels: Sequence[int], kernel_size: int):
        super().__init__()
        widths = [in_channels, *hidden_channels]
        self.cells = nn.ModuleList(CELLS[cell](widths[n], widths[n + 1], kernel_size) for n in range(len(hidden_channels)))

    def forward(self, x: Tensor, states: list[State] | None) -> list[State]:
        new_states = []
        for n, cell in enumerate(self.cells):
            state = cell(x, cell.initial_state(x) if states is None else states[n])
            new_states.append(state)
            x = state[0]
        return new_states


class EncoderForecaster(nn.Module):
    """Reads ``T_in`` frames, generates ``steps`` frames: (N, T_in, C, H, W) -> (N, steps, C, H, W).

    Args:
        channels: frame channels (1 for Moving MNIST).
        patch_size: space-to-depth factor; frame sides must be multiples of it.
        hidden_channels: hidden widths of the stacked cells, bottom first (Shi et al.'s best
            Moving MNIST model: 128, 64, 64).
        kernel_size: convolution size of the input-to-state and state-to-state transitions.
        cell: ``convlstm`` or ``convgru``.
    """

    def __init__(
        self,
        channels: int = 1,
        patch_size: int = 4,
        hidden_channels: Sequence[int] = (64, 64),
        kernel_size: int = 5,
        cell: Literal["convlstm", "convgru"] = "convlstm",
    ):
        super().__init__()
        if not hidden_channels:
            raise ValueError("hidden_channels needs at least one layer")
        self.channels, self.patch_size = channels, patch_size
        patch_channels = channels * patch_size**2
        self.encoder = RecurrentStack(cell, patch_channels, hidden_channels, kernel_size)
        self.forecaster = RecurrentStack(cell, patch_channels, hidden_channels, kernel_size)
        self.head = nn.Conv2d(sum(hidden_channels), patch_channels, 1)

    def forward(self, frames: Tensor, steps: int, targets: Tensor | None = None, truth: Tensor | None = None) -> Tensor:
        """``steps`` frames after ``frames``. Generation feeds each output back as the next input,
        except where ``truth`` (N, steps - 1) is True: there the forecaster reads ``targets[:, k]``
        (the true frame k) instead of its own frame k. Without ``truth`` no target is read."""
        height, width = frames.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"frames are {width}x{height}: both sides must be multiples of the network's patch_size "
                             f"{self.patch_size}")
        states = None
        for t in range(frames.shape[1]):
            states = self.encoder(F.pixel_unshuffle(frames[:, t], self.patch_size), states)
        previous, outputs = frames[:, -1], []
        for k in range(steps):
            states = self.forecaster(F.pixel_unshuffle(previous, self.patch_size), states)
            hidden = torch.cat([state[0] for state in states], dim=1)
            frame = F.pixel_shuffle(self.head(hidden), self.patch_size)
            outputs.append(frame)
            previous = frame
            if truth is not None and k < steps - 1:
                previous = torch.where(truth[:, k, None, None, None], targets[:, k].to(frame.dtype), frame)
        return torch.stack(outputs, dim=1)
