"""Temporal heads as a method option (``head``), usable on top of every method that
encodes frames one by one: CLIP4Clip's ``seqlstm`` and ``seqtransf`` (modules in
:mod:`vop.methods.heads`) run on the per-frame embeddings ``[B, F, D]`` before the mean
pooling. ``head="mean"`` (the default) builds nothing: the method is exactly what it was
without this option (same tensors, names, initial values and embeddings).

- ``full`` + ``head="seqtransf"`` is CLIP4Clip (seqTransf); ``vop`` + ``seqtransf`` is new.
- ``seqtransf`` starts from the text tower's first ``head_layers`` blocks and its
  positional table, as CLIP4Clip does (``head_init="text"``). That needs the text width to
  equal the embedding width (true for every OpenAI CLIP, not for the tiny backbones);
  ``head_init="auto"`` (default) copies when the widths match and otherwise starts the head
  as the identity (``"identity"``: residual branches zeroed, positions at the frame
  features' scale, see :meth:`SeqTransf.init_identity`). ``"random"`` is CLIP4Clip's fresh
  module before the copy (N(0, 0.02) positions, PyTorch's default blocks); on the synthetic
  world it neither keeps the features nor learns frame order in the demo's budget.
- Its LayerNorms use CLIP4Clip's epsilon 1e-12 (a quirk of its TF-style LayerNorm), in
  training too, so a model trained here and one imported from CLIP4Clip are the same
  function.
- The frame positions make the pooled embedding order-aware (``sees_frame_order``).

Tensors are stored under the slot ``head.`` with CLIP4Clip's names after it
(``head.lstm_visual.*``, ``head.frame_position_embeddings.weight``,
``head.transformerClip.resblocks.*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vop.backbone.clip import CLIP
from vop.methods.heads import SeqLSTM, SeqTransf
from vop.methods.mechanism import Mechanism, Options, Part, check_at_least

HEADS = ("mean", "seqlstm", "seqtransf")
HEAD_INITS = ("auto", "text", "identity", "random")


@dataclass(frozen=True, kw_only=True)
class HeadOptions(Options):
    head: str = "mean"  # temporal head before pooling: "mean" (none), "seqlstm" or "seqtransf" (CLIP4Clip)
    head_layers: int | None = None  # seqtransf blocks (None: CLIP4Clip's 4, or the text tower's layers if fewer)
    head_init: str = "auto"  # seqtransf start: "text" (CLIP4Clip), "identity", "random", "auto" (text, else identity)
    head_lr_scale: float = 1.0  # learning-rate multiplier of the head (100 in the full and xpool recipes)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {self.head_init!r}")
        check_at_least(self, 1, "head_layers")
        check_at_least(self, 0, "head_lr_scale")


class _HeadMechanism(Mechanism):
    slot, role = "head", "head"
    name = ""
    lr_scale = 1.0

    def lr_scales(self) -> dict[str, float]:
        return {"": self.lr_scale} if self.lr_scale != 1.0 else {}


class LSTMHead(_HeadMechanism, SeqLSTM):
    """CLIP4Clip's seqLSTM as a method's head (``head="seqlstm"``)."""

    name = "seqlstm"


class TransformerHead(_HeadMechanism, SeqTransf):
    """CLIP4Clip's seqTransf as a method's head (``head="seqtransf"``)."""

    name = "seqtransf"


def seqtransf_heads(clip: CLIP) -> int:
    """Attention heads of a seqtransf head on ``clip``: the text tower's (8 on ViT-B/32)."""
    c = clip.config
    return c.transformer_heads if c.embed_dim % c.transformer_heads == 0 else 1


@torch.no_grad()
def frame_feature_scale(clip: CLIP) -> float:
    """The per-dimension scale of ``clip``'s frame embeddings, estimated from its weights:
    an embedding is ``ln_post(x) @ proj``; with unit-variance, uncorrelated LayerNorm
    outputs, dimension ``j`` has standard deviation ``||ln_post.weight * proj[:, j]||``.
    Returns the root mean square over ``j`` (0.97 on the tiny synthetic CLIP, whose
    measured frame features have a per-dimension standard deviation of about 1.2)."""
    v = clip.visual
    if v.proj.is_meta:  # shapes only (counting parameters): no values to measure, none drawn
        return 1.0
    per_dim = (v.ln_post.weight.float()[:, None] * v.proj.float()).pow(2).sum(0)  # [D]
    return float(per_dim.mean().sqrt())


def build_head(clip: CLIP, cfg: HeadOptions) -> Mechanism | None:
    c = clip.config
    if cfg.head == "mean":
        return None
    if cfg.head == "seqlstm":
        module: _HeadMechanism = LSTMHead(c.embed_dim)
    else:
        layers = cfg.head_layers if cfg.head_layers is not None else min(4, c.transformer_layers)
        widths_match = c.transformer_width == c.embed_dim
        init = cfg.head_init if cfg.head_init != "auto" else ("text" if widths_match else "identity")
        if init == "text" and not widths_match:
            raise ValueError(
                f"head_init='text' copies text-tower blocks of width {c.transformer_width} into a head of "
                f"width {c.embed_dim} (the embedding width) on backbone {c.name!r}; use head_init='identity' "
                "(or 'random')")
        if init == "text" and layers > c.transformer_layers:
            raise ValueError(f"head_layers={layers} exceeds the text tower's {c.transformer_layers} blocks it is "
                             "initialised from; use fewer layers or head_init='identity'")
        module = TransformerHead(c.embed_dim, seqtransf_heads(clip), layers=layers, positions=c.context_length)
        if init == "text":
            module.init_from_clip_text(clip)
        elif init == "identity":
            module.init_identity(frame_feature_scale(clip))
    module.lr_scale = cfg.head_lr_scale
    return module


# Built after every other part, so the random values of the other parts are drawn as
# before; with head="mean" nothing is built (nothing drawn).
HEAD = Part("temporal head", HeadOptions, build_head, init_order=1000)
