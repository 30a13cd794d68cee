"""The typed configuration of a tuning method: every option with the paper's value as its
default. One dataclass serves all methods; the registry says which options a method
takes, so a misspelt or inapplicable option fails loudly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

TEXT_LAYOUTS = ("prefix", "reference")


@dataclass(frozen=True)
class MethodConfig:
    method: str  # registry name, e.g. "vop-fc"
    num_frames: int = 12  # frames per video; fixes the size of frame-position tables
    text_prompt_length: int = 8  # deep text prompt tokens per layer
    text_prompt_layout: str = "prefix"  # "prefix" (paper) or "reference" (ModelScope release quirks)
    visual_prompt_length: int = 8  # prompt tokens per frame per intra-frame layer
    specific_prompt_length: int = 4  # of those, position- (vop-p) or context-specific (vop-c)
    prompt_depth: int | None = None  # fresh prompts in the first d layers (None: every layer)
    intra_layers: int | None = None  # K_s for vop-f*: intra-frame layers (None: 2/3 of the depth)
    video_prompt_length: int = 8  # video-level prompts per joint layer (vop-f*)
    context_hidden: int | None = None  # BiLSTM hidden size per direction (None: image width)
    adapter_width: int = 64  # bottleneck width of adapters
    prompt_init_std: float = 0.02  # normal init of every prompt table
    frame_pos_init_std: float = 0.02  # normal init of vop-f's frame positional embedding (0: zeros)
    frame_pos_lr_scale: float = 1.0  # learning-rate multiplier of the frame positional embedding
    context_lr_scale: float = 1.0  # learning-rate multiplier of the context module (BiLSTM + FC)
    bias_include_norm: bool = False  # "bias": also train LayerNorm biases (BitFit proper)

    def __post_init__(self) -> None:
        for name in ("num_frames",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("text_prompt_length", "visual_prompt_length", "specific_prompt_length",
                     "video_prompt_length", "adapter_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.text_prompt_layout not in TEXT_LAYOUTS:
            raise ValueError(f"text_prompt_layout must be one of {TEXT_LAYOUTS}, got {self.text_prompt_layout!r}")
        if self.prompt_depth is not None and self.prompt_depth < 0:
            raise ValueError(f"prompt_depth must be >= 0, got {self.prompt_depth}")
        if self.intra_layers is not None and self.intra_layers < 0:
            raise ValueError(f"intra_layers must be >= 0, got {self.intra_layers}")
        if self.context_hidden is not None and self.context_hidden < 1:
            raise ValueError(f"context_hidden must be >= 1, got {self.context_hidden}")
        for name in ("prompt_init_std", "frame_pos_init_std", "frame_pos_lr_scale", "context_lr_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def shared_prompt_length(self) -> int:
        """Prompts shared by all frames in the vop-p / vop-c intra-frame layers."""
        if self.specific_prompt_length > self.visual_prompt_length:
            raise ValueError(
                f"specific_prompt_length ({self.specific_prompt_length}) cannot exceed "
                f"visual_prompt_length ({self.visual_prompt_length})"
            )
        return self.visual_prompt_length - self.specific_prompt_length

    def resolved_intra_layers(self, depth: int) -> int:
        """K_s: the paper's 8 of 12, i.e. 2/3 of the image tower unless set."""
        k = round(2 * depth / 3) if self.intra_layers is None else self.intra_layers
        if k > depth:
            raise ValueError(f"intra_layers={k} exceeds the image tower's {depth} layers")
        return k

    def resolved_depth(self, layers: int) -> int:
        return layers if self.prompt_depth is None else min(self.prompt_depth, layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MethodConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown method option(s) {unknown}; known: {sorted(known - {'method'})}")
        return cls(**data)

    def updated(self, **changes: Any) -> "MethodConfig":
        return replace(self, **changes)
