"""Plain reference versions of the optimised layers, for tests and benchmarks that compare
every fast path with the straightforward fp32 formulation."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vop.backbone import layers


class ReferenceLayerNorm(nn.LayerNorm):
    """The plain version: 16-bit inputs always round-trip through fp32 copies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


class ReferenceQuickGELU(nn.Module):
    """CLIP's activation written out: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def to_reference(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with the reference LayerNorm and QuickGELU swapped in, and
    every token computed (no skipping of unread rows)."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if hasattr(m, "skip_unread_tokens"):  # a VideoTextModel: run the full sequences
            m.skip_unread_tokens = False
        if type(m) is layers.LayerNorm:
            m.__class__ = ReferenceLayerNorm
        elif type(m) is layers.QuickGELU:
            m.__class__ = ReferenceQuickGELU
    return twin
