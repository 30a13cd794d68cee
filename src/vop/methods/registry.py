"""The registry of tuning methods: each name lists the mechanisms (parts) it is made of.

A new method built from existing mechanisms is one :func:`register` call; a new mechanism
is one new file (module, options, :class:`~vop.methods.mechanism.Part`). The model layer
(:func:`vop.create`) builds a registered method on a backbone.

>>> from vop.methods import register, MethodSpec
>>> from vop.methods.text_prompts import TEXT_PROMPTS
>>> register(MethodSpec("my-text-prompts", "deep text prompts", (TEXT_PROMPTS,)))  # doctest: +SKIP
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Mapping

from vop.configio import convert_fields
from vop.methods.adapters import ATTN_ADAPTERS, MLP_ADAPTERS
from vop.methods.config import LEGACY_DEFAULTS, MethodConfig, compose
from vop.methods.context_prompts import CONTEXT_PROMPTS
from vop.methods.dgl import DGL_LINEAR, DGL_TRANSFORMER
from vop.methods.frame_prompts import SHARED_PROMPTS
from vop.methods.function_prompts import JOINT_FRAMES
from vop.methods.mechanism import Part
from vop.methods.position_prompts import POSITION_PROMPTS
from vop.methods.subsets import BIASES, EVERYTHING, PARTIAL, PROJECTIONS_ONLY
from vop.methods.temporal_heads import HEAD
from vop.methods.text_prompts import TEXT_PROMPTS
from vop.methods.xpool import XPOOL

configs = types.SimpleNamespace()  # every method's composed options class, by class name

FAMILIES = ("baseline", "prompt", "ablation", "peer")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str  # one line for `vop params` and the docs
    parts: tuple[Part, ...] = ()  # its mechanisms, in their order in the model
    family: str = "prompt"  # "baseline" | "prompt" | "ablation" | "peer" (other papers' methods)
    # Training defaults of this method (nested like a train config), e.g. its learning rate.
    # `vop train --method NAME` applies them before the data preset's and the user's settings.
    recipe: dict = field(default_factory=dict)
    # Whether the method encodes frames one by one and so takes the ``head`` option (a
    # temporal head before pooling, vop.methods.temporal_heads): the registry appends that
    # part. False for methods whose video embedding is not pooled from frames (DGL).
    temporal_head: bool = True
    config_class: type[MethodConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"method {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.temporal_head and HEAD not in self.parts:
            object.__setattr__(self, "parts", tuple(self.parts) + (HEAD,))
        cls = compose(self.name, [p.options for p in self.parts])
        # Importable as vop.methods.registry.configs.<Name>, so configs (and models holding
        # them) pickle.
        cls.__module__, cls.__qualname__ = __name__, f"configs.{cls.__name__}"
        setattr(configs, cls.__name__, cls)
        object.__setattr__(self, "config_class", cls)

    @property
    def options(self) -> frozenset[str]:
        """The options this method takes besides ``num_frames``."""
        return frozenset(self.config_class.option_names()) - {"num_frames"}


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method (from inside or outside the package: a plugin registers the same way)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"method {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a method registered by a plugin (tests)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Registered method names, in registration order (baselines first)."""
    return list(_REGISTRY)


