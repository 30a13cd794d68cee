"""A one-layer bidirectional LSTM that ``torch.compile`` can trace.

``BiLSTM(n, h)`` is ``nn.LSTM(n, h, num_layers=1, batch_first=True, bidirectional=True)``:
the same parameter names and shapes (so checkpoints written with either load into the
other), the same initialisation (the same random draws in the same order) and the same
function. It exists because Dynamo refuses to trace ``nn.LSTM`` modules: each call is a
graph break, and vop-c / vop-fc make one per prompted layer, splitting the compiled
encoder into a dozen graphs (no ``fullgraph=True``, no ``torch.export``, and a tower that
falls back to eager code once Dynamo's recompile limit is reached).

Three paths, one function (``tests/test_bilstm.py`` holds each to ``nn.LSTM``):

- eager: PyTorch's fused LSTM kernel (oneDNN on the CPU, cuDNN on GPUs), as nn.LSTM;
- compiled, without gradients: the same kernel as one opaque custom operator
  (``vop::fused_bilstm``), so the whole encoder is one graph;
- compiled, with gradients: :meth:`BiLSTM.unrolled`, the recurrence written out in plain
  operations that Dynamo traces and autograd differentiates.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _fused(x: torch.Tensor, weights: list[torch.Tensor], train: bool) -> torch.Tensor:
    """PyTorch's fused LSTM kernel on the eight tensors in nn.LSTM's order."""
    h0 = x.new_zeros(2, x.shape[0], weights[1].shape[1])
    with warnings.catch_warnings():
        # cuDNN would like the eight tensors in one buffer (nn.LSTM keeps them so); it
        # copies them per call instead, a few MB against a whole image tower.
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
        out, _, _ = torch.lstm(x, (h0, h0), weights, True, 1, 0.0, train, True, True)
    return out


@torch.library.custom_op("vop::fused_bilstm", mutates_args=())
def fused_bilstm(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """The fused kernel as one opaque operator for ``torch.compile`` (inference only: no
    backward is registered; with gradients the compiled model traces :meth:`BiLSTM.unrolled`)."""
    return _fused(x, weights, False).contiguous()  # the kernel's batch-first output is a transposed view


@fused_bilstm.register_fake
def _(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    return x.new_empty(x.shape[0], x.shape[1], 2 * weights[1].shape[1])


class BiLSTM(nn.Module):
    """``[B, T, input_size]`` -> ``[B, T, 2 * hidden_size]`` (forward then backward direction)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        gates = 4 * hidden_size  # input, forget, cell, output: nn.LSTM's order
        shapes = {"weight_ih_l0": (gates, input_size), "weight_hh_l0": (gates, hidden_size),
                  "bias_ih_l0": (gates,), "bias_hh_l0": (gates,)}
        for suffix in ("", "_reverse"):
            for name in _NAMES:
                self.register_parameter(name + suffix, nn.Parameter(torch.empty(shapes[name])))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: every tensor uniform in +-1/sqrt(hidden), in registration order."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bidirectional"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected [batch, steps, {self.input_size}], got shape {tuple(x.shape)}")
        weights = list(self.parameters())  # nn.LSTM's flat-weights order
        if torch.compiler.is_compiling():
            if torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights)):
                return self.unrolled(x)
            return fused_bilstm(x, weights)
        return _fused(x, weights, self.training)

    def unrolled(self, x: torch.Tensor) -> torch.Tensor:
        """The same function written out step by step (what ``torch.compile`` traces): both
        directions' input projections are one matrix product, and each step's gate
        arithmetic fuses into one kernel. Gates and cell state stay in fp32 (or wider)
        whatever the weights' dtype, as the fused kernels keep them. (Advancing both
        directions in one batched product per step measured no faster on the CPU.)"""
        b, t, _ = x.shape
        size = self.hidden_size
        acc = torch.promote_types(x.dtype, torch.float32)
        directions = [[getattr(self, name + suffix) for name in _NAMES] for suffix in ("", "_reverse")]
        w_ih = torch.cat([d[0] for d in directions])  # [8h, in]
        bias = torch.cat([d[2].to(acc) + d[3].to(acc) for d in directions])  # [8h]
        # 2-D input: on a strided [B, T, in] view (the [CLS] rows of a token tensor) Inductor
        # would run a batched product against B expanded copies of the weight.
        projected = (F.linear(x.reshape(b * t, -1), w_ih).to(acc) + bias).view(b, t, 2, 4 * size)
        outputs = []
        for direction, (_, w_hh, _, _) in enumerate(directions):
            h = x.new_zeros(b, size)
            c = x.new_zeros(b, size, dtype=acc)
            out = [h] * t
            for step in (range(t) if direction == 0 else range(t - 1, -1, -1)):
                gates = projected[:, step, direction] + F.linear(h, w_hh).to(acc)  # [B, 4h]: i, f, g, o
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = (torch.sigmoid(o) * torch.tanh(c)).to(x.dtype)
                out[step] = h
            outputs.append(torch.stack(out, dim=1))  # [B, T, h]
        return torch.cat(outputs, dim=-1)
