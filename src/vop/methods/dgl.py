"""DGL (Dynamic Global-Local prompt tuning, AAAI 2024) on a frozen CLIP.

One prompt generator feeds both towers, layer by layer:
- the text tower gets ``n_text`` prompts per layer, half after the start token and half
  after the caption (DGL's layout, below);
- the image tower sees the whole video as one sequence: ``G`` global prompts (inserted at
  the input only, then carried) plus, for every frame, ``[CLS, n_local local prompts,
  patches]``, with the local prompts replaced in every prompted layer. Each layer uses the
  frozen attention twice: a frame's tokens attend to [global prompts + that frame], the
  global prompts attend to everything. The video embedding is ``ln_post @ proj`` of global
  prompt 0.

The generator ignores the input ("dynamic" names the shared latent space, not content
conditioning), so its prompts are computed once per call, not per video.

Two generators:
- :class:`LinearGenerator` (``dgl-linear``): a ``[n_local, depth * Wv]`` visual table
  shared by all frames; text prefix / postfix prompts are two ``Linear(Wv, Wt)`` of it.
  827,392 trainable parameters with the global prompts on ViT-B/32.
- :class:`TransformerGenerator` (``dgl``): ``n_text + frames * n_local`` embedding rows of
  width ``depth * Wv``, each layer's set passed through one CLIP block of width ``Wv``
  (the layers batched independently); text prompts through an MLP ``Wv -> 2 Wv -> Wt``,
  frame prompts (different for every frame) taken as they are. 9,575,168 on ViT-B/32.

Token layouts, as DGL's code (clip.py):
- text: token and positional embeddings (rows ``0..L-1``) are added first, then
  ``[SOT, n_pre prefix, tokens 1..L-1, n_post postfix]`` (prompts get no positions), a
  causal mask, and the feature read at the end-of-text token shifted by ``n_pre``. The
  postfix prompts sit after the end-of-text token, so the causal mask hides them from the
  feature (DGL's quirk, kept: the Linear generator's postfix projection gets no gradient).
- video: DGL orders the sequence ``[G global] + [frame tokens, token-major then frame]``;
  attention does not depend on the order of its keys, so here the frame tokens are kept
  as ``[B, F, 1 + n_local + patches, Wv]`` and :func:`dgl_sequence` gives DGL's order.
  DGL ignores the frame mask (padded frames are attended); so does this tower.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from vop.backbone.clip import CLIP
from vop.backbone.config import CLIPConfig
from vop.backbone.layers import QuickGELU, ResidualAttentionBlock, Transformer
from vop.methods.mechanism import Mechanism, Options, Part, check_at_least


def _uniform_bound(patch_size: int, width: int) -> float:
    """DGL's "xavier" bound for its visual prompt tables: sqrt(6 / (3 * patch^2 + width))."""
    return math.sqrt(6.0 / (3 * patch_size * patch_size + width))


class LinearGenerator(nn.Module):
    """DGL-Linear's shared latent space. ``forward() -> (text [depth, 2 * n_local, Wt],
    frame [depth, 1, n_local, Wv])`` (the frame axis broadcasts: shared by all frames)."""

    def __init__(self, depth: int, n_local: int, vision_width: int, text_width: int, patch_size: int):
        super().__init__()
        self.depth, self.n_local, self.vision_width = depth, n_local, vision_width
        self.n_text = 2 * n_local  # n_local prefix + n_local postfix
        self.visual_prompt_embedding = nn.Parameter(torch.empty(1, n_local, depth * vision_width))
        self.prefix_proj = nn.Linear(vision_width, text_width)
        self.postfix_proj = nn.Linear(vision_width, text_width)
        bound = _uniform_bound(patch_size, vision_width)
        nn.init.uniform_(self.visual_prompt_embedding, -bound, bound)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        # [1, n, depth * Wv] -> [n, depth, Wv] -> [depth, n, Wv]: DGL's view(B, n, depth, Wv).permute(2, 0, 1, 3)
        visual = self.visual_prompt_embedding.view(self.n_local, self.depth, self.vision_width).transpose(0, 1)
        text = torch.cat([self.prefix_proj(visual), self.postfix_proj(visual)], dim=1)  # [depth, 2n, Wt]
        return text, visual.unsqueeze(1)  # [depth, 1, n, Wv]


