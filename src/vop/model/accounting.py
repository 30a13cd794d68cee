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


def _build(name: str, backbone: str | CLIP, options: dict):
    """Method ``name`` with the ``options`` it takes; a backbone given by name is built on
    the meta device, so counting ViT-L/14 allocates no weights."""
    own = {k: v for k, v in options.items() if k in get(name).config_class.option_names()}
    if isinstance(backbone, CLIP):
        return create(name, backbone, **own)
    if backbone not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(ARCHITECTURES)}")
    with torch.device("meta"):
        return create(name, CLIP(ARCHITECTURES[backbone]), **own)


def count_parameters(backbone: str | CLIP = "ViT-B-32", **options) -> list[ParameterCount]:
    """One row per registered method."""
    rows = []
    for name in names():
        model = _build(name, backbone, options)
        spec = get(name)
        rows.append(ParameterCount(name, spec.family, model.num_trainable(), model.clip.num_parameters(),
                                   spec.summary))
    return rows


def count_heads(backbone: str | CLIP = "ViT-B-32", **options) -> list[ParameterCount]:
    """What the composable heads add to any method: CLIP4Clip's temporal heads (option
    ``head``) and X-Pool's text-conditioned pooling (method ``xpool`` against ``full``)."""
    base = _build("zero-shot", backbone, options)
    rows = []
    for head, summary in (("seqlstm", "CLIP4Clip seqLSTM temporal head (method option head: seqlstm)"),
                          ("seqtransf", "CLIP4Clip seqTransf temporal head (method option head: seqtransf)")):
        model = _build("zero-shot", backbone, {**options, "head": head})
        rows.append(ParameterCount(head, "head", model.num_trainable() - base.num_trainable(),
                                   model.clip.num_parameters(), summary))
    if "xpool" in names():
        pooled = _build("xpool", backbone, options).num_trainable() - _build("full", backbone, options).num_trainable()
        rows.append(ParameterCount("xpool head", "head", pooled, base.clip.num_parameters(),
                                   "X-Pool's text-conditioned pooling (method xpool = full + this)"))
    return rows


def format_table(rows: list[ParameterCount]) -> str:
    width = max(len(r.method) for r in rows)
    lines = [f"{'method':<{width}}  {'trainable':>12}  {'% backbone':>10}  summary"]
    for r in rows:
        lines.append(f"{r.method:<{width}}  {r.trainable:>12,}  {r.percent:>9.3f}%  {r.summary}")
    lines.append(f"(% of all {rows[0].backbone:,} backbone parameters; the paper divides by 119.8 M)")
    return "\n".join(lines)
