"""CLIP4Clip's temporal heads: trainable modules between the per-frame embeddings and the
mean pooling, ``[B, F, D]`` (+ an optional frame mask ``[B, F]``) -> ``[B, F, D]``.

Both are residual (output + input) and give the pooling order-aware frame features.
Parameter names follow CLIP4Clip's checkpoints (``lstm_visual.*``,
``frame_position_embeddings.weight``, ``transformerClip.resblocks.*``), so its tensors load
one-to-one once the model-level prefix is stripped (see :mod:`vop.methods.peer_keys`).

The frame mask is 1 for real frames and 0 for padding; real frames come first (CLIP4Clip
packs the LSTM input by ``mask.sum()``, which assumes this). Padded frames are copied
through unchanged; the pooling that follows ignores them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vop.backbone.layers import Attention, ResidualAttentionBlock


def _check_frames(frames: torch.Tensor, width: int, mask: torch.Tensor | None) -> None:
    if frames.ndim != 3 or frames.shape[-1] != width:
        raise ValueError(f"expected per-frame features (B, F, {width}), got {tuple(frames.shape)}")
    if mask is not None and mask.shape != frames.shape[:2]:
        raise ValueError(f"the frame mask must be (B, F) = {tuple(frames.shape[:2])}, got {tuple(mask.shape)}")


class SeqLSTM(nn.Module):
    """CLIP4Clip's ``seqLSTM``: a one-layer unidirectional ``nn.LSTM(D, D)`` over the frames,
    plus the input. 2,101,248 parameters at D = 512 (PyTorch's default initialisation).

    CLIP4Clip also builds a frame position table for this head that it never reads; it is
    left out here (and dropped on import)."""

    sees_frame_order = True

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.lstm_visual = nn.LSTM(width, width, num_layers=1, batch_first=True, bidirectional=False)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``frames`` ``[B, F, D]``, ``mask`` ``[B, F]`` -> ``[B, F, D]``.

        The LSTM runs over every frame: being causal, its outputs at a video's real frames
        equal those of CLIP4Clip's packed sequence; outputs past the video's length are
        replaced by the input (CLIP4Clip pads them with zeros or doubles them: the pooling
        masks them either way)."""
        _check_frames(frames, self.width, mask)
        out = self.lstm_visual(frames)[0] + frames  # [B, F, D]
        if mask is None:
            return out
        return torch.where(mask.bool().unsqueeze(-1), out, frames)


class MaskedBlock(ResidualAttentionBlock):
    """CLIP's pre-LN block (the same parameter names) with an additive attention bias and a
    chosen LayerNorm epsilon: CLIP4Clip's ``seqTransf`` blocks use the TF-style LayerNorm
    with eps 1e-12 (CLIP's own blocks use 1e-5)."""

    def __init__(self, width: int, heads: int, ln_eps: float = 1e-12):
        super().__init__(width, heads)
        self.ln_1.eps = self.ln_2.eps = ln_eps

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """``x`` ``[B, F, D]``, ``bias`` broadcastable to ``[B, heads, F, F]`` (added to the
        attention logits) -> ``[B, F, D]``."""
        x = x + _attend(self.attn, self.ln_1(x), bias)
        return x + self.mlp(self.ln_2(x))


def _attend(attn: Attention, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Self-attention with ``attn``'s weights and an additive bias, fused through SDPA."""
    b, length, width = x.shape
    hd = width // attn.heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [B, F, 3D]
    q, k, v = qkv.view(b, length, 3, attn.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, h, F, hd]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, h, F, hd]
    return attn.out_proj(out.transpose(1, 2).reshape(b, length, width))


class SeqTransf(nn.Module):
    """CLIP4Clip's ``seqTransf``: frame positions (a ``[positions, D]`` table, rows 0..F-1)
    added to the frame features, ``layers`` pre-LN attention blocks with an additive
    padding mask, plus the input (no final LayerNorm). 12,648,960 parameters at D = 512
    with CLIP4Clip's sizes (77 positions, 4 layers, 8 heads).

    ``clip4clip_mask_tiling`` reproduces CLIP4Clip's mask layout: it tiles the ``[B, F, F]``
    mask with ``repeat(heads, 1, 1)`` where ``nn.MultiheadAttention`` reads ``[B * heads]``
    batch-major, so head ``h`` of video ``b`` gets video ``(b * heads + h) % B``'s mask. It
    changes nothing when every video has all its frames (MSR-VTT's 12 frames at 1 fps);
    off by default, on when importing CLIP4Clip's checkpoints to give its similarities."""

    sees_frame_order = True

    def __init__(self, width: int, heads: int, layers: int = 4, positions: int = 77,
                 ln_eps: float = 1e-12, clip4clip_mask_tiling: bool = False):
        super().__init__()
        if layers < 1 or positions < 1:
            raise ValueError(f"SeqTransf needs layers >= 1 and positions >= 1, got {layers}, {positions}")
        self.width, self.heads, self.positions = width, heads, positions
        self.clip4clip_mask_tiling = clip4clip_mask_tiling
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.transformerClip = nn.Module()
        self.transformerClip.resblocks = nn.ModuleList([MaskedBlock(width, heads, ln_eps) for _ in range(layers)])
        # CLIP4Clip's N(0, 0.02) before the CLIP weights are copied in (init_from_clip_text).
        nn.init.normal_(self.frame_position_embeddings.weight, std=0.02)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformerClip.resblocks

    @torch.no_grad()
    def init_from_clip_text(self, clip: nn.Module) -> None:
        """Copy the text tower's positional table and its first ``layers`` blocks, as
        CLIP4Clip does before training. ``clip``: a :class:`vop.backbone.clip.CLIP`."""
        table = clip.positional_embedding
        if tuple(table.shape) != tuple(self.frame_position_embeddings.weight.shape):
            raise ValueError(
                f"the text tower's positional table is {tuple(table.shape)} but this head's is "
                f"{tuple(self.frame_position_embeddings.weight.shape)}; build SeqTransf with "
                f"positions={table.shape[0]} and width={table.shape[1]} to initialise it from this CLIP"
            )
        text_blocks = clip.transformer.resblocks
        if len(text_blocks) < len(self.blocks) or clip.transformer.width != self.width:
            raise ValueError(
                f"SeqTransf ({len(self.blocks)} blocks of width {self.width}) cannot be initialised from a "
                f"text tower of {len(text_blocks)} blocks of width {clip.transformer.width}"
            )
        self.frame_position_embeddings.weight.copy_(table)
        for mine, theirs in zip(self.blocks, text_blocks):
            mine.load_state_dict(theirs.state_dict())  # the same names; eps stays this head's

    @torch.no_grad()
    def init_identity(self, position_std: float) -> None:
        """Start as the identity with visible positions, for a head that cannot start from a
        text tower. Each block's residual-branch outputs (attention out-projection, MLP
        down-projection) are zeroed, so the head's output is ``2 * frames + positions``; the
        positions are drawn from N(0, ``position_std``), meant to be the frame features'
        per-dimension scale. Measured on the synthetic world (docs/peers.md): PyTorch's
        default block initialisation adds a random vector larger than the frame features
        themselves, and N(0, 0.02) positions are too small beside features of scale ~1 for
        the head to learn frame order in the demo's budget."""
        nn.init.normal_(self.frame_position_embeddings.weight, std=position_std)
        for block in self.blocks:
            for layer in (block.attn.out_proj, block.mlp.c_proj):
                layer.weight.zero_()
                layer.bias.zero_()

    def _bias(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Frame mask ``[B, F]`` -> additive bias for SDPA, ``[B, 1 | heads, F, F]``."""
        b, f = mask.shape
        bias = (1.0 - mask.to(dtype)).unsqueeze(1).expand(b, f, f) * -1e6  # [B, F(query), F(key)]
        if not self.clip4clip_mask_tiling:
            return bias.unsqueeze(1)  # [B, 1, F, F]
        # CLIP4Clip: repeat(heads, 1, 1) -> [heads * B, F, F], read as [B, heads, F, F].
        return bias.repeat(self.heads, 1, 1).view(b, self.heads, f, f)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``frames`` ``[B, F, D]`` (F <= positions), ``mask`` ``[B, F]`` -> ``[B, F, D]``."""
        _check_frames(frames, self.width, mask)
        f = frames.shape[1]
        if f > self.positions:
            raise ValueError(f"{f} frames exceed the head's {self.positions} frame positions")
        x = frames + self.frame_position_embeddings.weight[:f].to(frames.dtype)  # [B, F, D]
        bias = None if mask is None else self._bias(mask, frames.dtype)
        for block in self.blocks:
            x = block(x, bias)
        out = x + frames
        if mask is None:
            return out
        return torch.where(mask.bool().unsqueeze(-1), out, frames)