class TransformerGenerator(nn.Module):
    """DGL-Transformer's shared latent space. ``forward() -> (text [depth, n_text, Wt],
    frame [depth, frames, n_local, Wv])``: tied to the frame count it was built for."""

    def __init__(self, depth: int, n_text: int, n_local: int, frames: int, vision_width: int, text_width: int):
        super().__init__()
        self.depth, self.n_text, self.n_local, self.frames = depth, n_text, n_local, frames
        self.vision_width = vision_width
        self.prompt_embedding = nn.Embedding(n_text + frames * n_local, depth * vision_width)  # N(0, 1) as DGL
        self.prompt_transformer = Transformer(vision_width, 1, max(1, vision_width // 64))
        self.prompt_mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(vision_width, 2 * vision_width)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(2 * vision_width, text_width)),
        ]))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_tok = self.prompt_embedding.num_embeddings
        # [n_tok, depth * Wv] -> [n_tok, depth, Wv] -> [depth, n_tok, Wv]: each layer's set is one sequence
        x = self.prompt_embedding.weight.view(n_tok, self.depth, self.vision_width).transpose(0, 1)
        x = self.prompt_transformer(x)  # [depth, n_tok, Wv]
        text = self.prompt_mlp(x[:, : self.n_text])  # [depth, n_text, Wt]
        # frame-major, as DGL's reshape(B, frames, n_local, Wv): rows n_text + f * n_local + j
        frame = x[:, self.n_text:].reshape(self.depth, self.frames, self.n_local, self.vision_width)
        return text, frame


class DGLPrompts(nn.Module):
    """Everything DGL trains: the generator and the ``G`` global prompts ``[1, G, Wv]``.

    ``variant``: ``"linear"`` or ``"transformer"``; ``frames`` is required by (and only
    used for) the transformer variant. Defaults are DGL's: 4 local prompts per frame, 4
    global, 8 text prompts (4 prefix + 4 postfix), every layer prompted."""

    def __init__(self, clip_config: CLIPConfig, variant: str = "transformer", frames: int | None = 12,
                 n_local: int = 4, n_global: int = 4, n_text: int = 8, depth: int | None = None):
        super().__init__()
        cfg = clip_config
        depth = cfg.vision_layers if depth is None else depth
        if not 1 <= depth <= cfg.vision_layers:
            raise ValueError(f"depth must be in 1..{cfg.vision_layers} (the image tower's layers), got {depth}")
        if n_local < 1 or n_global < 1:
            raise ValueError(f"DGL needs at least one local and one global prompt, got {n_local}, {n_global}")
        self.variant, self.depth, self.n_local, self.n_global = variant, depth, n_local, n_global
        if variant == "linear":
            if n_text != 2 * n_local:
                raise ValueError(f"DGL-Linear projects the {n_local} local prompts to as many prefix and postfix "
                                 f"text prompts: n_text must be {2 * n_local}, got {n_text}")
            self.generator: nn.Module = LinearGenerator(depth, n_local, cfg.vision_width, cfg.transformer_width,
                                                        cfg.vision_patch_size)
            self.frames = None
        elif variant == "transformer":
            if frames is None or frames < 1:
                raise ValueError("the transformer variant generates prompts for each frame: pass frames= "
                                 "(the frame count it trains and runs with, 12 in DGL)")
            if n_text < 1:
                raise ValueError(f"n_text must be positive, got {n_text}")
            self.generator = TransformerGenerator(depth, n_text, n_local, frames, cfg.vision_width,
                                                  cfg.transformer_width)
            self.frames = frames
        else:
            raise ValueError(f"unknown DGL variant {variant!r}; choose 'linear' or 'transformer'")
        self.n_text = n_text
        self.n_prefix = n_text // 2
        self.global_prompts = nn.Parameter(torch.empty(1, n_global, cfg.vision_width))
        bound = _uniform_bound(cfg.vision_patch_size, cfg.vision_width)
        nn.init.uniform_(self.global_prompts, -bound, bound)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text [depth, n_text, Wt], frame [depth, frames | 1, n_local, Wv])``."""
        return self.generator()


def _splice_local(x: torch.Tensor, prompts: torch.Tensor, replace: bool) -> torch.Tensor:
    """Frame tokens ``[B, F, S, W]`` with ``prompts`` ``[F | 1, n, W]`` after each CLS."""
    b, f = x.shape[:2]
    p = prompts.to(x.dtype).expand(f, -1, -1).unsqueeze(0).expand(b, -1, -1, -1)  # [B, F, n, W]
    rest = x[:, :, 1 + p.shape[2]:] if replace else x[:, :, 1:]
    return torch.cat([x[:, :, :1], p, rest], dim=2)


def global_local_layer(block: ResidualAttentionBlock, glob: torch.Tensor, frames: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One DGL layer over a frozen CLIP block. ``glob`` ``[B, G, W]``, ``frames``
    ``[B, F, S, W]`` -> the same shapes. Each frame's tokens attend to [the global tokens +
    that frame's tokens]; the global tokens attend to every token of the video; both
    outputs join the residual, then the block's MLP runs on every token."""
    b, f, s, w = frames.shape
    g = glob.shape[1]
    g_n, f_n = block.ln_1(glob), block.ln_1(frames)
    keys = torch.cat([g_n.unsqueeze(1).expand(b, f, g, w), f_n], dim=2).view(b * f, g + s, w)  # [B*F, G+S, W]
    a_frames = block.attn(keys, queries=f_n.reshape(b * f, s, w)).view(b, f, s, w)
    keys = torch.cat([g_n, f_n.reshape(b, f * s, w)], dim=1)  # [B, G + F*S, W]
    a_glob = block.attn(keys, queries=g_n)  # [B, G, W]
    glob, frames = glob + a_glob, frames + a_frames
    return glob + block.mlp(block.ln_2(glob)), frames + block.mlp(block.ln_2(frames))


