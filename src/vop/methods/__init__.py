"""Tuning methods: the paper's baselines, ablations and VoP variants, by name.

>>> import vop.backbone, vop.methods
>>> clip = vop.backbone.load("tiny")
>>> model = vop.methods.create("vop-fc", clip)
"""

from __future__ import annotations

from vop.methods.config import MethodConfig
from vop.methods.registry import MethodSpec, create, from_config, get, make_config, names, register

__all__ = ["MethodConfig", "MethodSpec", "create", "from_config", "get", "make_config", "names", "register"]
