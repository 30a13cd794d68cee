"""A one-layer bidirectional LSTM that ``torch.compile`` can trace.

``BiLSTM(n, h)`` is ``nn.LSTM(n, h, num_layers=1, batch_first=True, bidirectional=True)``:
the same parameter names and shapes (so checkpoints written with either load into the
other), the same initialisation (the same random draws in the same order) and the same
function. It exists because Dynamo refuses to trace ``nn.LSTM`` modules: each call is a
graph break, and vop-c / vop-fc make one per prompted layer, splitting the compiled
encoder into a dozen graphs (no ``fullgraph=True``, no ``torch.export``, and a tower that
falls back to eager code once Dynamo's recompile limit is reached).

Eagerly it runs PyTorch's fused LSTM kernel (oneDNN on the CPU, cuDNN on GPUs), as
nn.LSTM does; under ``torch.compile`` it runs :meth:`BiLSTM.unrolled`, the recurrence in
plain operations, which Dynamo traces and Inductor fuses. (The fused kernel wrapped as
one custom operator was tried for compiled inference: no faster on the CPU, and 1.05 x
against the unrolled form's 1.38 x the uncompiled encoder on an H200; see
docs/performance.md, section 4.) ``tests/test_bilstm.py`` holds both paths to nn.LSTM.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


@contextlib.contextmanager
def _quiet_compaction():
    """PyTorch does not lay out bf16 weights for cuDNN (cudnn.is_acceptable refuses the
    dtype; nn.LSTM alike), so cuDNN compacts them at each call and warns each time: 19 MB
    at the default size, small against the image tower (bf16 is inference here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
        yield


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
        if torch.compiler.is_compiling():
            return self.unrolled(x)
        weights = list(self.parameters())  # nn.LSTM's flat-weights order
        h0 = x.new_zeros(2, x.shape[0], self.hidden_size)
        compacted = weights[0].is_cuda and weights[0].dtype == torch.bfloat16
        with _quiet_compaction() if compacted else contextlib.nullcontext():
            return torch.lstm(x, (h0, h0), weights, True, 1, 0.0, self.training, True, True)[0]

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self.flatten_parameters()  # after .to() / .cuda() / .half(), as nn.LSTM does
        return module

    def flatten_parameters(self) -> None:
        """On a GPU, lay the eight tensors out as views of the one buffer cuDNN reads, as
        nn.LSTM does; otherwise cuDNN copies them into a fresh buffer at every call (and, in
        training, keeps that copy for the backward pass). A no-op off cuDNN."""
        weights = list(self.parameters())
        first = weights[0]
        if not all(w.is_cuda and w.dtype == first.dtype and torch.backends.cudnn.is_acceptable(w) for w in weights):
            return
        if len({w.data_ptr() for w in weights}) != len(weights) or not torch._use_cudnn_rnn_flatten_weight():
            return
        from torch.backends.cudnn import rnn

        with torch.cuda.device_of(first), torch.no_grad():
            torch._cudnn_rnn_flatten_weight(weights, 4, self.input_size, rnn.get_cudnn_mode("LSTM"),
                                            self.hidden_size, 0, 1, True, True)

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
