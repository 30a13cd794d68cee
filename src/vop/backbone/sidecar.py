"""What the JSON beside a checkpoint says that its tensors cannot: attention heads and the
MLP activation. Two writers are understood: Hugging Face ``CLIPModel`` (``config.json``)
and open_clip hub folders (``open_clip_config.json``).

Partial files are completed with the writer's own defaults: older ``transformers`` leave
out every value equal to the default, so a missing ``num_attention_heads`` means 12 (image)
or 8 (text) heads and a missing ``hidden_act`` means ``quick_gelu``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vop.backbone.config import ACTIVATIONS

__all__ = ["Sidecar", "read_hf_config", "read_open_clip_config"]

# transformers' CLIPVisionConfig / CLIPTextConfig defaults (the values older versions omit).
HF_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                      "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
HF_TEXT_DEFAULTS = {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
                    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
# open_clip's CLIPVisionCfg / CLIPTextCfg defaults.
OPEN_CLIP_VISION_DEFAULTS = {"width": 768, "head_width": 64, "mlp_ratio": 4.0}
OPEN_CLIP_TEXT_DEFAULTS = {"width": 512, "heads": 8, "mlp_ratio": 4.0}


@dataclass(frozen=True)
class Sidecar:
    """Heads and activation read from a config file beside the weights."""

    vision_heads: int
    text_heads: int
    activation: str  # "quick_gelu" or "gelu"
    source: str  # the file it came from, for messages and provenance


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def is_clip_hf_config(data: dict) -> bool:
    """Whether a ``config.json`` describes a Hugging Face ``CLIPModel``."""
    return data.get("model_type") == "clip" or "vision_config" in data or "text_config" in data


def read_hf_config(path: Path) -> Sidecar:
    """Heads and activation of a Hugging Face ``CLIPModel`` ``config.json``; refuses what vop
    cannot reproduce exactly (other activations, layer-norm epsilons or MLP ratios)."""
    data = _read_json(path)
    if not is_clip_hf_config(data):
        raise ValueError(f"{path} does not describe a Hugging Face CLIPModel (model_type "
                         f"{data.get('model_type')!r}, no vision_config/text_config); remove it or load the "
                         "weights file from a folder of its own")
    towers = {}
    for tower, defaults in (("vision", HF_VISION_DEFAULTS), ("text", HF_TEXT_DEFAULTS)):
        given = data.get(f"{tower}_config") or data.get(f"{tower}_config_dict") or {}
        cfg = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        width, heads, act = cfg["hidden_size"], cfg["num_attention_heads"], cfg["hidden_act"]
        if act not in ACTIVATIONS:
            raise ValueError(f"{path}: {tower}_config.hidden_act is {act!r}; vop implements only {ACTIVATIONS}")
        if abs(float(cfg["layer_norm_eps"]) - 1e-5) > 1e-12:
            raise ValueError(f"{path}: {tower}_config.layer_norm_eps is {cfg['layer_norm_eps']}; vop's CLIP "
                             "uses 1e-5 (OpenAI's) and would not reproduce this model")
        if cfg["intermediate_size"] != 4 * width:
            raise ValueError(f"{path}: {tower}_config.intermediate_size {cfg['intermediate_size']} is not "
                             f"4 x hidden_size {width}; vop's CLIP has an MLP ratio of 4")
        if width % heads:
            raise ValueError(f"{path}: {tower}_config.hidden_size {width} is not divisible by "
                             f"num_attention_heads {heads}")
        towers[tower] = (heads, act)
    if towers["vision"][1] != towers["text"][1]:
        raise ValueError(f"{path}: the towers use different activations ({towers['vision'][1]} and "
                         f"{towers['text'][1]}); vop's CLIP uses one for both")
    return Sidecar(towers["vision"][0], towers["text"][0], towers["vision"][1], str(path))


def read_open_clip_config(path: Path) -> Sidecar:
    """Heads and activation of an open_clip hub folder's ``open_clip_config.json``
    (``{"model_cfg": {...}, "preprocess_cfg": {...}}``, or a bare model config)."""
    data = _read_json(path)
    model = data.get("model_cfg", data)
    vision = {**OPEN_CLIP_VISION_DEFAULTS, **model.get("vision_cfg", {})}
    text = {**OPEN_CLIP_TEXT_DEFAULTS, **model.get("text_cfg", {})}
    if vision.get("timm_model_name") or text.get("hf_model_name") or isinstance(vision.get("layers"), list):
        raise ValueError(f"{path}: not a plain ViT CLIP (timm or Hugging Face towers, or a ResNet); vop "
                         "supports OpenAI-style ViT towers only")
    unsupported = [f"{t}_cfg.{k}" for t, cfg in (("vision", vision), ("text", text))
                   for k in ("ls_init_value", "act_kwargs", "norm_kwargs", "attentional_pool", "no_ln_pre",
                             "final_ln_after_pool", "embed_cls", "no_causal_mask")
                   if cfg.get(k) not in (None, False, {})]
    unsupported += [f"{t}_cfg.{k}" for t, cfg in (("vision", vision), ("text", text))
                    for k, default in (("pool_type", {"vision": "tok", "text": "argmax"}[t]),
                                       ("pos_embed_type", "learnable"))
                    if cfg.get(k, default) != default]
    if float(vision["mlp_ratio"]) != 4.0 or float(text["mlp_ratio"]) != 4.0:
        unsupported.append("mlp_ratio")
    if unsupported:
        raise ValueError(f"{path}: options vop's CLIP does not implement: {unsupported}")
    if vision["width"] % vision["head_width"]:
        raise ValueError(f"{path}: vision width {vision['width']} is not a multiple of head_width "
                         f"{vision['head_width']}")
    activation = "quick_gelu" if model.get("quick_gelu", False) else "gelu"
    return Sidecar(vision["width"] // vision["head_width"], int(text["heads"]), activation, str(path))
