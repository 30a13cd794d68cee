"""VoP^C, context-specific prompts: a Context Modeling Module (a 1-layer BiLSTM over the
F frame [CLS] tokens entering the layer, then a linear layer) generates ``generated``
prompt tokens for each frame; with ``shared`` ordinary tokens they make the layer's
prompts. The module is shared across layers; the generated tokens only feed the prompts
(they do not overwrite [CLS])."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vop.methods.bilstm import BiLSTM
from vop.methods.frame_prompts import FramePrompts
from vop.methods.mechanism import Part, check_at_least
from vop.methods.position_prompts import SpecificPromptOptions


@dataclass(frozen=True, kw_only=True)
class ContextPromptOptions(SpecificPromptOptions):
    context_hidden: int | None = None  # BiLSTM hidden size per direction (None: image width)
    context_lr_scale: float = 1.0  # learning-rate multiplier of the context module (BiLSTM + FC)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "context_hidden")
        check_at_least(self, 0, "context_lr_scale")


class ContextPrompts(FramePrompts):
    """``shared``: ``[depth, n_shared, width]``; ``context``: BiLSTM(width -> hidden x 2);
    ``generate``: Linear(2 * hidden -> n_generated * width)."""

    sees_frame_order = True

    def __init__(self, depth: int, num_shared: int, num_generated: int, width: int,
                 hidden: int, init_std: float = 0.02, lr_scale: float = 1.0):
        super().__init__()
        self.depth, self.length = depth, num_shared + num_generated
        self.num_generated = num_generated
        self.shared = nn.Parameter(torch.randn(depth, num_shared, width) * init_std)
        self.context = BiLSTM(width, hidden)  # nn.LSTM's parameters and function; compiles
        self.generate = nn.Linear(2 * hidden, num_generated * width)
        # Generated prompts start at the scale of the learned ones, so that the frozen
        # tower first sees prompts of familiar magnitude.
        nn.init.normal_(self.generate.weight, std=init_std)
        nn.init.zeros_(self.generate.bias)
        self._lr_scale = lr_scale

    def prompts(self, layer: int, cls: torch.Tensor) -> torch.Tensor:
        b, f, width = cls.shape
        # The recurrence is latency-bound and gains nothing from autocast's half precision
        # (benchmarks/context_module.py): run it in its weights' own dtype.
        with torch.autocast(device_type=cls.device.type, enabled=False):
            context = self.context(cls.to(self.context.weight_ih_l0.dtype))  # [B, F, 2 * hidden]
        generated = self.generate(context).view(b * f, self.num_generated, width)
        shared = self.shared[layer].to(generated.dtype).expand(b * f, -1, -1)
        return torch.cat([shared, generated], dim=1)  # [B * F, n, width]

    def lr_scales(self) -> dict[str, float]:
        return {"context.": self._lr_scale, "generate.": self._lr_scale}


def build_context_prompts(clip, cfg: ContextPromptOptions) -> ContextPrompts | None:
    depth = cfg.resolved_depth(cfg.visual_prompt_layers(clip))
    if cfg.visual_prompt_length == 0 or depth == 0:
        return None
    width = clip.config.vision_width
    return ContextPrompts(depth, cfg.shared_prompt_length, cfg.specific_prompt_length, width,
                          cfg.context_hidden or width, cfg.prompt_init_std, cfg.context_lr_scale)


CONTEXT_PROMPTS = Part("context-specific prompts", ContextPromptOptions, build_context_prompts, init_order=2)
