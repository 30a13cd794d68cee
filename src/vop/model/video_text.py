"""The video-text model: a frozen CLIP plus a tuning method's small modules.

Videos: every frame goes through the (prompted) image tower, frame embeddings are
L2-normalised, mean-pooled over frames and normalised again. For VoP^F the last
``K - K_s`` layers regroup a video's frames into one joint sequence. Captions go through
the (prompted) text tower. ``forward`` returns both embeddings and the logit scale; the
loss lives in :mod:`vop.train`.

The peers (docs/peers.md): a temporal head (role ``head``, CLIP4Clip) runs on the
per-frame embeddings before the mean; a text-conditioned pooling (role ``pool``, X-Pool)
makes scores pairwise (:meth:`VideoTextModel.score`; ``text_conditioned``); a video-level
tower (role ``tower``, DGL) replaces both towers' forward passes.
"""

from __future__ import annotations

from typing import Sequence

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
from vop.methods.mechanism import ROLES, Mechanism
from vop.methods.text_prompts import DeepTextPrompts
from vop.model import rows


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

    def __init__(self, clip: CLIP, config: MethodConfig, mechanisms: Sequence[Mechanism] = ()):
        super().__init__()
        self.clip = clip
        self.config = config
        self._by_role: dict[str, Mechanism] = {}
        for mechanism in mechanisms:
            if mechanism.role not in ROLES:
                raise ValueError(f"{type(mechanism).__name__}: unknown role {mechanism.role!r}; roles: {ROLES}")
            if mechanism.role in self._by_role or mechanism.slot in self._modules:
                raise ValueError(f"method {config.method!r} has two mechanisms for role {mechanism.role!r} "
                                 f"(slot {mechanism.slot!r})")
            self._modules[mechanism.slot] = mechanism  # not add_module: the role properties share its names
            self._by_role[mechanism.role] = mechanism
        self.mechanisms: tuple[Mechanism, ...] = tuple(mechanisms)
        self.gradient_checkpointing = False
        # With gradient checkpointing on: recompute only the first N image-tower blocks
        # (None: every block of both towers). Activations are spread evenly over the image
        # blocks, so N trades memory for time about linearly.
        self.checkpoint_image_blocks: int | None = None
        # Skip work whose result nobody reads (exact; see vop.model.rows). False runs the
        # plain full sequences, the reference the tests compare with.
        self.skip_unread_tokens = True
        # The backbone tensors this method trains, by name. A CLIP may be shared by several
        # models (a search server, the trainer's best-checkpoint evaluation): each model
        # keeps its own selection and claims it again when put in training mode.
        self._trains_clip = frozenset(name for name, _ in clip.named_parameters()
                                      if any(m.selects(name) for m in self.mechanisms))
        self._claim_backbone()

    def _claim_backbone(self) -> None:
        for name, param in self.clip.named_parameters():
            param.requires_grad_(name in self._trains_clip)

    def train(self, mode: bool = True) -> "VideoTextModel":
        if mode:
            self._claim_backbone()
        return super().train(mode)

    # -- the mechanisms, by the role they play in the forward pass -------------------------
    def mechanism(self, role: str) -> Mechanism | None:
        """The mechanism playing ``role`` (``vop.methods.mechanism.ROLES``), or None."""
        return self._by_role.get(role)

    @property
    def text_prompts(self) -> DeepTextPrompts | None:
        return self._by_role.get("text")

    @property
    def frame_prompts(self) -> FramePrompts | None:
        return self._by_role.get("frame")

    @property
    def joint(self) -> JointFrames | None:
        return self._by_role.get("joint")

    @property
    def adapters(self) -> Adapters | None:
        return self._by_role.get("hooks")

    @property
    def head(self) -> Mechanism | None:
        """The temporal head between per-frame embeddings and pooling (``head`` option)."""
        return self._by_role.get("head")

    @property
    def pool(self) -> Mechanism | None:
        """The text-conditioned pooling (X-Pool), or None: mean pooling."""
        return self._by_role.get("pool")

    @property
    def tower(self) -> Mechanism | None:
        """A video-level tower replacing both towers' forward passes (DGL), or None."""
        return self._by_role.get("tower")

    @property
    def text_conditioned(self) -> bool:
        """Whether a video's score depends on the caption beyond one dot product (X-Pool):
        then :meth:`score` / :meth:`score_features` give the true scores, and
        :meth:`encode_video` only a text-independent (mean-pooled) embedding for recall."""
        return self.pool is not None

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def num_frames(self) -> int | None:
        """The frame count the method's parameters were built for, or None if any works."""
        for module in (self.frame_prompts, self.joint, self.tower):
            if module is not None and getattr(module, "num_frames", None) is not None:
                return module.num_frames
        return None

    @property
    def sees_frame_order(self) -> bool:
        """Whether the video embedding can depend on frame order. When False, frames are
        encoded independently and mean-pooled, so a video and its time reversal embed
        identically."""
        if self.tower is not None:
            return self.tower.sees_frame_order
        return (self.joint is not None or self.head is not None
                or bool(self.frame_prompts is not None and self.frame_prompts.sees_frame_order))

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The method's tensors and the backbone tensors it trains (``clip.*``), by name."""
        return {n: p for n, p in self.named_parameters()
                if (n[5:] in self._trains_clip if n.startswith("clip.") else p.requires_grad)}

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
        for mechanism in self.mechanisms:
            scales.update({f"{mechanism.slot}.{k}": v for k, v in mechanism.lr_scales().items()})
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in self.trainable_parameters().items():
            scale = next((s for k, s in scales.items() if name.startswith(k)), 1.0)
            groups.setdefault(scale, []).append(param)
        return [{"params": ps, "lr_scale": s} for s, ps in groups.items()]

    # -- text --------------------------------------------------------------------------
    @property
    def caption_length(self) -> int:
        """Token ids per caption this model expects."""
        if self.tower is not None:
            return self.tower.caption_length
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

    def _run(self, block: nn.Module, x: torch.Tensor, tower: str, layer: int, unread: slice | None = None,
             **kwargs) -> tuple[torch.Tensor, bool]:
        """One block, with the adapters' hooks, skipping the ``unread`` rows when allowed.
        Returns the output and whether those rows were dropped from it."""
        if self.adapters is not None:
            kwargs.update(self.adapters.hooks(tower, layer))
        drop = unread is not None and self.skip_unread_tokens
        if drop:
            kwargs["drop"] = unread
        x = self._block(block, x, image_layer=layer if tower == "visual" else None, **kwargs)
        return x, drop

    def encode_text(self, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Token ids ``[N, caption_length]`` -> embeddings ``[N, D]``."""
        clip, tp = self.clip, self.text_prompts
        if ids.ndim != 2:
            raise ValueError(f"expected token ids (N, L), got shape {tuple(ids.shape)}")
        if self.tower is not None:
            emb = self.tower.encode_text(clip, ids)
            return F.normalize(emb, dim=-1) if normalize else emb
        x = clip.embed_tokens(ids)  # [N, L, w]
        if tp is not None:
            x = tp.insert(x)  # [N, context, w]
        elif ids.shape[1] > clip.config.context_length:
            raise ValueError(f"token ids of length {ids.shape[1]} exceed the context length {clip.config.context_length}")
        x = x + clip.positional_embedding[: x.shape[1]].to(x.dtype)
        readout = tp.readout(ids) if tp is not None else ids.argmax(dim=-1)
        if self.skip_unread_tokens:
            x = rows.text_window(x, readout, tp.num_suffix if tp is not None else 0)
        for i, block in enumerate(clip.text_blocks):
            if tp is not None and i > 0:
                x = tp.replace(x, i)  # this layer's prompts take the prompt slots
            x, _ = self._run(block, x, "text", i, causal=True)
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
        """``[B, F, 3, H, W]`` -> per-frame embeddings ``[B, F, D]`` (unnormalised).

        Layers ``0 .. K_s - 1`` see each frame alone, with that layer's frame prompts after
        [CLS]; layers ``K_s .. K - 1`` (VoP^F only) see a video's frames as one sequence with
        the video prompts. Each frame's embedding is its [CLS] through the head."""
        self._check_frames(frames)
        if self.tower is not None:
            raise ValueError(f"method {self.config.method!r} encodes a video as one sequence and reads its "
                             "embedding from a global token: it has no per-frame embeddings; call "
                             "encode_video (or frame_features, which gives that embedding as one 'frame')")
        b, f = frames.shape[:2]
        visual, fp, joint = self.clip.visual, self.frame_prompts, self.joint
        blocks = visual.blocks
        intra = joint.intra_layers if joint is not None else len(blocks)
        depth = fp.depth if fp is not None else 0
        x = visual.embed(frames.flatten(0, 1))  # [B*F, 1+P, w]
        n = 0  # prompt rows after [CLS]
        for i in range(intra):
            if i < depth:
                cls = x[:, 0].view(b, f, -1)  # [B, F, w]: the layer's input [CLS] per frame
                x = _splice(x, fp.prompts(i, cls), n)  # [B*F, 1+n+P, w]
                n = fp.length
            if i == 0:
                x = visual.ln_pre(x)  # prompts of layer 0 pass ln_pre too (reference)
            unread = rows.intra_frame(i, num_layers=len(blocks), intra_layers=intra, num_prompts=n,
                                      prompt_depth=depth)
            x, dropped = self._run(blocks[i], x, "visual", i, unread)
            if dropped:
                n = 0
        if joint is None or intra == len(blocks):  # K_s = K is plain VoP: no regrouping
            return visual.head(x[:, 0]).view(b, f, -1)
        if intra == 0:
            x = visual.ln_pre(x)
        x = _splice(x, None, n)  # drop the intra-frame prompts: [B*F, 1+P, w]
        cls, patches = joint.group(x, b)  # [B, F, w], [B, F*P, w]: frame positions added
        for j, i in enumerate(range(intra, len(blocks))):
            unread = rows.joint(i, num_layers=len(blocks), num_frames=f, num_prompts=joint.length)
            x, dropped = self._run(blocks[i], joint.sequence(j, cls, patches), "visual", i, unread)
            cls, patches = joint.split(x, f, with_prompts=not dropped)
        return visual.head(cls)  # [B, F, D]

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, F, 3, H, W]`` -> the per-frame features :meth:`score_features` pools,
        ``[B, F', D]`` (unnormalised): the frame embeddings after the temporal head, if any.
        These are what a search index stores beside the embeddings for re-ranking with a
        text-conditioned method. For a video-level tower (DGL) they are its video
        embedding as a single frame, ``[B, 1, D]``."""
        if self.tower is not None:
            self._check_frames(frames)
            return self.tower.encode_video(self.clip, frames).unsqueeze(1)
        feats = self.encode_frames(frames)  # [B, F, D]
        return feats if self.head is None else self.head(feats)

    @staticmethod
    def mean_pool(frame_feats: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Per-frame features ``[B, F, D]`` -> ``[B, D]``: mean of the L2-normalised frames."""
        frame_emb = F.normalize(frame_feats, dim=-1)  # [B, F, D]
        # The mean as a sum of (frame j + frame F-1-j): float addition is commutative, so
        # a video and its time reversal pool to bitwise the same embedding (order-blind
        # methods then score exactly 50 % pair accuracy, not 50 % +- rounding noise).
        emb = (frame_emb + frame_emb.flip(1)).sum(dim=1) / (2 * frame_emb.shape[1])
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_video(self, frames: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Frames ``[B, F, 3, H, W]`` -> video embeddings ``[B, D]``: mean of the L2-normalised
        frame features (after the temporal head, if any), L2-normalised; for a video-level
        tower (DGL), its global token. For a text-conditioned method (X-Pool) this is the
        text-independent mean used for recall; its scores come from :meth:`score`."""
        if self.tower is not None:
            self._check_frames(frames)
            emb = self.tower.encode_video(self.clip, frames)
            return F.normalize(emb, dim=-1) if normalize else emb
        return self.mean_pool(self.frame_features(frames), normalize)

    # -- pairwise scores -----------------------------------------------------------------
    def text_features(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> the caption features :meth:`score_features` takes, ``[N, D]``
        (unnormalised: X-Pool's pooling reads the raw text embedding)."""
        return self.encode_text(ids, normalize=False)

    def score_features(self, text: torch.Tensor, frame_feats: torch.Tensor, chunk: int | None = 256
                       ) -> torch.Tensor:
        """Similarities ``[N_text, N_video]`` from :meth:`text_features` ``[N_t, D]`` and
        :meth:`frame_features` ``[N_v, F, D]``: cosine of caption and pooled video.

        Independent methods: the dot products of the normalised embeddings (``encode_text @
        encode_video.T``). Text-conditioned (X-Pool): each caption pools each video's frames;
        videos go ``chunk`` at a time, so no tensor over ``chunk x N_t x D`` elements is
        alive at once (None: all at once). Differentiable (the trainer's loss can use it)."""
        if text.ndim != 2 or frame_feats.ndim != 3 or text.shape[-1] != frame_feats.shape[-1]:
            raise ValueError(f"expected text features (N_t, D) and frame features (N_v, F, D), got "
                             f"{tuple(text.shape)} and {tuple(frame_feats.shape)}")
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be a positive number of videos (or None), got {chunk}")
        if self.pool is not None:
            return self.pool.score(text, frame_feats, chunk=chunk or max(1, frame_feats.shape[0]))
        return F.normalize(text, dim=-1) @ self.mean_pool(frame_feats).T

    def score(self, ids: torch.Tensor, frames: torch.Tensor, chunk: int | None = 256) -> torch.Tensor:
        """Captions (ids ``[N_t, L]`` from :meth:`tokenize`) x videos (``[N_v, F, 3, H, W]``)
        -> similarities ``[N_t, N_v]`` (before the logit scale), for every method."""
        return self.score_features(self.text_features(ids), self.frame_features(frames), chunk=chunk)

    def forward(self, frames: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (video ``[B, D]``, text ``[N, D]``, logit scale (a scalar, already exponentiated)).

        For a text-conditioned method the video embedding is the text-independent mean;
        its training loss uses ``logit_scale * model.score(ids, frames)`` (t2v rows)."""
        # Text first: its length trim reads the ids' largest read-out position, a device sync
        # that is free before the image tower's kernels are queued and a stall after them.
        text = self.encode_text(ids)
        return self.encode_video(frames), text, self.clip.logit_scale.exp()