def encode_video(clip: CLIP, prompts: DGLPrompts, frames: torch.Tensor,
                 generated: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """DGL's video-level image tower: ``frames`` ``[B, F, 3, R, R]`` -> ``[B, embed_dim]``
    (unnormalised). ``generated``: the prompts' output, when the caller already has it."""
    if frames.ndim != 5:
        raise ValueError(f"expected frames (B, F, 3, H, W), got {tuple(frames.shape)}")
    b, f = frames.shape[:2]
    if prompts.frames is not None and f != prompts.frames:
        raise ValueError(f"DGL's transformer generator makes prompts for {prompts.frames} frames; got {f} "
                         "(sample that many frames per video)")
    _, frame_prompts = prompts() if generated is None else generated  # [depth, F | 1, n, Wv]
    visual = clip.visual
    x = visual.ln_pre(visual.embed(frames.flatten(0, 1)))  # [B*F, 1 + patches, Wv]
    x = _splice_local(x.view(b, f, *x.shape[1:]), frame_prompts[0], replace=False)  # [B, F, 1 + n + patches, Wv]
    glob = prompts.global_prompts.to(x.dtype).expand(b, -1, -1)  # [B, G, Wv]
    for i, block in enumerate(visual.blocks):
        if 0 < i < prompts.depth:
            x = _splice_local(x, frame_prompts[i], replace=True)
        glob, x = global_local_layer(block, glob, x)
    return visual.head(glob[:, 0])


def dgl_sequence(glob: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Tokens in DGL's order, ``[B, G + S * F, W]``: global prompts, then frame tokens
    token-major (token ``s`` of frames 0..F-1, then token ``s + 1``, ...)."""
    b, f, s, w = frames.shape
    return torch.cat([glob, frames.transpose(1, 2).reshape(b, s * f, w)], dim=1)


def encode_text(clip: CLIP, prompts: DGLPrompts, ids: torch.Tensor,
                generated: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """DGL's prompted text tower: ids ``[N, L]`` -> ``[N, embed_dim]`` (unnormalised).

    The sequence is ``1 + n_pre + (L - 1) + n_post`` tokens long (40 for DGL's 32 ids)."""
    if ids.ndim != 2:
        raise ValueError(f"expected token ids (N, L), got {tuple(ids.shape)}")
    n, length = ids.shape
    if length > clip.positional_embedding.shape[0]:
        raise ValueError(f"{length} token ids exceed the text tower's {clip.positional_embedding.shape[0]} positions")
    text_prompts, _ = prompts() if generated is None else generated  # [depth, n_text, Wt]
    pre = prompts.n_prefix
    x = clip.embed_tokens(ids) + clip.positional_embedding[:length].to(clip.token_embedding.weight.dtype)  # [N, L, Wt]

    def splice(x: torch.Tensor, layer: int, replace: bool) -> torch.Tensor:
        p = text_prompts[layer].to(x.dtype).expand(n, -1, -1)  # [N, n_text, Wt]
        body = x[:, 1 + pre: pre + length] if replace else x[:, 1:]  # the L - 1 caption tokens after SOT
        return torch.cat([x[:, :1], p[:, :pre], body, p[:, pre:]], dim=1)

    x = splice(x, 0, replace=False)  # [N, 1 + n_pre + L - 1 + n_post, Wt]
    for i, block in enumerate(clip.text_blocks):
        if 0 < i < prompts.depth:
            x = splice(x, i, replace=True)
        x = block(x, causal=True)
    return clip.text_head(x, ids.argmax(dim=-1) + pre)


# --------------------------------------------------------------------------- as methods
@dataclass(frozen=True, kw_only=True)
class DGLOptions(Options):
    dgl_local_prompts: int = 4  # local prompts per frame, replaced in every prompted layer (DGL: 4)
    dgl_global_prompts: int = 4  # global prompts, inserted once; the video embedding is the first's (DGL: 4)
    dgl_text_prompts: int = 8  # text prompts per layer, half prefix and half (hidden) postfix (DGL: 8)
    dgl_depth: int | None = None  # prompted layers (None: every layer, as DGL)
    dgl_caption_length: int = 32  # token ids per caption (DGL's max_words 32)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "dgl_local_prompts", "dgl_global_prompts", "dgl_text_prompts", "dgl_depth")
        check_at_least(self, 3, "dgl_caption_length")


class DGLTower(Mechanism, DGLPrompts):
    """DGL as a method's mechanism (role ``tower``): the model's ``encode_text`` and
    ``encode_video`` delegate to DGL's prompted text tower and video-level image tower.
    Tensors under ``dgl.*`` (``dgl.generator.*``, ``dgl.global_prompts``)."""

    slot, role = "dgl", "tower"

    def __init__(self, clip_config: CLIPConfig, variant: str, frames: int | None, n_local: int, n_global: int,
                 n_text: int, depth: int | None, caption_length: int):
        super().__init__(clip_config, variant, frames, n_local, n_global, n_text, depth)
        self.caption_length = min(caption_length, clip_config.context_length)

    @property
    def num_frames(self) -> int | None:
        """The frame count the transformer generator is tied to (None for linear)."""
        return self.frames

    @property
    def sees_frame_order(self) -> bool:
        """The transformer variant gives each frame position its own prompts; the linear
        one shares them and has no frame positions (order-blind up to rounding: attention
        sums its keys in sequence order, so a reversed video matches to ~1e-7, not bitwise)."""
        return self.variant == "transformer"

    def encode_text(self, clip: CLIP, ids: torch.Tensor) -> torch.Tensor:
        return encode_text(clip, self, ids)

    def encode_video(self, clip: CLIP, frames: torch.Tensor) -> torch.Tensor:
        return encode_video(clip, self, frames)


def _dgl_part(variant: str) -> Part:
    def build(clip: CLIP, cfg) -> DGLTower:
        frames = cfg.num_frames if variant == "transformer" else None
        n_text = cfg.dgl_text_prompts
        if variant == "linear" and n_text != 2 * cfg.dgl_local_prompts:
            raise ValueError(f"dgl-linear projects its {cfg.dgl_local_prompts} local prompts to as many prefix and "
                             f"postfix text prompts: dgl_text_prompts must be {2 * cfg.dgl_local_prompts}, got {n_text}")
        return DGLTower(clip.config, variant, frames, cfg.dgl_local_prompts, cfg.dgl_global_prompts, n_text,
                        cfg.dgl_depth, cfg.dgl_caption_length)
    return Part(f"DGL {variant} generator and global-local tower", DGLOptions, build, init_order=4)


DGL_LINEAR = _dgl_part("linear")
DGL_TRANSFORMER = _dgl_part("transformer")
