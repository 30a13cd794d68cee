"""Import the ModelScope VoP release (``VoP_msrvtt9k.pth``).

Its layout: ``clip.*`` (an OpenAI ViT-B/32), ``visual_prompt_learner.visual_prompts``
``[12, 1, 8, 768]`` and ``text_prompt_learner.text_prompts`` ``[12, 8, 512]`` (4 prefix +
4 suffix tokens). It becomes method ``vop`` with ``text_prompt_layout="reference"``, which
reproduces that implementation's quirks (captions of 69 ids, suffix prompts before the
last slot of the window, readout at end-of-text + 8); see docs/methods.md.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vop.backbone.convert import unwrap
from vop.backbone.state import from_state_dict, read_file
from vop.model.factory import create

VISUAL_KEY = "visual_prompt_learner.visual_prompts"
TEXT_KEY = "text_prompt_learner.text_prompts"


def import_modelscope(path: str | Path, dtype: torch.dtype = torch.float32, num_frames: int = 12):
    """``VoP_msrvtt9k.pth`` -> a :class:`vop.model.VideoTextModel` (method ``vop``, reference layout)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected the ModelScope release VoP_msrvtt9k.pth)")
    sd = unwrap(read_file(path))
    missing = [k for k in (VISUAL_KEY, TEXT_KEY) if k not in sd]
    if missing or not any(k.startswith("clip.") for k in sd):
        raise ValueError(
            f"{path} is not the ModelScope VoP release: expected keys clip.*, {VISUAL_KEY} and "
            f"{TEXT_KEY}; missing {missing or ['clip.*']}"
        )
    visual, text = sd[VISUAL_KEY], sd[TEXT_KEY]
    clip = from_state_dict({k: v for k, v in sd.items() if k.startswith("clip.")}, name="modelscope-release", dtype=dtype)
    cfg = clip.config
    if visual.ndim != 4 or visual.shape[0] != cfg.vision_layers or visual.shape[-1] != cfg.vision_width:
        raise ValueError(f"{VISUAL_KEY}: expected shape ({cfg.vision_layers}, 1, n, {cfg.vision_width}), "
                         f"found {tuple(visual.shape)}")
    if text.ndim != 3 or text.shape[0] != cfg.transformer_layers or text.shape[-1] != cfg.transformer_width:
        raise ValueError(f"{TEXT_KEY}: expected shape ({cfg.transformer_layers}, n, {cfg.transformer_width}), "
                         f"found {tuple(text.shape)}")
    model = create("vop", clip, num_frames=num_frames, text_prompt_layout="reference",
                   text_prompt_length=text.shape[1], visual_prompt_length=visual.shape[2])
    model.load_trainable_state_dict({
        "text_prompts.prompts": text.to(dtype),
        "frame_prompts.prompts_table": visual[:, 0].to(dtype),
    })
    return model


def export_modelscope(model, path: str | Path) -> None:
    """Write a ``vop`` model in the release layout (for tests and for sharing with users of
    the ModelScope code)."""
    tp, fp = model.text_prompts, model.frame_prompts
    if model.config.method != "vop" or tp is None or fp is None:
        raise ValueError("only method 'vop' with text and visual prompts has a release layout")
    sd = {f"clip.{k}": v for k, v in model.clip.state_dict().items() if k != "token_map"}
    sd[VISUAL_KEY] = fp.prompts_table.detach()[:, None]
    sd[TEXT_KEY] = tp.prompts.detach()
    torch.save(sd, str(path))
