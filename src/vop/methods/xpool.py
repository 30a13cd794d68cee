"""X-Pool's text-conditioned pooling (``pool_frames``, X-Pool's modules/transformer.py):
each caption pools each video's frames with its own attention weights, so a video has no
single embedding: it is scored pair by pair, and search can only re-rank with it.

Parameter names follow X-Pool's checkpoints with the ``pool_frames.`` prefix stripped
(``cross_attn.{q,k,v,out}_proj``, ``linear_proj``, ``layer_norm{1,2,3}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vop.methods.mechanism import Mechanism, Options, Part, check_at_least


class CrossAttention(nn.Module):
    """Captions attend over each video's frames: separate q/k/v/out projections, softmax
    over frames, no frame positions (order-blind)."""

    def __init__(self, width: int, heads: int = 1):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.width, self.heads = width, heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def keys_values(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised frames ``[N_v, F, D]`` -> keys, values ``[N_v, heads, F, D / heads]``
        (text-independent: computed once per video)."""
        n, f, _ = frames.shape
        hd = self.width // self.heads
        k = self.k_proj(frames).view(n, f, self.heads, hd).transpose(1, 2)  # [N_v, h, F, hd]
        v = self.v_proj(frames).view(n, f, self.heads, hd).transpose(1, 2)  # [N_v, h, F, hd]
        return k, v

    def attend(self, text: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised captions ``[N_t, D]``, keys/values ``[N_v, h, F, hd]``, ``bias``
        ``[N_v, 1, 1, F]`` -> ``[N_v, N_t, D]``."""
        n_t, n_v = text.shape[0], k.shape[0]
        hd = self.width // self.heads
        q = self.q_proj(text).view(n_t, self.heads, hd).transpose(0, 1)  # [h, N_t, hd]
        q = q.unsqueeze(0).expand(n_v, -1, -1, -1)  # [N_v, h, N_t, hd] (a view)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0 / math.sqrt(hd))  # [N_v, h, N_t, hd]
        return self.out_proj(out.transpose(1, 2).reshape(n_v, n_t, self.width))


class XPoolHead(nn.Module):
    """``forward(text [N_t, D], frames [N_v, F, D]) -> pooled [N_v, N_t, D]``:

    1. ``t = LN1(text)``, ``f = LN1(frames)`` (one LayerNorm shared by both modalities);
    2. attention of ``W_q t`` over ``W_k f`` (scaled by sqrt(D / heads), softmax over
       frames), values ``W_v f``, output projection ``W_o``;
    3. ``r = LN2(attention)``, ``out = LN3(r + Dropout(W_lin r))``.

    X-Pool's initialisation: every projection weight is the identity, biases zero.
    1,316,352 parameters at D = 512. Inputs are the unnormalised CLIP embeddings."""

    sees_frame_order = False

    def __init__(self, width: int, heads: int = 1, dropout: float = 0.3):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.width = width
        self.cross_attn = CrossAttention(width, heads)
        self.linear_proj = nn.Linear(width, width)
        self.layer_norm1 = nn.LayerNorm(width)
        self.layer_norm2 = nn.LayerNorm(width)
        self.layer_norm3 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        for name, param in self.named_parameters():
            if "proj" in name or "linear" in name:
                nn.init.eye_(param) if name.endswith("weight") else nn.init.zeros_(param)

    def _check(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None) -> None:
        if text.ndim != 2 or text.shape[-1] != self.width:
            raise ValueError(f"expected caption embeddings (N_t, {self.width}), got {tuple(text.shape)}")
        if frames.ndim != 3 or frames.shape[-1] != self.width:
            raise ValueError(f"expected per-frame embeddings (N_v, F, {self.width}), got {tuple(frames.shape)}")
        if mask is not None and mask.shape != frames.shape[:2]:
            raise ValueError(f"the frame mask must be (N_v, F) = {tuple(frames.shape[:2])}, got {tuple(mask.shape)}")

    def prepare_videos(self, frames: torch.Tensor, mask: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The text-independent part: keys, values ``[N_v, h, F, hd]`` and the padding
        bias ``[N_v, 1, 1, F]`` (None without a mask)."""
        k, v = self.cross_attn.keys_values(self.layer_norm1(frames))
        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=k.dtype, device=k.device)
            bias = bias.masked_fill(~mask.bool(), float("-inf"))[:, None, None, :]  # [N_v, 1, 1, F]
        return k, v, bias

    def pool(self, text: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             bias: torch.Tensor | None = None) -> torch.Tensor:
        """Captions ``[N_t, D]`` and prepared videos -> pooled ``[N_v, N_t, D]``."""
        attn = self.cross_attn.attend(self.layer_norm1(text), k, v, bias)  # [N_v, N_t, D]
        r = self.layer_norm2(attn)
        return self.layer_norm3(r + self.dropout(self.linear_proj(r)))

    def forward(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``text`` ``[N_t, D]``, ``frames`` ``[N_v, F, D]`` (``mask`` ``[N_v, F]``, 1 = real
        frame) -> ``[N_v, N_t, D]``: video ``v`` pooled for caption ``t``."""
        self._check(text, frames, mask)
        return self.pool(text, *self.prepare_videos(frames, mask))

    def score(self, text: torch.Tensor, frames: torch.Tensor, chunk: int = 64,
              mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine similarities ``[N_t, N_v]``: ``s[t, v] = cos(text[t], pooled[v, t])`` (X-Pool's
        score, before its logit scale). Videos go ``chunk`` at a time, so no tensor larger
        than ``chunk x N_t x D`` exists at once (X-Pool's own evaluation holds several
        ``N_v x N_t x D`` ones); keys and values are computed once per video."""
        self._check(text, frames, mask)
        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of videos, got {chunk}")
        k, v, bias = self.prepare_videos(frames, mask)
        text_unit = F.normalize(text, dim=-1)  # [N_t, D]
        rows = []
        for start in range(0, frames.shape[0], chunk):
            part = slice(start, start + chunk)
            pooled = self.pool(text, k[part], v[part], None if bias is None else bias[part])  # [c, N_t, D]
            pooled = F.normalize(pooled, dim=-1)
            rows.append(torch.einsum("vtd,td->tv", pooled, text_unit))  # [N_t, c]
        return torch.cat(rows, dim=1)


# --------------------------------------------------------------------------- as a method
@dataclass(frozen=True, kw_only=True)
class XPoolOptions(Options):
    xpool_heads: int = 1  # attention heads of the text-conditioned pooling (X-Pool: 1)
    xpool_dropout: float = 0.3  # dropout before the pooling's residual (X-Pool: 0.3)
    xpool_lr_scale: float = 30.0  # learning-rate multiplier of the pooling (X-Pool: 3e-5 vs CLIP's 1e-6)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "xpool_heads")
        check_at_least(self, 0, "xpool_lr_scale")
        if not 0.0 <= self.xpool_dropout < 1.0:
            raise ValueError(f"xpool_dropout must be in [0, 1), got {self.xpool_dropout}")


class TextConditionedPool(Mechanism, XPoolHead):
    """X-Pool's pooling as a method's mechanism (role ``pool``): the model scores pairs with
    :meth:`XPoolHead.score` instead of dot products. Tensors under ``pool_frames.*``, as in
    X-Pool's checkpoints."""

    slot, role = "pool_frames", "pool"

    def __init__(self, width: int, heads: int = 1, dropout: float = 0.3, lr_scale: float = 1.0):
        super().__init__(width, heads, dropout)
        self.lr_scale = lr_scale

    def lr_scales(self) -> dict[str, float]:
        return {"": self.lr_scale} if self.lr_scale != 1.0 else {}


def _build(clip, cfg: XPoolOptions) -> TextConditionedPool:
    return TextConditionedPool(clip.config.embed_dim, cfg.xpool_heads, cfg.xpool_dropout, cfg.xpool_lr_scale)


XPOOL = Part("text-conditioned pooling (X-Pool)", XPoolOptions, _build, init_order=4)
