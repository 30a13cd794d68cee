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
        return self.from_logits(logit_scale * text.float() @ video.float().t())  # [N, N]: rows texts

    @staticmethod
    def from_logits(logits: torch.Tensor) -> torch.Tensor:
        """The same loss from a ready ``[N_text, N_video]`` logit matrix whose diagonal holds
        the matched pairs (text-conditioned methods, whose scores are not dot products)."""
        if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
            raise ValueError(f"expected square logits [N, N] (texts x videos), got {tuple(logits.shape)}")
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
