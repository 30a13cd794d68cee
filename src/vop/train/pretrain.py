"""Pretraining the shipped tiny CLIP (``tiny-synthetic``) on the synthetic upstream world.

This stands in for CLIP's web pretraining: a small ViT CLIP learns still images of
coloured shapes and their captions with the symmetric contrastive (InfoNCE) loss, then is
frozen and shipped in ``vop/assets`` for the downstream prompt-tuning experiments.

* Data: :class:`~vop.data.synthetic.UpstreamWorld` items streamed by index. Step ``s``
  draws ``batch`` training indices from a generator seeded with ``seed``, so a run is a
  pure function of its config (and of torch's CPU kernels).
* Model: :data:`~vop.backbone.config.ARCHITECTURES` ``[architecture]`` with the reduced
  vocabulary of :func:`~vop.backbone.packaged.reduced_token_map`.
* Optimiser: AdamW (CLIP's betas and eps; no decay on gains, biases or the logit scale),
  linear warm-up then cosine decay to zero; the learned logit scale is clamped at 100.
* Evaluation: :func:`evaluate_zero_shot`, image-to-text R@1 on held-out pairs.

This module knows nothing of the rest of :mod:`vop.train` (the prompt-tuning trainer).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from vop.backbone.clip import CLIP
from vop.backbone.config import ARCHITECTURES
from vop.backbone.identity import fingerprint
from vop.backbone.download import cache_dir
from vop.backbone.packaged import asset_path, check_not_shipped, reduced_token_map, save_checkpoint

__all__ = ["PretrainConfig", "build_model", "clip_loss", "default_out", "evaluate_zero_shot", "pretrain", "train"]

PACKAGED_NAME = "tiny-synthetic"
PACKAGED_FILE = "tiny-synthetic.safetensors"


@dataclass(frozen=True)
class PretrainConfig:
    """How the tiny CLIP is pretrained. Defaults built the shipped checkpoint."""

    steps: int = 700  # optimiser steps
    batch: int = 256  # image-caption pairs per step (all in one contrastive batch)
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup: int = 50  # linear warm-up steps, then cosine decay to 0
    weight_decay: float = 0.2  # AdamW decay on matrices (not gains, biases, logit scale)
    beta1: float = 0.9  # AdamW betas and eps as CLIP's
    beta2: float = 0.98
    eps: float = 1e-6
    max_logit_scale: float = 100.0  # clamp of exp(logit_scale), as CLIP
    seed: int = 0  # initial weights and the stream of training indices
    world_seed: int = 0  # identity of the upstream world (evaluation uses the same world)
    architecture: str = "tiny-synthetic-arch"  # a name in ARCHITECTURES (vocab is reduced)
    threads: int = 2  # torch intra-op threads while training
    eval_pairs: int = 1000  # held-out pairs for the zero-shot R@1 written into the checkpoint

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "threads", "eval_pairs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PretrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.batch < 2:
            raise ValueError(f"PretrainConfig.batch must be at least 2 (contrastive), got {self.batch}")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"PretrainConfig.warmup must be in [0, steps), got {self.warmup}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_logit_scale <= 1:
            raise ValueError("PretrainConfig: lr must be > 0, weight_decay >= 0, max_logit_scale > 1")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; known: {sorted(ARCHITECTURES)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PretrainConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown PretrainConfig fields {sorted(unknown)}")
        return cls(**data)


def build_model(config: PretrainConfig) -> CLIP:
    """A freshly initialised CLIP of ``config.architecture`` with the reduced vocabulary
    (seeded by ``config.seed``; the global RNG is left as it was)."""
    from vop.data.synthetic import vocabulary_texts

    token_map, kept = reduced_token_map(vocabulary_texts())
    cfg = replace(ARCHITECTURES[config.architecture], vocab_size=len(kept) + 1, name=PACKAGED_NAME)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return CLIP(cfg, token_map=token_map)


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of pairs: ``[B, D]`` and ``[B, D]`` (unnormalised),
    ``logit_scale`` the log temperature -> scalar."""
    image_emb = F.normalize(image_emb, dim=-1)
    text_emb = F.normalize(text_emb, dim=-1)
    logits = logit_scale.exp() * image_emb @ text_emb.t()  # [B, B], images x texts
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def _tokens(captions: list[str], context_length: int) -> torch.Tensor:
    """Token ids cut after the longest caption's end token: the text tower is causal and
    reads at the end token, so the padding columns change nothing and cost time."""
    from vop.backbone.tokenizer import tokenize

    ids = tokenize(captions, context_length=context_length)  # [N, context_length]
    return ids[:, : int(ids.argmax(dim=-1).max()) + 1]


