"""The contract of intra-frame visual prompt mechanisms (VoP, VoP^P, VoP^C).

Before image-tower layer ``i`` (for ``i < depth``) the tower asks the mechanism for that
layer's prompts given the layer's input [CLS] tokens of every frame, and places them
between [CLS] and the patches: ``[cls, P_i, patches]``. Layers at or above ``depth``
carry the previous prompt outputs along.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vop.methods.mechanism import Mechanism, Part, check_at_least
from vop.methods.text_prompts import PromptOptions


@dataclass(frozen=True, kw_only=True)
class VisualPromptOptions(PromptOptions):
    visual_prompt_length: int = 8  # prompt tokens per frame per intra-frame layer

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "visual_prompt_length")

    def visual_prompt_layers(self, clip) -> int:
        """The image layers that take per-frame prompts: all of them, or the K_s intra-frame
        layers when the method also regroups frames (VoP^F's joint layers)."""
        layers = clip.config.vision_layers
        resolve = getattr(self, "resolved_intra_layers", None)
        return resolve(layers) if resolve is not None else layers


class FramePrompts(Mechanism):
    """Base class: subclasses set ``depth`` and ``length`` and implement ``prompts``."""

    slot, role = "frame_prompts", "frame"

    depth: int  # number of (bottom) layers that receive fresh prompts
    length: int  # prompt tokens per frame per layer
    num_frames: int | None = None  # set when parameters depend on the frame count
    sees_frame_order: bool = False  # whether a frame's prompts depend on its position or neighbours

    def prompts(self, layer: int, cls: torch.Tensor) -> torch.Tensor:
        """``cls`` ``[B, F, width]`` (the layer's input [CLS] of each frame) -> prompts
        ``[B * F, length, width]`` for that layer."""
        raise NotImplementedError

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter-name prefix (relative to this module)."""
        return {}


class SharedPrompts(FramePrompts):
    """VoP: the same ``length`` tokens for every frame of every video, per layer.
    ``prompts``: ``[depth, length, width]`` (the release stores ``[12, 1, 8, 768]``)."""

    def __init__(self, depth: int, length: int, width: int, init_std: float = 0.02):
        super().__init__()
        self.depth, self.length = depth, length
        self.prompts_table = nn.Parameter(torch.randn(depth, length, width) * init_std)

    def prompts(self, layer: int, cls: torch.Tensor) -> torch.Tensor:
        b, f, width = cls.shape
        return self.prompts_table[layer].to(cls.dtype).expand(b * f, -1, -1)


def build_shared_prompts(clip, cfg: VisualPromptOptions) -> SharedPrompts | None:
    depth = cfg.resolved_depth(cfg.visual_prompt_layers(clip))
    if cfg.visual_prompt_length == 0 or depth == 0:
        return None
    return SharedPrompts(depth, cfg.visual_prompt_length, clip.config.vision_width, cfg.prompt_init_std)


SHARED_PROMPTS = Part("shared visual prompts", VisualPromptOptions, build_shared_prompts, init_order=2)
