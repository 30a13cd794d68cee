"""VoP^P, position-specific prompts: per layer, ``shared`` tokens for every frame plus
``specific`` tokens chosen by the frame's position j in 1..F."""

from __future__ import annotations

import torch
from torch import nn

from vop.methods.frame_prompts import FramePrompts


class PositionPrompts(FramePrompts):
    """``shared``: ``[depth, n_shared, width]``; ``specific``: ``[depth, F, n_specific, width]``."""

    sees_frame_order = True

    def __init__(self, depth: int, num_shared: int, num_specific: int, num_frames: int,
                 width: int, init_std: float = 0.02):
        super().__init__()
        self.depth, self.length, self.num_frames = depth, num_shared + num_specific, num_frames
        self.shared = nn.Parameter(torch.randn(depth, num_shared, width) * init_std)
        self.specific = nn.Parameter(torch.randn(depth, num_frames, num_specific, width) * init_std)

    def prompts(self, layer: int, cls: torch.Tensor) -> torch.Tensor:
        b, f, width = cls.shape
        shared = self.shared[layer].expand(f, -1, -1)  # [F, n_shared, width]
        per_frame = torch.cat([shared, self.specific[layer]], dim=1).to(cls.dtype)  # [F, n, width]
        return per_frame.expand(b, -1, -1, -1).reshape(b * f, self.length, width)
