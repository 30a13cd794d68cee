"""Skipping rows nobody reads: an exact optimisation of the forward pass, kept apart from
the prompt logic of :mod:`vop.model.video_text`.

A transformer block's output rows are only worth computing when a later step reads them.
Three kinds are never read:

- a layer's prompt rows when the next layer replaces them with its own prompts (deep
  prompts), or when the joint layers drop the intra-frame prompts;
- every row but [CLS] in the last image block (only [CLS] feeds the head);
- the text slots after the last read-out position (the text mask is causal, so the
  read-out slot never sees them; not for the reference layout, whose suffix prompts sit at
  the window's end).

Each function returns the ``slice`` of rows a block may skip (the block still computes keys
and values for every row), or None. ``VideoTextModel.skip_unread_tokens = False`` ignores
them and runs the plain full sequences, the reference the tests compare with.
"""

from __future__ import annotations

import torch


def intra_frame(layer: int, *, num_layers: int, intra_layers: int, num_prompts: int,
                prompt_depth: int) -> slice | None:
    """Rows of intra-frame layer ``layer`` (``[cls, prompts (num_prompts), patches]``) that
    nobody reads. ``intra_layers == num_layers`` means frames never regroup (plain VoP)."""
    if intra_layers == num_layers and layer == num_layers - 1:
        return slice(1, None)  # the last block: only [CLS] is read
    replaced_next = layer + 1 < prompt_depth  # the next layer brings its own prompts
    if num_prompts and (layer == intra_layers - 1 or replaced_next):
        return slice(1, 1 + num_prompts)
    return None


def joint(layer: int, *, num_layers: int, num_frames: int, num_prompts: int) -> slice | None:
    """Rows of joint layer ``layer`` (``[cls x F, video prompts (num_prompts), patches]``)
    that nobody reads: the video prompts (the next joint layer replaces them), and after the
    last layer everything but the frames' [CLS] rows."""
    if layer == num_layers - 1:
        return slice(num_frames, None)
    return slice(num_frames, num_frames + num_prompts) if num_prompts else None


def text_window(x: torch.Tensor, readout: torch.Tensor, num_suffix_prompts: int) -> torch.Tensor:
    """Token rows ``[N, L, w]`` up to the last read-out slot (captions are short; the window
    is 77). The ``int()`` is a device sync, cheap before the image tower's kernels are queued."""
    if num_suffix_prompts or not len(readout):
        return x
    return x[:, : int(readout.max()) + 1]
