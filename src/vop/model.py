"""The video-text model: a frozen CLIP plus a tuning method's small modules.

Videos: every frame goes through the (prompted) image tower, frame embeddings are
L2-normalised, mean-pooled over frames and normalised again. For VoP^F the last
``K - K_s`` layers regroup a video's frames into one joint sequence. Captions go through
the (prompted) text tower. ``forward`` returns both embeddings and the logit scale; the
loss lives in :mod:`vop.train`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vop.backbone.clip import CLIP
from vop.backbone.tokenizer import tokenize
from vop.methods.adapters import Adapters
from vop.methods.config import MethodConfig
from vop.methods.frame_prompts import FramePrompts
from vop.methods.function_prompts import JointFrames
from vop.methods.text_prompts import DeepTextPrompts


def _splice(x: torch.Tensor, prompts: torch.Tensor | None, num_old: int) -> torch.Tensor:
    """``[cls, old prompts (num_old), rest]`` -> ``[cls, prompts, rest]`` in one copy."""
    if prompts is None:
        return x if num_old == 0 else torch.cat([x[:, :1], x[:, 1 + num_old:]], dim=1)
    return torch.cat([x[:, :1], prompts.to(x.dtype), x[:, 1 + num_old:]], dim=1)


class VideoTextModel(nn.Module):
    """``encode_video(frames [B, F, 3, H, W]) -> [B, D]``, ``encode_text(ids [N, L]) -> [N, D]``
    (both L2-normalised) and ``forward(frames, ids) -> (video, text, logit_scale)``.

    Trainable tensors: the method's modules (``text_prompts.*``, ``frame_prompts.*``,
    ``joint.*``, ``adapters.*``) and, for the subset baselines, chosen ``clip.*`` tensors.
    Everything else in ``clip`` is frozen (``requires_grad=False``).
    """

    def __init__(self, clip: CLIP, config: MethodConfig, *, text_prompts: DeepTextPrompts | None = None,
                 frame_prompts: FramePrompts | None = None, joint: JointFrames | None = None,
                 adapters: Adapters | None = None, backbone_trainable: Callable[[str], bool] | None = None):
        super().__init__()
        self.clip = clip
        self.config = config
        self.text_prompts = text_prompts
        self.frame_prompts = frame_prompts
        self.joint = joint
        self.adapters = adapters
        self.gradient_checkpointing = False
        # With gradient checkpointing on: recompute only the first N image-tower blocks
        # (None: every block of both towers). Activations are spread evenly over the image
        # blocks, so N trades memory for time about linearly.
        self.checkpoint_image_blocks: int | None = None
        # Skip work whose result nobody reads (exact; False runs the plain full sequences,
        # the reference the tests compare with): a layer's prompt rows when the next layer
        # replaces them, every row but [CLS] in the last image block, and the text slots
        # after the last read-out position (the mask is causal).
        self.skip_unread_tokens = True
        select = backbone_trainable or (lambda name: False)
        for name, param in clip.named_parameters():
            param.requires_grad_(select(name))

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def num_frames(self) -> int | None:
        """The frame count the method's parameters were built for, or None if any works."""
        for module in (self.frame_prompts, self.joint):
            if module is not None and module.num_frames is not None:
                return module.num_frames
        return None

    @property
    def sees_frame_order(self) -> bool:
        """Whether the video embedding can depend on frame order. When False, frames are
        encoded independently and mean-pooled, so a video and its time reversal embed
        identically."""
        return self.joint is not None or bool(self.frame_prompts is not None and self.frame_prompts.sees_frame_order)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The method's checkpoint: trainable tensors only, detached."""
        return {n: p.detach() for n, p in self.trainable_parameters().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by :meth:`trainable_state_dict`; names and shapes must match."""
        own = self.trainable_parameters()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(
                f"checkpoint does not fit method {self.config.method!r}: missing {missing[:5]}, "
                f"unexpected {extra[:5]}"
            )
        for name, param in own.items():
            if state[name].shape != param.shape:
                raise ValueError(
                    f"{name}: the checkpoint holds shape {tuple(state[name].shape)} but this model "
                    f"(backbone {self.clip.config.name}) expects {tuple(param.shape)}"
                )
        with torch.no_grad():
            for name, param in own.items():
                param.copy_(state[name])

    def parameter_groups(self) -> list[dict]:
        """Trainable parameters grouped by learning-rate multiplier (``lr_scale``)."""
        scales: dict[str, float] = {}
        for prefix, module in (("frame_prompts.", self.frame_prompts), ("joint.", self.joint)):
            if module is not None:
                scales.update({prefix + k: v for k, v in module.lr_scales().items()})
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in self.trainable_parameters().items():
            scale = next((s for k, s in scales.items() if name.startswith(k)), 1.0)
            groups.setdefault(scale, []).append(param)
        return [{"params": ps, "lr_scale": s} for s, ps in groups.items()]

    # -- text --------------------------------------------------------------------------
    @property
    def caption_length(self) -> int:
        """Token ids per caption this model expects."""
        if self.text_prompts is not None:
            return self.text_prompts.caption_length
        return self.clip.config.context_length

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Captions -> ids ``[N, caption_length]`` for this model's text window."""
        return tokenize(texts, context_length=self.caption_length)

    def _block(self, block: nn.Module, x: torch.Tensor, image_layer: int | None = None, **kwargs) -> torch.Tensor:
        limit = self.checkpoint_image_blocks
        recompute = self.gradient_checkpointing and torch.is_grad_enabled() and (
            limit is None or (image_layer is not None and image_layer < limit))
        if recompute:
            return checkpoint(block, x, use_reentrant=False, **kwargs)
        return block(x, **kwargs)

    def _drop(self, rows: slice) -> dict:
        return {"drop": rows} if self.skip_unread_tokens else {}

    def _hooks(self, tower: str, layer: int) -> dict:
        return self.adapters.hooks(tower, layer) if self.adapters is not None else {}

    def encode_text(self, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Token ids ``[N, caption_length]`` -> embeddings ``[N, D]``."""
        clip, tp = self.clip, self.text_prompts
        if ids.ndim != 2:
            raise ValueError(f"expected token ids (N, L), got shape {tuple(ids.shape)}")
        x = clip.embed_tokens(ids)  # [N, L, w]
        if tp is not None:
            x = tp.insert(x)  # [N, context, w]
        elif ids.shape[1] > clip.config.context_length:
            raise ValueError(f"token ids of length {ids.shape[1]} exceed the context length {clip.config.context_length}")
        x = x + clip.positional_embedding[: x.shape[1]].to(x.dtype)
        readout = tp.readout(ids) if tp is not None else ids.argmax(dim=-1)
        if self.skip_unread_tokens and (tp is None or tp.num_suffix == 0) and len(readout):
            # Causal attention: the read-out slot never sees later slots, so they can go
            # (captions are short; the window is 77). Not for the reference layout, whose
            # suffix prompts sit at the window's end.
            x = x[:, : int(readout.max()) + 1]
        for i, block in enumerate(clip.text_blocks):
            if tp is not None and i > 0:
                x = tp.replace(x, i)
            x = self._block(block, x, causal=True, **self._hooks("text", i))
        emb = clip.text_head(x, readout)
        return F.normalize(emb, dim=-1) if normalize else emb

    # -- video -------------------------------------------------------------------------
    def _check_frames(self, frames: torch.Tensor) -> None:
        res = self.clip.config.image_resolution
        if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[-2:] != (res, res):
            raise ValueError(
                f"expected frames (B, F, 3, H, W) with H = W = {res} (normalised float pixels), "
                f"got shape {tuple(frames.shape)}"
            )
        expected = self.num_frames
        if expected is not None and frames.shape[1] != expected:
            raise ValueError(
                f"method {self.config.method!r} was built for {expected} frames (its parameters "
                f"have one entry per frame position) but got {frames.shape[1]}; sample {expected} "
                f"frames or create the method with num_frames={frames.shape[1]}"
            )

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, F, 3, H, W]`` -> per-frame embeddings ``[B, F, D]`` (unnormalised)."""
        self._check_frames(frames)
        b, f = frames.shape[:2]
        visual, fp, joint = self.clip.visual, self.frame_prompts, self.joint
        blocks = visual.blocks
        intra = joint.intra_layers if joint is not None else len(blocks)
        x = visual.embed(frames.flatten(0, 1))  # [B*F, 1+P, w]
        per_frame_only = joint is None or intra == len(blocks)  # K_s = K is plain VoP
        num_prompts = 0
        for i in range(intra):
            if fp is not None and i < fp.depth:
                cls = x[:, 0].view(b, f, -1)  # [B, F, w]: the layer's input [CLS] per frame
                x = _splice(x, fp.prompts(i, cls), num_prompts)  # [B*F, 1+n+P, w]
                num_prompts = fp.length
            if i == 0:
                x = visual.ln_pre(x)  # prompts of layer 0 pass ln_pre too (reference)
            # Rows nobody reads: all but [CLS] after the last block; the prompt rows when
            # the next layer replaces them or the joint layers drop them.
            unread = None
            if per_frame_only and i == len(blocks) - 1:
                unread = slice(1, None)
            elif num_prompts and (i == intra - 1 or (fp is not None and i + 1 < fp.depth)):
                unread = slice(1, 1 + num_prompts)
            kwargs = self._drop(unread) if unread is not None else {}
            x = self._block(blocks[i], x, image_layer=i, **kwargs, **self._hooks("visual", i))
            if "drop" in kwargs:
                num_prompts = 0
        if per_frame_only:
            return visual.head(x[:, 0]).view(b, f, -1)
        if intra == 0:
            x = visual.ln_pre(x)
        x = _splice(x, None, num_prompts)  # drop the intra-frame prompts: [B*F, 1+P, w]
        cls, patches = joint.group(x, b)  # [B, F, w], [B, F*P, w]
        n = joint.length
        for j, i in enumerate(range(intra, len(blocks))):
            last = i == len(blocks) - 1
            # The next joint layer replaces the video prompts; after the last only [CLS] is read.
            kwargs = self._drop(slice(f, None) if last else slice(f, f + n)) if (last or n) else {}
            x = self._block(blocks[i], joint.sequence(j, cls, patches), image_layer=i, **kwargs,
                            **self._hooks("visual", i))
            cls, patches = joint.split(x, f, with_prompts="drop" not in kwargs)
        return visual.head(cls)  # [B, F, D]

    def encode_video(self, frames: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Frames ``[B, F, 3, H, W]`` -> video embeddings ``[B, D]``: mean of the L2-normalised
        frame embeddings, L2-normalised."""
        frame_emb = F.normalize(self.encode_frames(frames), dim=-1)  # [B, F, D]
        # The mean as a sum of (frame j + frame F-1-j): float addition is commutative, so
        # a video and its time reversal pool to bitwise the same embedding (order-blind
        # methods then score exactly 50 % pair accuracy, not 50 % +- rounding noise).
        emb = (frame_emb + frame_emb.flip(1)).sum(dim=1) / (2 * frame_emb.shape[1])
        return F.normalize(emb, dim=-1) if normalize else emb

    def forward(self, frames: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (video ``[B, D]``, text ``[N, D]``, logit scale (a scalar, already exponentiated))."""
        # Text first: its length trim reads the ids' largest read-out position, a device sync
        # that is free before the image tower's kernels are queued and a stall after them.
        text = self.encode_text(ids)
        return self.encode_video(frames), text, self.clip.logit_scale.exp()
