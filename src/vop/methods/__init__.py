"""Tuning methods: the paper's baselines, ablations and VoP variants, by name. This layer
holds the mechanisms and the registry of specs; :func:`vop.create` builds a method on a
backbone.

>>> import vop
>>> model = vop.create("vop-fc", "tiny")
"""

from __future__ import annotations

from vop.methods.config import MethodConfig
from vop.methods.mechanism import Mechanism, Options, Part
from vop.methods.registry import (MethodSpec, canonical, config_from_dict, get, make_config, names, register,
                                  unregister)

__all__ = ["Mechanism", "MethodConfig", "MethodSpec", "Options", "Part", "canonical", "config_from_dict", "get", "make_config",
           "names", "register", "unregister"]
