"""Trainable-parameter accounting for every registered method on a backbone."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vop.backbone.clip import CLIP
from vop.backbone.config import ARCHITECTURES
from vop.methods.registry import get, names
from vop.model.factory import create


@dataclass(frozen=True)
class ParameterCount:
    method: str
    family: str
    trainable: int
    backbone: int  # all backbone parameters (the denominator of `percent`)
    summary: str

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.backbone


def count_parameters(backbone: str | CLIP = "ViT-B-32", **options) -> list[ParameterCount]:
    """One row per registered method. A backbone given by name is built on the meta
    device, so counting ViT-L/14 allocates no weights."""
    rows = []
    for name in names():
        if isinstance(backbone, str):
            if backbone not in ARCHITECTURES:
                raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(ARCHITECTURES)}")
            with torch.device("meta"):
                clip = CLIP(ARCHITECTURES[backbone])
                model = create(name, clip, **{k: v for k, v in options.items() if k in get(name).config_class.option_names()})
        else:
            model = create(name, backbone, **{k: v for k, v in options.items() if k in get(name).config_class.option_names()})
        spec = get(name)
        rows.append(ParameterCount(name, spec.family, model.num_trainable(), model.clip.num_parameters(),
                                   spec.summary))
    return rows


def format_table(rows: list[ParameterCount]) -> str:
    width = max(len(r.method) for r in rows)
    lines = [f"{'method':<{width}}  {'trainable':>12}  {'% backbone':>10}  summary"]
    for r in rows:
        lines.append(f"{r.method:<{width}}  {r.trainable:>12,}  {r.percent:>9.3f}%  {r.summary}")
    lines.append(f"(% of all {rows[0].backbone:,} backbone parameters; the paper divides by 119.8 M)")
    return "\n".join(lines)
