"""The synthetic miniature of the paper's setting: an upstream world of captioned images
to pretrain a tiny CLIP on, and a downstream world of captioned short videos whose
captions turn on temporal order, to adapt the frozen CLIP to. See ``docs/synthetic.md``.
"""

from __future__ import annotations

from vop.data.synthetic import downstream as _downstream
from vop.data.synthetic import upstream as _upstream
from vop.data.synthetic.downstream import (
    CAPTION_TEMPLATES,
    DEFAULT_HELD_OUT,
    FAMILIES,
    SPLITS,
    DownstreamConfig,
    DownstreamWorld,
    SyntheticVideoSource,
    VideoInfo,
)
from vop.data.synthetic.render import COLOURS, POSITIONS, SHAPES, SIZES, render_scenes
from vop.data.synthetic.upstream import HELD_OUT_START, AttributeKey, UpstreamConfig, UpstreamWorld

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "render_scenes",
    "HELD_OUT_START",
    "AttributeKey",
    "UpstreamConfig",
    "UpstreamWorld",
    "CAPTION_TEMPLATES",
    "DEFAULT_HELD_OUT",
    "FAMILIES",
    "SPLITS",
    "DownstreamConfig",
    "DownstreamWorld",
    "SyntheticVideoSource",
    "VideoInfo",
    "vocabulary_texts",
]


def vocabulary_texts() -> list[str]:
    """Every caption template of both worlds filled with every attribute value: the texts
    a reduced tokenizer vocabulary must cover (a few thousand strings, no duplicates)."""
    return list(dict.fromkeys(_upstream.caption_texts() + _downstream.caption_texts()))
