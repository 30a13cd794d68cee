"""Deep text prompts (VoP's text side): learnable tokens inserted right after the start
token at layer 0 and replaced by each later layer's own tokens.

Two layouts:
- ``prefix`` (the paper's equations, the default): the 77-slot window holds
  ``[SOT, P (n), caption tokens (77 - 1 - n)]``; captions are tokenised to ``77 - n`` ids and
  the feature is read at the shifted end-of-text position ``argmax(ids) + n``.
- ``reference`` (the ModelScope release): ``n // 2`` prefix prompts after SOT and
  ``n - n // 2`` suffix prompts before the *last slot of the padded window*; the feature
  is read at ``argmax(ids) + n`` although only the prefix shifted the end-of-text token.

Prompts are inserted before the positional embedding is added (as in the reference), so
they take position slots like words do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vop.methods.mechanism import Mechanism, Options, Part, check_at_least

TEXT_LAYOUTS = ("prefix", "reference")


@dataclass(frozen=True, kw_only=True)
class InitOptions(Options):
    prompt_init_std: float = 0.02  # normal init of every prompt table

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "prompt_init_std")


@dataclass(frozen=True, kw_only=True)
class PromptOptions(InitOptions):
    prompt_depth: int | None = None  # fresh prompts in the first d layers (None: every layer)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "prompt_depth")

    def resolved_depth(self, layers: int) -> int:
        return layers if self.prompt_depth is None else min(self.prompt_depth, layers)


@dataclass(frozen=True, kw_only=True)
class TextPromptOptions(PromptOptions):
    text_prompt_length: int = 8  # deep text prompt tokens per layer
    text_prompt_layout: str = "prefix"  # "prefix" (paper) or "reference" (ModelScope release quirks)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "text_prompt_length")
        if self.text_prompt_layout not in TEXT_LAYOUTS:
            raise ValueError(f"text_prompt_layout must be one of {TEXT_LAYOUTS}, got {self.text_prompt_layout!r}")


class DeepTextPrompts(Mechanism):
    """``prompts``: ``[depth, n, width]``. Layers at or above ``depth`` keep the previous
    layer's outputs in the prompt slots (VPT-shallow beyond the prompted layers)."""

    slot, role = "text_prompts", "text"

    def __init__(self, depth: int, length: int, width: int, context_length: int,
                 layout: str = "prefix", init_std: float = 0.02):
        super().__init__()
        if length >= context_length - 1:
            raise ValueError(f"{length} text prompts leave no room in a {context_length}-token window")
        self.length = length
        self.layout = layout
        self.context_length = context_length
        self.num_prefix = length if layout == "prefix" else length // 2
        self.num_suffix = length - self.num_prefix
        self.prompts = nn.Parameter(torch.randn(depth, length, width) * init_std)  # [depth, n, width]

    @property
    def caption_length(self) -> int:
        """Token ids per caption (the window minus the prompt slots)."""
        return self.context_length - self.length

    def _splice(self, x: torch.Tensor, layer: int, replace: bool) -> torch.Tensor:
        p = self.prompts[layer].to(x.dtype).expand(x.shape[0], -1, -1)  # [N, n, width]
        pre, suf = p[:, : self.num_prefix], p[:, self.num_prefix:]
        skip = self.num_prefix if replace else 0
        if self.num_suffix == 0:
            return torch.cat([x[:, :1], pre, x[:, 1 + skip:]], dim=1)
        end = x.shape[1] - 1  # the last slot of the window stays last
        body_end = end - (self.num_suffix if replace else 0)
        return torch.cat([x[:, :1], pre, x[:, 1 + skip: body_end], suf, x[:, end:]], dim=1)

    def insert(self, tokens: torch.Tensor) -> torch.Tensor:
        """Layer-0 token embeddings ``[N, caption_length, w]`` -> ``[N, context_length, w]``."""
        if tokens.shape[1] != self.caption_length:
            raise ValueError(
                f"captions must be tokenised to {self.caption_length} ids when {self.length} text "
                f"prompts share the {self.context_length}-token window (got {tokens.shape[1]}); "
                "use model.tokenize(texts)"
            )
        return self._splice(tokens, 0, replace=False) if self.length else tokens

    def replace(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Before layer ``layer`` >= 1: that layer's prompts take the prompt slots."""
        if self.length == 0 or layer >= self.prompts.shape[0]:
            return x
        return self._splice(x, layer, replace=True)

    def readout(self, ids: torch.Tensor) -> torch.Tensor:
        """Index of the token whose output is the caption feature, ``[N]``."""
        return ids.argmax(dim=-1) + self.length


def build_text_prompts(clip, cfg: TextPromptOptions) -> DeepTextPrompts | None:
    depth = cfg.resolved_depth(clip.config.transformer_layers)
    if cfg.text_prompt_length == 0 or depth == 0:
        return None
    return DeepTextPrompts(depth, cfg.text_prompt_length, clip.config.transformer_width,
                           clip.config.context_length, cfg.text_prompt_layout, cfg.prompt_init_std)


TEXT_PROMPTS = Part("text prompts", TextPromptOptions, build_text_prompts, init_order=0)
