"""The contract of intra-frame visual prompt mechanisms (VoP, VoP^P, VoP^C).

Before image-tower layer ``i`` (for ``i < depth``) the tower asks the mechanism for that
layer's prompts given the layer's input [CLS] tokens of every frame, and places them
between [CLS] and the patches: ``[cls, P_i, patches]``. Layers at or above ``depth``
carry the previous prompt outputs along.
"""

from __future__ import annotations

import torch
from torch import nn


class FramePrompts(nn.Module):
    """Base class: subclasses set ``depth`` and ``length`` and implement ``prompts``."""

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