def _pixels(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    from vop.data.transforms import normalize

    return normalize(images, dtype)  # uint8 [N, H, W, 3] -> [N, 3, H, W]


def _param_groups(clip: CLIP, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in clip.named_parameters():
        (no_decay if p.ndim < 2 or name == "logit_scale" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: int, config: PretrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def train(clip: CLIP, config: PretrainConfig, progress: bool = True) -> list[float]:
    """Pretrain ``clip`` in place for ``config.steps`` steps; returns the loss of each step."""
    from tqdm import tqdm

    from vop.data.synthetic import UpstreamWorld

    world = UpstreamWorld(seed=config.world_seed, image_size=clip.config.image_resolution)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(_param_groups(clip, config.weight_decay), lr=config.lr,
                                  betas=(config.beta1, config.beta2), eps=config.eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    max_log_scale = math.log(config.max_logit_scale)
    losses: list[float] = []
    clip.train()
    bar = tqdm(range(config.steps), desc="pretrain", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        images, captions, _keys = world.sample(config.batch, generator)
        loss = clip_loss(clip.encode_image(_pixels(images)),
                         clip.encode_text(_tokens(captions, clip.config.context_length)),
                         clip.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, max_log_scale)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}",
                        scale=f"{clip.logit_scale.exp().item():.1f}", refresh=False)
    clip.eval()
    return losses


@torch.no_grad()
def evaluate_zero_shot(clip: CLIP, n: int = 1000, world=None, batch_size: int = 250) -> dict:
    """Zero-shot image-to-text R@1 (in %) over ``n`` held-out upstream pairs.

    Each held-out image ranks all ``n`` captions. ``i2t_r1_exact`` counts a hit when the
    top caption is the image's own caption text (an identical string scores identically,
    so it counts too); ``i2t_r1_attributes`` when it describes the same attributes (same
    key), whichever template words it. Templates are not visible in an image, so the
    exact figure is bounded by chance among same-key captions.
    """
    from vop.data.synthetic import UpstreamWorld

    was_training = clip.training
    clip.eval()
    if world is None:
        world = UpstreamWorld(image_size=clip.config.image_resolution)
    images, captions, keys = world.held_out(n)
    dtype = clip.visual.conv1.weight.dtype
    image_emb, text_emb = [], []
    for i in range(0, n, batch_size):
        image_emb.append(clip.encode_image(_pixels(images[i:i + batch_size], dtype)).float())
        text_emb.append(clip.encode_text(_tokens(captions[i:i + batch_size], clip.config.context_length)).float())
    sim = F.normalize(torch.cat(image_emb), dim=-1) @ F.normalize(torch.cat(text_emb), dim=-1).t()  # [n, n]
    top = sim.argmax(dim=1).tolist()
    clip.train(was_training)
    return {
        "pairs": n,
        "i2t_r1_exact": 100.0 * sum(captions[j] == captions[i] for i, j in enumerate(top)) / n,
        "i2t_r1_attributes": 100.0 * sum(keys[j] == keys[i] for i, j in enumerate(top)) / n,
    }


def pretrain(config: PretrainConfig = PretrainConfig(), out_path: str | Path | None = None,
             progress: bool = True, command: str | None = None, overwrite_shipped: bool = False) -> dict:
    """Pretrain the tiny CLIP, measure its zero-shot R@1, write the packaged checkpoint.

    ``out_path`` defaults to :func:`default_out` (the user's cache), never to the package:
    the shipped asset (``vop/assets/tiny-synthetic.safetensors``) is read-only, and a path
    inside the package's assets is refused before any training unless ``overwrite_shipped``
    (a developer rebuilding the shipped file on purpose).
    The R@1 is measured on the weights as written (rounded to fp16, computed in fp32), so
    ``load("tiny-synthetic")`` reproduces it. ``command`` is recorded in the metadata
    (the CLI passes its own command line). Returns the figures and the loss curve.
    """
    if out_path is None:
        out_path = asset_path(PACKAGED_NAME) if overwrite_shipped else default_out()
    out_path = Path(out_path)
    check_not_shipped(out_path, "the pretrained backbone", overwrite_shipped=overwrite_shipped)  # before 10 minutes of work
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        clip = build_model(config)
        start = time.perf_counter()
        losses = train(clip, config, progress=progress)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            for tensor in clip.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())  # the shipped precision
        scores = evaluate_zero_shot(clip, n=config.eval_pairs,
                                    world=_world(config, clip.config.image_resolution))
    finally:
        torch.set_num_threads(previous_threads)
    if command is None:
        command = f"vop.train.pretrain.pretrain({config!r})"
    metadata = {
        "name": PACKAGED_NAME,
        "seed": config.seed,
        "steps": config.steps,
        "command": command,
        "pretrain_config": config.to_dict(),
        "train_seconds": round(seconds, 1),
        "threads": config.threads,
        "zero_shot": scores,
        "vop_version": _version(),
    }
    save_checkpoint(clip, out_path, metadata, overwrite_shipped=overwrite_shipped)
    return {
        **scores,
        "steps": config.steps,
        "train_seconds": seconds,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "path": str(out_path),
        "size_bytes": out_path.stat().st_size,
        "fingerprint": fingerprint(clip),
    }


def default_out() -> Path:
    """Where ``vop pretrain`` writes without ``--out``: ``VOP_CACHE`` (else ``~/.cache/vop``)
    ``/pretrain/tiny-synthetic.safetensors``; load it with ``vop.backbone.load(PATH)``."""
    return cache_dir() / "pretrain" / PACKAGED_FILE


def _world(config: PretrainConfig, image_size: int):
    from vop.data.synthetic import UpstreamWorld

    return UpstreamWorld(seed=config.world_seed, image_size=image_size)


def _version() -> str:
    from vop._version import __version__

    return __version__

