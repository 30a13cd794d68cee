"""The symmetric InfoNCE loss of CLIP-style retrieval training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SymmetricInfoNCE(nn.Module):
    """``(CE(scale * T V^T, diag) + CE(scale * V T^T, diag)) / 2`` over a batch of matched
    (video, caption) pairs. Embeddings are expected L2-normalised; ``logit_scale`` is the
    already exponentiated CLIP temperature."""

    def forward(self, video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        if video.shape != text.shape:
            raise ValueError(f"video {tuple(video.shape)} and text {tuple(text.shape)} embeddings must pair up")
        logits = logit_scale * text.float() @ video.float().t()  # [N, N]: rows texts, columns videos
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
