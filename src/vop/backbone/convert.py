"""Turn the state dicts of the checkpoints users bring into OpenAI key names.

Handled layouts: OpenAI (plain or TorchScript), open_clip (the same names, possibly
wrapped in ``{"state_dict": ...}`` with ``module.`` prefixes), Hugging Face ``CLIPModel``
(``vision_model.*`` / ``text_model.*``), and the ModelScope VoP release (``clip.*``).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

# Keys the OpenAI TorchScript archives carry beside the weights.
_OPENAI_EXTRA = ("input_resolution", "context_length", "vocab_size")

_HF_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def unwrap(obj) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a training checkpoint and drop DDP's ``module.``."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            "the checkpoint holds no tensor dictionary; expected a CLIP state dict "
            "(OpenAI, open_clip or Hugging Face names) or a TorchScript CLIP archive"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def is_huggingface(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("vision_model.", "text_model.")) for k in sd)


def from_huggingface(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``CLIPModel`` names -> OpenAI names (q/k/v fused, projections transposed)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.endswith("position_ids"):
            continue  # a buffer, not a weight
        m = re.match(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m:
            tower, idx, part, kind = m.groups()
            base = ("visual.transformer" if tower == "vision" else "transformer") + f".resblocks.{idx}"
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"{base}.attn.in_proj_{kind}", {})[part[-6]] = value
                continue
            if part not in _HF_LAYER:
                raise ValueError(f"unexpected Hugging Face CLIP key {key}")
            out[f"{base}.{_HF_LAYER[part]}.{kind}"] = value
            continue
        simple = {
            "vision_model.embeddings.class_embedding": "visual.class_embedding",
            "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
            "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
            "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
            "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
            "vision_model.post_layernorm.weight": "visual.ln_post.weight",
            "vision_model.post_layernorm.bias": "visual.ln_post.bias",
            "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
            "text_model.embeddings.position_embedding.weight": "positional_embedding",
            "text_model.final_layer_norm.weight": "ln_final.weight",
            "text_model.final_layer_norm.bias": "ln_final.bias",
            "logit_scale": "logit_scale",
        }
        if key in simple:
            out[simple[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()  # HF stores Linear [out, in]
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        else:
            raise ValueError(f"unexpected Hugging Face CLIP key {key}")
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{key}: Hugging Face checkpoint lacks some of q/k/v ({sorted(parts)})")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def to_openai(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout -> OpenAI names, backbone tensors only."""
    sd = unwrap(sd)
    if is_huggingface(sd):
        return from_huggingface(sd)
    if any(k.startswith("clip.") for k in sd):  # the ModelScope VoP release
        sd = {k[len("clip."):]: v for k, v in sd.items() if k.startswith("clip.")}
    return {k: v for k, v in sd.items() if k not in _OPENAI_EXTRA and k != "attn_mask"}


def to_huggingface(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI names -> Hugging Face ``CLIPModel`` names (used by tests and exports)."""
    inverse_simple = {
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    layer_inverse = {v: k for k, v in _HF_LAYER.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in inverse_simple:
            out[inverse_simple[key]] = value
            continue
        if key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
            continue
        if key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
            continue
        m = re.match(r"(visual\.transformer|transformer)\.resblocks\.(\d+)\.(.+)$", key)
        if not m:
            raise ValueError(f"cannot convert {key} to Hugging Face names")
        tower, idx, rest = m.groups()
        base = ("vision_model" if tower.startswith("visual") else "text_model") + f".encoder.layers.{idx}"
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{base}.self_attn.{name}_proj.{kind}"] = part.contiguous()
        else:
            part, kind = rest.rsplit(".", 1)
            out[f"{base}.{layer_inverse[part]}.{kind}"] = value
    return out
