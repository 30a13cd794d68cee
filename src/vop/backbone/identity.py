"""A backbone's identity: its architecture and a fingerprint of its weights, recorded in
every method checkpoint and search index so prompts are never applied to the wrong CLIP."""

from __future__ import annotations

import hashlib

import torch

from vop.backbone.clip import CLIP


@torch.no_grad()
def fingerprint(clip: CLIP, samples_per_tensor: int = 4096) -> str:
    """A short stable hash of the backbone's weights.

    Hashing every byte of ViT-L/14 takes seconds, so each tensor contributes its name,
    shape and an evenly strided sample of its values (in fp32, so a fp16 copy of the same
    weights hashes differently only through rounding). Any retrained or different CLIP
    changes the sampled values.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(clip.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step].to(torch.float32 if flat.is_floating_point() else torch.int64).cpu()
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def identity(clip: CLIP) -> dict:
    """``{"architecture": {...CLIPConfig...}, "fingerprint": "..."}``."""
    return {"architecture": clip.config.to_dict(), "fingerprint": fingerprint(clip)}
