"""CLIP architectures as data: a typed config per backbone, the named ones, and inference
of the config from a checkpoint's tensors (OpenAI key names).

Two things tensors cannot tell are recorded here explicitly: the number of attention heads
(the tables :data:`VISION_HEADS` and the 64-wide rule) and the MLP activation (OpenAI's
``quick_gelu`` or the exact ``gelu`` of every open_clip model trained outside OpenAI).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Mapping

import torch


@dataclass(frozen=True)
class CLIPConfig:
    """Shape of a ViT CLIP. Field names follow OpenAI's ``build_model``."""

    embed_dim: int  # joint embedding size (output of both projections)
    image_resolution: int  # input side in pixels
    vision_layers: int  # image-tower blocks
    vision_width: int  # image-tower token width
    vision_patch_size: int  # pixels per patch side
    context_length: int  # text window in tokens (77 for CLIP)
    vocab_size: int  # rows of the token embedding
    transformer_width: int  # text-tower token width
    transformer_heads: int  # text-tower attention heads
    transformer_layers: int  # text-tower blocks
    vision_heads: int = 0  # 0 means the known heads of this width (default_vision_heads)
    name: str = "custom"  # architecture name, recorded in checkpoints
    activation: str = "quick_gelu"  # MLP activation: OpenAI's "quick_gelu" or exact "gelu"

    def __post_init__(self) -> None:
        if self.vision_heads == 0:
            object.__setattr__(self, "vision_heads", default_vision_heads(self.vision_width))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"CLIPConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r} "
                             "(OpenAI CLIP uses quick_gelu; open_clip models trained elsewhere use gelu)")
        for field_name in ("embed_dim", "image_resolution", "vision_layers", "vision_width",
                           "vision_patch_size", "context_length", "vocab_size",
                           "transformer_width", "transformer_heads", "transformer_layers"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"CLIPConfig.{field_name} must be positive, got {getattr(self, field_name)}")
        if self.image_resolution % self.vision_patch_size:
            raise ValueError(
                f"image_resolution {self.image_resolution} is not a multiple of the patch size "
                f"{self.vision_patch_size}"
            )
        if self.vision_width % self.vision_heads or self.transformer_width % self.transformer_heads:
            raise ValueError("token widths must be divisible by the number of heads")

    @property
    def grid_size(self) -> int:
        return self.image_resolution // self.vision_patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def to_dict(self) -> dict:
        """The fields as a dict. ``activation`` is left out when it is the default
        ``quick_gelu``: checkpoints written before the field existed record the same dict,
        so their architecture check still matches."""
        data = asdict(self)
        if data["activation"] == "quick_gelu":
            del data["activation"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "CLIPConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CLIPConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)  # a dict without "activation" is a QuickGELU model (the default)


ACTIVATIONS = ("quick_gelu", "gelu")

# Heads of the image towers whose width alone would mislead: OpenAI's towers use 64-wide
# heads (768 -> 12, 1024 -> 16), the larger open_clip towers do not (H/14: 16 heads of 80,
# g/14: 16 of 88, bigG/14: 16 of 104). Any other width falls back to 64-wide heads.
VISION_HEADS = {768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}


def default_vision_heads(width: int) -> int:
    """Attention heads of an image tower of ``width`` when nothing else says (see VISION_HEADS)."""
    return VISION_HEADS.get(width, max(1, width // 64))


def default_text_heads(width: int) -> int:
    """Attention heads of a text tower of ``width``: every released CLIP text tower uses 64-wide
    heads (512 -> 8, 768 -> 12, 1024 -> 16, bigG's 1280 -> 20)."""
    return max(1, width // 64)


_OPENAI_TEXT = dict(context_length=77, vocab_size=49408)

ARCHITECTURES: dict[str, CLIPConfig] = {
    "ViT-B-32": CLIPConfig(512, 224, 12, 768, 32, transformer_width=512, transformer_heads=8,
                           transformer_layers=12, name="ViT-B-32", **_OPENAI_TEXT),
    "ViT-B-16": CLIPConfig(512, 224, 12, 768, 16, transformer_width=512, transformer_heads=8,
                           transformer_layers=12, name="ViT-B-16", **_OPENAI_TEXT),
    "ViT-L-14": CLIPConfig(768, 224, 24, 1024, 14, transformer_width=768, transformer_heads=12,
                           transformer_layers=12, name="ViT-L-14", **_OPENAI_TEXT),
    "ViT-L-14-336": CLIPConfig(768, 336, 24, 1024, 14, transformer_width=768, transformer_heads=12,
                               transformer_layers=12, name="ViT-L-14-336", **_OPENAI_TEXT),
    # open_clip's ViT-H-14 (LAION-2B): 16 heads of 80 in the image tower, exact GELU.
    "ViT-H-14": CLIPConfig(1024, 224, 32, 1280, 14, transformer_width=1024, transformer_heads=16,
                           transformer_layers=24, vision_heads=16, name="ViT-H-14", activation="gelu",
                           **_OPENAI_TEXT),
    # For tests: the full BPE vocabulary (so the real tokenizer works), a few thin layers,
    # and OpenAI's head rule (width // 64) so that its checkpoints re-load by inference.
    "tiny": CLIPConfig(64, 32, 3, 128, 16, context_length=32, vocab_size=49408,
                       transformer_width=128, transformer_heads=2, transformer_layers=2, name="tiny"),
    # The shape of the shipped pretrained ``tiny-synthetic`` model (64 px, 16 px patches:
    # 17 image tokens; 32 text positions hold a 22-token caption plus 8 text prompts).
    # Listed with the full BPE vocabulary so random weights work with the real
    # tokenizer; the shipped checkpoint keeps only its world's tokens (``vocab_size`` is
    # then the reduced row count and a ``token_map`` maps BPE ids to rows).
    "tiny-synthetic-arch": CLIPConfig(256, 64, 6, 192, 16, context_length=32, vocab_size=49408,
                                      transformer_width=192, transformer_heads=3, transformer_layers=4,
                                      name="tiny-synthetic-arch"),
}


def _count_blocks(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def infer_config(state_dict: Mapping[str, torch.Tensor], name: str = "custom",
                 vision_heads: int = 0, transformer_heads: int = 0,
                 activation: str = "quick_gelu") -> CLIPConfig:
    """Infer a ViT CLIP's shape from its tensors (OpenAI names).

    Heads and the activation cannot be read from tensors: heads come from the arguments,
    else from the known widths (:func:`default_vision_heads`, :func:`default_text_heads`);
    the activation is taken as given. A ResNet CLIP is refused: only ViT image towers are
    implemented.
    """
    if any(k.startswith("visual.layer1.") for k in state_dict):
        raise ValueError(
            "this is a ResNet CLIP checkpoint (it has visual.layer1.*); vop supports only ViT "
            "backbones (ViT-B-32, ViT-B-16, ViT-L-14 or compatible)"
        )
    required = ["visual.conv1.weight", "visual.positional_embedding", "text_projection",
                "positional_embedding", "token_embedding.weight", "ln_final.weight"]
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise ValueError(
            f"not a CLIP ViT state dict: missing {missing[:4]} (expected OpenAI key names such as "
            f"visual.conv1.weight, token_embedding.weight; found e.g. {list(state_dict)[:4]})"
        )
    conv = state_dict["visual.conv1.weight"]  # [width, 3, patch, patch]
    vision_width, patch = conv.shape[0], conv.shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    width = state_dict["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=patch * grid,
        vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=width,
        transformer_heads=transformer_heads or default_text_heads(width),
        transformer_layers=_count_blocks(state_dict, "transformer.resblocks."),
        vision_heads=vision_heads,
        name=name,
        activation=activation,
    )


def match_architecture(cfg: CLIPConfig) -> str | None:
    """The name of the known architecture with exactly this shape, if any (the activation
    is not part of the name: open_clip's LAION ViT-B-32 is OpenAI's shape with exact GELU)."""
    for name, known in ARCHITECTURES.items():
        if replace(known, name="", activation=cfg.activation) == replace(cfg, name=""):
            return name
    return None


def named_config(name: str, **overrides) -> CLIPConfig:
    """A named architecture, optionally with fields overridden."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return replace(ARCHITECTURES[name], **overrides) if overrides else ARCHITECTURES[name]
