"""The transformer pieces of CLIP, with OpenAI's parameter names so checkpoints load
one-to-one. Tokens are batch-first ``[batch, tokens, width]`` throughout: no permutes
between layers, and attention goes through ``scaled_dot_product_attention``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

Hook = Optional[Callable[[torch.Tensor], torch.Tensor]]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (as OpenAI's), returned in the input's dtype: keeps fp16
    weights numerically safe.

    When input and weights share a 16-bit dtype the native kernel runs on them directly:
    the CPU and CUDA kernels already accumulate the statistics and form the output in
    fp32 and round once, so the result matches the explicit fp32 round trip (to one
    rounding step in a few elements per 10^4) without its four extra copies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or x.dtype == self.weight.dtype:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


class _QuickGELUFunction(torch.autograd.Function):
    """``x * sigmoid(1.702 x)`` that saves only ``x`` for backward. Plain autograd keeps
    both ``x`` and the sigmoid (two ``[..., 4 * width]`` tensors per block) and runs four
    elementwise passes backward; since ``x * sigmoid(a x) = silu(a x) / a``, the gradient
    is ``silu'(a x)``: one scaling pass and one fused ``silu_backward``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (1.702 * x).sigmoid_().mul_(x)  # the same operations as QuickGELU's, in place

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, 1.702 * x)


class QuickGELU(nn.Module):
    """CLIP's activation: x * sigmoid(1.702 x). Forward values are bitwise those of the
    plain expression on every path; training saves half the activation memory of the
    plain expression (see ``_QuickGELUFunction``), inference computes in one buffer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # TorchScript export records plain operations
            return x * torch.sigmoid(1.702 * x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _QuickGELUFunction.apply(x)
        return (1.702 * x).sigmoid_().mul_(x)


class Attention(nn.Module):
    """Multi-head self-attention named like ``nn.MultiheadAttention`` (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``), batch-first, fused through SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False, queries: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[n, L, w]`` -> ``[n, L, w]``. With ``queries`` ``[n, Lq, w]`` (a subset of
        ``x``'s rows) only those rows attend, over all of ``x``: -> ``[n, Lq, w]``, and the
        query projection runs on ``Lq`` rows only."""
        n, length, width = x.shape
        hd = width // self.heads
        if queries is None:
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [n, L, 3w]
            # [n, L, 3, h, hd] -> three [n, h, L, hd] views; SDPA takes the strides as they are.
            q, k, v = qkv.view(n, length, 3, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            if causal:
                raise ValueError("a query subset is only exact without a causal mask")
            w, b = self.in_proj_weight, self.in_proj_bias
            q = F.linear(queries, w[:width], b[:width]).view(n, -1, self.heads, hd).transpose(1, 2)
            kv = F.linear(x, w[width:], b[width:])  # [n, L, 2w]
            k, v = kv.view(n, length, 2, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [n, h, Lq, hd]
        return self.out_proj(out.transpose(1, 2).reshape(n, q.shape[2], width))


def without_rows(x: torch.Tensor, rows: slice) -> torch.Tensor:
    """``x`` ``[n, L, w]`` without the token rows ``rows`` (a view when they run to an end)."""
    length = x.shape[1]
    if rows.step not in (None, 1):
        raise ValueError(f"rows to drop must be a contiguous forward slice, got {rows}")
    # slice.indices written out: Dynamo before torch 2.13 cannot trace it (a graph break).
    start, stop = (min(max(i + length if i < 0 else i, 0), length) for i in
                   (rows.start or 0, length if rows.stop is None else rows.stop))
    if start > stop:
        raise ValueError(f"rows to drop must be a contiguous forward slice, got {rows}")
    if stop == length:
        return x[:, :start]
    if start == 0:
        return x[:, stop:]
    return torch.cat([x[:, :start], x[:, stop:]], dim=1)


def activation_layer(name: str) -> nn.Module:
    """The MLP activation called ``name``: OpenAI's ``quick_gelu`` or the exact (erf) ``gelu``
    of open_clip's non-OpenAI models and of Hugging Face configs with ``hidden_act: gelu``."""
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected 'quick_gelu' or 'gelu'")


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block. ``post_attn`` / ``post_mlp`` let a method transform the
    attention or MLP branch before it joins the residual (adapters), without forking."""

    def __init__(self, width: int, heads: int, activation: str = "quick_gelu"):
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", activation_layer(activation)),  # named "gelu" in OpenAI's module tree either way
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, causal: bool = False, post_attn: Hook = None,
                post_mlp: Hook = None, drop: slice | None = None) -> torch.Tensor:
        """``[n, L, w]`` -> ``[n, L, w]``; with ``drop``, the output rows nobody reads are
        not computed: every row still serves as key and value, but the query, output
        projection and MLP run on the kept rows only, and the result is ``x`` without
        ``drop`` (exact: each row's output depends only on its own query)."""
        if drop is None:
            h = self.attn(self.ln_1(x), causal=causal)
        else:
            normed = self.ln_1(x)
            h = self.attn(normed, causal=causal, queries=without_rows(normed, drop))
            x = without_rows(x, drop)
        if post_attn is not None:
            h = post_attn(h)
        x = x + h
        h = self.mlp(self.ln_2(x))
        if post_mlp is not None:
            h = post_mlp(h)
        return x + h


class Transformer(nn.Module):
    """A stack of blocks (``resblocks``); callers usually iterate the blocks themselves."""

    def __init__(self, width: int, layers: int, heads: int, activation: str = "quick_gelu"):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, activation) for _ in range(layers)])

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal=causal)
        return x
