"""The one factory: build a registered method on a backbone.

>>> import vop
>>> model = vop.create("vop-fc", "tiny")                  # a backbone name or path ...
>>> model = vop.create("vop", vop.backbone.load("tiny"))  # ... or a loaded CLIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vop.backbone import load as load_backbone
from vop.backbone.clip import CLIP
from vop.methods.config import MethodConfig
from vop.methods.registry import get, make_config
from vop.model.video_text import VideoTextModel


def create(method: str, backbone: CLIP | str | Path, *, config: MethodConfig | None = None,
           **options: Any) -> VideoTextModel:
    """Method ``method`` on ``backbone`` (a CLIP, which it freezes, or a source for
    :func:`vop.backbone.load`). ``options`` are the method's options (``vop params`` and
    docs/methods.md list them); ``config`` passes a ready :class:`MethodConfig` instead."""
    spec = get(method)
    if config is None:
        config = make_config(method, **options)
    elif options:
        raise ValueError("pass either config= or option keywords, not both")
    if config.method != method:
        raise ValueError(f"config is for method {config.method!r}, not {method!r}")
    clip = backbone if isinstance(backbone, CLIP) else load_backbone(backbone)
    built = {}
    for part in sorted(spec.parts, key=lambda p: p.init_order):  # the order random values are drawn in
        built[part.name] = part.build(clip, config)
    mechanisms = [built[p.name] for p in spec.parts if built[p.name] is not None]
    return VideoTextModel(clip, config, mechanisms)


def from_config(config: MethodConfig, clip: CLIP) -> VideoTextModel:
    """Rebuild a method from a saved config (checkpoints, indexes)."""
    return create(config.method, clip, config=config)
