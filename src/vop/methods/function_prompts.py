"""VoP^F, function-specific prompting: after K_s intra-frame layers, a learnable frame
positional embedding is added to every token of frame j, and the remaining layers attend
jointly over the whole video: ``[cls_1..cls_F, video prompts, patches_1..patches_F]``.
The frozen weights are unchanged; only the grouping of tokens differs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vop.methods.mechanism import Mechanism, Part, check_at_least
from vop.methods.text_prompts import InitOptions


@dataclass(frozen=True, kw_only=True)
class JointOptions(InitOptions):
    intra_layers: int | None = None  # K_s: intra-frame layers (None: 2/3 of the depth)
    video_prompt_length: int = 8  # video-level prompts per joint layer
    frame_pos_init_std: float = 0.02  # normal init of the frame positional embedding (0: zeros)
    frame_pos_lr_scale: float = 1.0  # learning-rate multiplier of the frame positional embedding

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "intra_layers", "video_prompt_length", "frame_pos_init_std", "frame_pos_lr_scale")

    def resolved_intra_layers(self, depth: int) -> int:
        """K_s: the paper's 8 of 12, i.e. 2/3 of the image tower unless set."""
        k = round(2 * depth / 3) if self.intra_layers is None else self.intra_layers
        if k > depth:
            raise ValueError(f"intra_layers={k} exceeds the image tower's {depth} layers")
        return k


class JointFrames(Mechanism):
    """``frame_pos``: ``[F, width]``; ``video_prompts``: ``[K - K_s, n, width]``."""

    slot, role = "joint", "joint"

    def __init__(self, intra_layers: int, total_layers: int, num_frames: int, width: int,
                 num_prompts: int, init_std: float = 0.02, frame_pos_init_std: float = 0.02,
                 frame_pos_lr_scale: float = 1.0):
        super().__init__()
        self.intra_layers = intra_layers
        self.num_frames = num_frames
        self.length = num_prompts
        self.frame_pos = nn.Parameter(torch.randn(num_frames, width) * frame_pos_init_std)
        self.video_prompts = nn.Parameter(torch.randn(total_layers - intra_layers, num_prompts, width) * init_std)
        self._frame_pos_lr_scale = frame_pos_lr_scale

    def group(self, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame tokens ``[B * F, 1 + P, w]`` -> (cls ``[B, F, w]``, patches ``[B, F * P, w]``)
        with the frame positional embedding added to every token of each frame."""
        bf, tokens, width = x.shape
        f = bf // batch
        x = x.view(batch, f, tokens, width) + self.frame_pos.to(x.dtype)[:, None, :]  # [B, F, 1+P, w]
        return x[:, :, 0], x[:, :, 1:].reshape(batch, f * (tokens - 1), width)

    def sequence(self, layer: int, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Joint layer ``layer`` (0-based among joint layers): ``[B, F + n + F * P, w]``."""
        prompts = self.video_prompts[layer].to(cls.dtype).expand(cls.shape[0], -1, -1)
        return torch.cat([cls, prompts, patches], dim=1)

    def split(self, x: torch.Tensor, num_frames: int, with_prompts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint-layer output -> (cls ``[B, F, w]``, patches ``[B, F * P, w]``);
        ``with_prompts=False`` when the layer did not compute the prompt rows."""
        return x[:, :num_frames], x[:, num_frames + (self.length if with_prompts else 0):]

    def lr_scales(self) -> dict[str, float]:
        return {"frame_pos": self._frame_pos_lr_scale}


def build_joint(clip, cfg: JointOptions) -> JointFrames:
    layers = clip.config.vision_layers
    return JointFrames(cfg.resolved_intra_layers(layers), layers, cfg.num_frames, clip.config.vision_width,
                       cfg.video_prompt_length, cfg.prompt_init_std, cfg.frame_pos_init_std,
                       cfg.frame_pos_lr_scale)


JOINT_FRAMES = Part("joint frames", JointOptions, build_joint, init_order=1)