def get(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def make_config(name: str, _legacy: bool = False, **options: Any) -> MethodConfig:
    """Validate ``options`` against the method and build its config. ``_legacy`` drops the
    inapplicable options that checkpoints of the one-flat-config era recorded at their
    defaults."""
    spec = get(name)
    allowed = set(spec.config_class.option_names())
    bad = sorted(set(options) - allowed)
    if _legacy:
        bad = [k for k in bad if not (k in LEGACY_DEFAULTS and options[k] == LEGACY_DEFAULTS[k])]
        options = {k: v for k, v in options.items() if k in allowed}
    if bad:
        raise ValueError(f"option(s) {bad} do not apply to method {name!r}; it takes: {sorted(allowed)}")
    # Types as declared (a YAML `true` is not a depth, "8" is not a length), naming the option.
    return spec.config_class(method=name, **convert_fields(spec.config_class, options, "method.options"))


def config_from_dict(data: Mapping[str, Any]) -> MethodConfig:
    """The config of ``data["method"]`` (any registered method) from its dict form, as
    ``MethodConfig.to_dict`` writes it (or as the one-flat-config era did)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("method"), str):
        raise ValueError(f"a method config must be a mapping with a 'method' name, got {data!r}")
    options = {k: v for k, v in data.items() if k != "method"}
    # Only a config of the one-flat-config era (it records every option of every method)
    # may carry options its method does not take.
    return make_config(data["method"], _legacy=set(LEGACY_DEFAULTS) <= set(options), **options)


def canonical(config: Mapping[str, Any]) -> dict:
    """A stored method config in today's form (old flat configs lose inapplicable defaults),
    for comparing configs written by different releases."""
    return config_from_dict(config).to_dict()


_PROMPT_LR = {"optim": {"lr": 1e-3}}
# Full fine-tuning at CLIP's 1e-6 (X-Pool's rate); a temporal head, if chosen, at 100x that:
# CLIP4Clip's head rate 1e-4 (its CLIP trains at 1e-7; docs/peers.md). Without a head the
# scale applies to nothing.
_FULL_LR = {"optim": {"lr": 1e-6}, "method": {"options": {"head_lr_scale": 100.0}}}


def _register_builtins() -> None:
    b, a = "baseline", "ablation"
    register(MethodSpec("zero-shot", "frozen CLIP, mean pooling, nothing trains", (), b, _PROMPT_LR))
    register(MethodSpec("full", "full fine-tuning of both towers and the logit scale", (EVERYTHING,), b, _FULL_LR))
    register(MethodSpec("bias", "bias terms of the linear layers (BitFit)", (BIASES,), b, {"optim": {"lr": 1e-4}}))
    register(MethodSpec("proj", "the two output projections", (PROJECTIONS_ONLY,), b, {"optim": {"lr": 1e-4}}))
    register(MethodSpec("partial", "last image block, ln_post and both projections", (PARTIAL,), b,
                        {"optim": {"lr": 1e-5}}))
    register(MethodSpec("adapter-attn", "bottleneck adapter after attention, every layer, both towers",
                        (ATTN_ADAPTERS,), b, {"optim": {"lr": 1e-4}}))
    register(MethodSpec("adapter-ffn", "bottleneck adapter after the MLP, every layer, both towers",
                        (MLP_ADAPTERS,), b, {"optim": {"lr": 1e-4}}))
    register(MethodSpec("text-prompt", "deep text prompts only (ablation)", (TEXT_PROMPTS,), a, _PROMPT_LR))
    register(MethodSpec("visual-prompt", "deep visual prompts only (ablation)", (SHARED_PROMPTS,), a, _PROMPT_LR))
    register(MethodSpec("vop", "deep text + visual prompts (VoP)", (TEXT_PROMPTS, SHARED_PROMPTS),
                        recipe=_PROMPT_LR))
    register(MethodSpec("vop-p", "VoP with position-specific video prompts", (TEXT_PROMPTS, POSITION_PROMPTS),
                        recipe=_PROMPT_LR))
    register(MethodSpec("vop-c", "VoP with context-specific (BiLSTM) video prompts", (TEXT_PROMPTS, CONTEXT_PROMPTS),
                        recipe=_PROMPT_LR))
    register(MethodSpec("vop-f", "VoP with function-specific prompts: joint attention in the last layers",
                        (TEXT_PROMPTS, SHARED_PROMPTS, JOINT_FRAMES), recipe=_PROMPT_LR))
    register(MethodSpec("vop-fp", "VoP^F with position-specific prompts in the intra-frame layers",
                        (TEXT_PROMPTS, POSITION_PROMPTS, JOINT_FRAMES), recipe=_PROMPT_LR))
    register(MethodSpec("vop-fc", "VoP^F with context-specific prompts in the intra-frame layers",
                        (TEXT_PROMPTS, CONTEXT_PROMPTS, JOINT_FRAMES), recipe=_PROMPT_LR))
    # Peers (docs/peers.md). CLIP4Clip is not a method: it is `full` with head="seqlstm" /
    # "seqtransf" (every method takes the `head` option).
    p = "peer"
    register(MethodSpec("xpool", "X-Pool: full fine-tuning + text-conditioned pooling (pairwise scores)",
                        (EVERYTHING, XPOOL), p, _FULL_LR))
    register(MethodSpec("dgl-linear", "DGL: linear shared-latent prompts, global-local video tower",
                        (DGL_LINEAR,), p, {"optim": {"lr": 2e-3}}, temporal_head=False))
    register(MethodSpec("dgl", "DGL: transformer shared-latent prompts, global-local video tower",
                        (DGL_TRANSFORMER,), p, {"optim": {"lr": 2e-3}}, temporal_head=False))


_register_builtins()
