"""The typed configuration of a training run (``vop train CONFIG``), one section per
concern. Defaults are the paper's recipe where it gives one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vop.configio import ConfigError, apply_overrides, from_dict, load_yaml, to_dict

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class MethodSection:
    name: str = "vop"  # registry name (vop.methods.names())
    options: dict = field(default_factory=dict)  # MethodConfig options, e.g. {intra_layers: 8}


@dataclass(frozen=True)
class DataSection:
    benchmark: str = "synthetic"  # msrvtt-9k, msrvtt-7k, didemo, activitynet, lsmdc, msvd, synthetic
    root: str | None = None  # annotation folder (docs/data.md)
    video_dir: str | None = None  # videos, when not under root/videos
    cache_dir: str | None = None  # a frame cache built by `vop cache` (read automatically)
    train_split: str = "train"
    val_split: str = "val"  # best checkpoint is chosen here, never on test
    test_split: str = "test"
    num_frames: int = 12
    train_sampling: str = "random"  # "random" frame per segment, or "middle"
    random_crop: bool = True  # random resized crop (scale crop_scale) in training
    flip: bool = True  # horizontal flip in training (off where captions say left/right)
    crop_scale: tuple[float, float] = (0.5, 1.0)
    pair_batches: bool = False  # synthetic: keep each video and its reversal in one batch
    workers: int = 2  # data loader worker processes (0: load in the main process)
    synthetic: dict = field(default_factory=dict)  # DownstreamConfig options for "synthetic"

    def __post_init__(self) -> None:
        if self.train_sampling not in ("random", "middle"):
            raise ValueError(f"train_sampling must be 'random' or 'middle', got {self.train_sampling!r}")
        if self.num_frames < 1 or self.workers < 0:
            raise ValueError("num_frames must be >= 1 and workers >= 0")


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-3  # peak learning rate (per-method defaults live in configs/methods/)
    weight_decay: float = 0.2  # AdamW, as in the paper
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    epochs: int = 5
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs)
    batch_size: int = 32  # global batch (all ranks together), before accumulation
    grad_accum: int = 1  # optimiser step every k batches
    warmup_ratio: float = 0.1  # linear warm-up over this share of the steps, then cosine decay
    grad_clip: float = 1.0  # max gradient norm (0: off)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise ValueError("lr must be > 0, batch_size, grad_accum and epochs >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class RuntimeSection:
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    precision: str = "fp32"  # fp32, bf16 (autocast, CPU and GPU), fp16 (GPU, with a grad scaler)
    gradient_checkpointing: bool = False
    checkpoint_image_blocks: int | None = None  # with checkpointing: only the first N image blocks (None: all blocks)
    seed: int = 0
    out_dir: str = "runs/default"
    log_every: int = 10  # steps between JSONL log lines
    save_every: int = 200  # optimiser steps between `last` checkpoints (and at every epoch end)
    eval_every: int = 1  # epochs between validations
    val_every_steps: int = 0  # also validate every N optimiser steps (0: only at epoch ends)
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    threads: int | None = None  # torch CPU threads (None: torch's default)
    progress: bool = True  # progress bars
    tensorboard: bool = True  # also log to TensorBoard when it is installed

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.checkpoint_image_blocks is not None and self.checkpoint_image_blocks < 0:
            raise ValueError(f"checkpoint_image_blocks must be >= 0 or null (every block), got {self.checkpoint_image_blocks}")
        if self.checkpoint_image_blocks is not None and not self.gradient_checkpointing:
            raise ValueError("runtime.checkpoint_image_blocks only applies with runtime.gradient_checkpointing: true; "
                             "set both, or leave checkpoint_image_blocks out")


@dataclass(frozen=True)
class EvalSection:
    batch_size: int = 32  # videos per encoding batch
    chunk_size: int = 4096  # similarity rows per chunk (bounds memory)
    dual_softmax: bool = False  # post-processing; labelled wherever reported


@dataclass(frozen=True)
class TrainConfig:
    backbone: str = "tiny-synthetic"  # name or path given to vop.backbone.load
    method: MethodSection = field(default_factory=MethodSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self) -> None:
        from vop.methods import make_config

        try:  # fail before any work starts if the method or its options are wrong
            make_config(self.method.name, num_frames=self.data.num_frames, **self.method.options)
        except ValueError as exc:
            raise ConfigError(f"method: {exc}") from exc

    def method_config(self):
        from vop.methods import make_config

        return make_config(self.method.name, num_frames=self.data.num_frames, **self.method.options)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return from_dict(cls, data)


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A YAML file (with ``defaults:``) plus ``key=value`` overrides -> :class:`TrainConfig`."""
    data = load_yaml(path) if path is not None else {}
    return TrainConfig.from_dict(apply_overrides(data, list(overrides or [])))
