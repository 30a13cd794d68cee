"""The registry of tuning methods: each name composes mechanisms into a VideoTextModel.

A new variant is a :func:`register` call with a builder, not a branch in ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from vop.backbone.clip import CLIP
from vop.methods import subsets
from vop.methods.adapters import Adapters
from vop.methods.config import MethodConfig
from vop.methods.context_prompts import ContextPrompts
from vop.methods.frame_prompts import SharedPrompts
from vop.methods.function_prompts import JointFrames
from vop.methods.position_prompts import PositionPrompts
from vop.methods.text_prompts import DeepTextPrompts


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str  # one line for `vop params` and the docs
    build: Callable[[CLIP, MethodConfig], dict]  # -> VideoTextModel keyword arguments
    options: frozenset[str] = field(default_factory=frozenset)  # MethodConfig fields it reads
    family: str = "prompt"  # "baseline" | "prompt" | "ablation"


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"method {spec.name!r} is already registered")
    unknown = spec.options - {f.name for f in fields(MethodConfig)}
    if unknown:
        raise ValueError(f"method {spec.name!r} declares unknown options {sorted(unknown)}")
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """Registered method names, in registration order (baselines first)."""
    return list(_REGISTRY)


def get(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def make_config(name: str, **options: Any) -> MethodConfig:
    """Validate ``options`` against the method and build its config."""
    spec = get(name)
    bad = sorted(set(options) - spec.options - {"num_frames"})
    if bad:
        raise ValueError(
            f"option(s) {bad} do not apply to method {name!r}; it takes: {sorted(spec.options | {'num_frames'})}"
        )
    return MethodConfig(method=name, **options)


def create(name: str, clip: CLIP, **options: Any):
    """Build method ``name`` on ``clip`` (which it freezes): ``create("vop-fc", clip)``."""
    from vop.model import VideoTextModel

    config = options.pop("config", None) or make_config(name, **options)
    if config.method != name:
        raise ValueError(f"config is for method {config.method!r}, not {name!r}")
    return VideoTextModel(clip, config, **get(name).build(clip, config))


def from_config(config: MethodConfig, clip: CLIP):
    """Rebuild a method from a saved config (checkpoints, indexes)."""
    return create(config.method, clip, config=config)


# -- mechanism builders ---------------------------------------------------------------
def _text(clip: CLIP, cfg: MethodConfig) -> DeepTextPrompts | None:
    depth = cfg.resolved_depth(clip.config.transformer_layers)
    if cfg.text_prompt_length == 0 or depth == 0:
        return None
    return DeepTextPrompts(depth, cfg.text_prompt_length, clip.config.transformer_width,
                           clip.config.context_length, cfg.text_prompt_layout, cfg.prompt_init_std)


def _shared(clip: CLIP, cfg: MethodConfig, layers: int) -> SharedPrompts | None:
    depth = cfg.resolved_depth(layers)
    if cfg.visual_prompt_length == 0 or depth == 0:
        return None
    return SharedPrompts(depth, cfg.visual_prompt_length, clip.config.vision_width, cfg.prompt_init_std)


def _position(clip: CLIP, cfg: MethodConfig, layers: int) -> PositionPrompts | None:
    depth = cfg.resolved_depth(layers)
    if cfg.visual_prompt_length == 0 or depth == 0:
        return None
    return PositionPrompts(depth, cfg.shared_prompt_length, cfg.specific_prompt_length, cfg.num_frames,
                           clip.config.vision_width, cfg.prompt_init_std)


def _context(clip: CLIP, cfg: MethodConfig, layers: int) -> ContextPrompts | None:
    depth = cfg.resolved_depth(layers)
    if cfg.visual_prompt_length == 0 or depth == 0:
        return None
    width = clip.config.vision_width
    return ContextPrompts(depth, cfg.shared_prompt_length, cfg.specific_prompt_length, width,
                          cfg.context_hidden or width, cfg.prompt_init_std, cfg.context_lr_scale)


def _joint(clip: CLIP, cfg: MethodConfig) -> JointFrames:
    layers = clip.config.vision_layers
    return JointFrames(cfg.resolved_intra_layers(layers), layers, cfg.num_frames, clip.config.vision_width,
                       cfg.video_prompt_length, cfg.prompt_init_std, cfg.frame_pos_init_std,
                       cfg.frame_pos_lr_scale)


def _adapters(position: str) -> Callable[[CLIP, MethodConfig], dict]:
    def build(clip: CLIP, cfg: MethodConfig) -> dict:
        c = clip.config
        return {"adapters": Adapters(c.vision_width, c.vision_layers, c.transformer_width,
                                     c.transformer_layers, cfg.adapter_width, position)}
    return build


def _subset(selector) -> Callable[[CLIP, MethodConfig], dict]:
    return lambda clip, cfg: {"backbone_trainable": selector(clip, cfg.bias_include_norm)}


def _prompted(frame_builder, joint: bool = False, text: bool = True) -> Callable[[CLIP, MethodConfig], dict]:
    def build(clip: CLIP, cfg: MethodConfig) -> dict:
        parts: dict = {"text_prompts": _text(clip, cfg) if text else None}
        j = _joint(clip, cfg) if joint else None
        if frame_builder is not None:
            layers = j.intra_layers if j is not None else clip.config.vision_layers
            parts["frame_prompts"] = frame_builder(clip, cfg, layers)
        parts["joint"] = j
        return parts
    return build


_TEXT = {"text_prompt_length", "text_prompt_layout", "prompt_depth", "prompt_init_std"}
_VISUAL = {"visual_prompt_length", "prompt_depth", "prompt_init_std"}
_SPECIFIC = _VISUAL | {"specific_prompt_length"}
_JOINT = {"intra_layers", "video_prompt_length", "frame_pos_init_std", "frame_pos_lr_scale"}
_CONTEXT = _SPECIFIC | {"context_hidden", "context_lr_scale"}


def _register_builtins() -> None:
    b = "baseline"
    register(MethodSpec("zero-shot", "frozen CLIP, mean pooling, nothing trains", lambda c, cfg: {}, family=b))
    register(MethodSpec("full", "full fine-tuning of both towers and the logit scale",
                        _subset(subsets.everything), family=b))
    register(MethodSpec("bias", "bias terms of the linear layers (BitFit)", _subset(subsets.biases),
                        frozenset({"bias_include_norm"}), family=b))
    register(MethodSpec("proj", "the two output projections", _subset(subsets.projections), family=b))
    register(MethodSpec("partial", "last image block, ln_post and both projections",
                        _subset(subsets.partial), family=b))
    register(MethodSpec("adapter-attn", "bottleneck adapter after attention, every layer, both towers",
                        _adapters("attn"), frozenset({"adapter_width"}), family=b))
    register(MethodSpec("adapter-ffn", "bottleneck adapter after the MLP, every layer, both towers",
                        _adapters("mlp"), frozenset({"adapter_width"}), family=b))
    register(MethodSpec("text-prompt", "deep text prompts only (ablation)", _prompted(None),
                        frozenset(_TEXT), family="ablation"))
    register(MethodSpec("visual-prompt", "deep visual prompts only (ablation)", _prompted(_shared, text=False),
                        frozenset(_VISUAL), family="ablation"))
    register(MethodSpec("vop", "deep text + visual prompts (VoP)", _prompted(_shared),
                        frozenset(_TEXT | _VISUAL)))
    register(MethodSpec("vop-p", "VoP with position-specific video prompts", _prompted(_position),
                        frozenset(_TEXT | _SPECIFIC)))
    register(MethodSpec("vop-c", "VoP with context-specific (BiLSTM) video prompts", _prompted(_context),
                        frozenset(_TEXT | _CONTEXT)))
    register(MethodSpec("vop-f", "VoP with function-specific prompts: joint attention in the last layers",
                        _prompted(_shared, joint=True), frozenset(_TEXT | _VISUAL | _JOINT)))
    register(MethodSpec("vop-fp", "VoP^F with position-specific prompts in the intra-frame layers",
                        _prompted(_position, joint=True), frozenset(_TEXT | _SPECIFIC | _JOINT)))
    register(MethodSpec("vop-fc", "VoP^F with context-specific prompts in the intra-frame layers",
                        _prompted(_context, joint=True), frozenset(_TEXT | _CONTEXT | _JOINT)))


_register_builtins()
