"""Bottleneck adapters (the Adapter^ATTN / Adapter^FFN baselines): one per layer in both
towers, applied to the attention or the MLP branch before it joins the residual."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vop.methods.mechanism import Mechanism, Options, Part, check_at_least

POSITIONS = ("attn", "mlp")


@dataclass(frozen=True, kw_only=True)
class AdapterOptions(Options):
    adapter_width: int = 64  # bottleneck width of adapters

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "adapter_width")


class Adapter(nn.Module):
    """``h + up(relu(down(h)))``; ``up`` starts at zero so training starts from CLIP."""

    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.relu(self.down(h)))


class Adapters(Mechanism):
    """``visual[i]`` and ``text[i]``: the adapter of layer ``i`` of each tower."""

    slot, role = "adapters", "hooks"

    def __init__(self, vision_width: int, vision_layers: int, text_width: int, text_layers: int,
                 bottleneck: int, position: str):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"adapter position must be one of {POSITIONS}, got {position!r}")
        self.position = position
        self.visual = nn.ModuleList([Adapter(vision_width, bottleneck) for _ in range(vision_layers)])
        self.text = nn.ModuleList([Adapter(text_width, bottleneck) for _ in range(text_layers)])

    def hooks(self, tower: str, layer: int) -> dict:
        """Keyword arguments for ``ResidualAttentionBlock.forward``."""
        adapter = (self.visual if tower == "visual" else self.text)[layer]
        return {"post_attn": adapter} if self.position == "attn" else {"post_mlp": adapter}


def _adapters(position: str) -> Part:
    def build(clip, cfg: AdapterOptions) -> Adapters:
        c = clip.config
        return Adapters(c.vision_width, c.vision_layers, c.transformer_width, c.transformer_layers,
                        cfg.adapter_width, position)
    return Part(f"{position} adapters", AdapterOptions, build, init_order=3)


ATTN_ADAPTERS = _adapters("attn")
MLP_ADAPTERS = _adapters("mlp")
