"""VoP^P, position-specific prompts: per layer, ``shared`` tokens for every frame plus
``specific`` tokens chosen by the frame's position j in 1..F."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vop.methods.frame_prompts import FramePrompts, VisualPromptOptions
from vop.methods.mechanism import Part, check_at_least


@dataclass(frozen=True, kw_only=True)
class SpecificPromptOptions(VisualPromptOptions):
    specific_prompt_length: int = 4  # of the visual prompts, position- (vop-p) or context-specific (vop-c)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "specific_prompt_length")

    @property
    def shared_prompt_length(self) -> int:
        """Prompts shared by all frames in the vop-p / vop-c intra-frame layers."""
        if self.specific_prompt_length > self.visual_prompt_length:
            raise ValueError(
                f"specific_prompt_length ({self.specific_prompt_length}) cannot exceed "
                f"visual_prompt_length ({self.visual_prompt_length})"
            )
        return self.visual_prompt_length - self.specific_prompt_length


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


def build_position_prompts(clip, cfg: SpecificPromptOptions) -> PositionPrompts | None:
    depth = cfg.resolved_depth(cfg.visual_prompt_layers(clip))
    if cfg.visual_prompt_length == 0 or depth == 0:
        return None
    return PositionPrompts(depth, cfg.shared_prompt_length, cfg.specific_prompt_length, cfg.num_frames,
                           clip.config.vision_width, cfg.prompt_init_std)


POSITION_PROMPTS = Part("position-specific prompts", SpecificPromptOptions, build_position_prompts, init_order=2)
