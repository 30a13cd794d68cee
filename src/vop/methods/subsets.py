"""The baselines that train a subset of the backbone itself, as predicates over the
backbone's parameter names (OpenAI names)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from vop.backbone.clip import CLIP
from vop.methods.mechanism import Mechanism, Options, Part

Selector = Callable[[str], bool]

_NORM_BIAS = re.compile(r"(^|\.)ln_\w+\.bias$")
PROJECTIONS = ("visual.proj", "text_projection")


def everything(clip: CLIP, include_norm: bool = False) -> Selector:
    """Full fine-tuning: every backbone tensor (the logit scale too)."""
    return lambda name: True


def biases(clip: CLIP, include_norm: bool = False) -> Selector:
    """Bias terms of the linear layers (attention and MLP); LayerNorm biases only with
    ``include_norm`` (BitFit proper). Linear biases alone give 138,240 on ViT-B/32, the
    paper's "0.1 M"; with LayerNorm biases it is 171,008."""

    def select(name: str) -> bool:
        if not name.endswith("bias"):
            return False
        return include_norm or not _NORM_BIAS.search(name)

    return select


def projections(clip: CLIP, include_norm: bool = False) -> Selector:
    """The two output projections (655,360 on ViT-B/32)."""
    return lambda name: name in PROJECTIONS


def partial(clip: CLIP, include_norm: bool = False) -> Selector:
    """The last image-tower block, ``ln_post`` and both projections (7.74 M on ViT-B/32)."""
    last = f"visual.transformer.resblocks.{clip.config.vision_layers - 1}."
    return lambda name: name.startswith((last, "visual.ln_post.")) or name in PROJECTIONS


@dataclass(frozen=True, kw_only=True)
class BiasOptions(Options):
    bias_include_norm: bool = False  # also train LayerNorm biases (BitFit proper)


class BackboneSubset(Mechanism):
    """Trains a subset of the backbone's own tensors (no tensors of its own: the trained
    ones keep their ``clip.*`` names)."""

    slot, role = "backbone_subset", "backbone"

    def __init__(self, select: Selector):
        super().__init__()
        self._select = select

    def selects(self, name: str) -> bool:
        return self._select(name)


def subset(name: str, selector: Callable[[CLIP, bool], Selector], options: type[Options] = Options) -> Part:
    def build(clip: CLIP, cfg) -> BackboneSubset:
        return BackboneSubset(selector(clip, getattr(cfg, "bias_include_norm", False)))
    return Part(name, options, build, init_order=3)


EVERYTHING = subset("every backbone tensor", everything)
BIASES = subset("linear-layer biases", biases, BiasOptions)
PROJECTIONS_ONLY = subset("output projections", projections)
PARTIAL = subset("last image block and projections", partial)
