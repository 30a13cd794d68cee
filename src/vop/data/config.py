"""The typed configuration of a run's data: which benchmark and splits, where the files
are, and how frames are sampled and augmented. The ``data:`` section of a train config;
:func:`vop.data.datasets.open_split` takes it whole."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vop.defaults import NUM_FRAMES

SAMPLINGS = ("random", "middle")
# CPUs this process may run on: more loader workers than these only compete (and torch warns).
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class DataConfig:
    benchmark: str = "synthetic"  # msrvtt-9k, msrvtt-7k, didemo, activitynet, lsmdc, msvd, synthetic
    root: str | None = None  # annotation folder (docs/data.md)
    video_dir: str | None = None  # videos, when not under root/videos
    cache_dir: str | None = None  # a frame cache built by `vop cache` (read automatically)
    train_split: str = "train"
    val_split: str = "val"  # best checkpoint is chosen here, never on test
    test_split: str = "test"
    num_frames: int = NUM_FRAMES
    train_sampling: str = "random"  # "random" frame per segment, or "middle"
    random_crop: bool = True  # random resized crop (scale crop_scale) in training
    flip: bool = True  # horizontal flip in training (off where captions say left/right)
    crop_scale: tuple[float, float] = (0.5, 1.0)
    pair_batches: bool = False  # synthetic: keep each video and its reversal in one batch
    workers: int = min(4, _CPUS - 1)  # data loader processes (0: in the main process); one CPU left to training
    synthetic: dict = field(default_factory=dict)  # DownstreamConfig options for "synthetic"

    def __post_init__(self) -> None:
        if self.train_sampling not in SAMPLINGS:
            raise ValueError(f"train_sampling must be 'random' or 'middle', got {self.train_sampling!r}")
        if self.num_frames < 1 or self.workers < 0:
            raise ValueError("num_frames must be >= 1 and workers >= 0")
        if self.synthetic:  # checked against the world's own config; tuples, so the world can be cached by it
            object.__setattr__(self, "synthetic", synthetic_options(self.synthetic))


def synthetic_options(options) -> dict:
    """``data.synthetic`` validated as :class:`~vop.data.synthetic.DownstreamConfig` options
    (unknown keys and wrong types named), values normalised as that config holds them."""
    from vop.configio import ConfigError, from_dict
    from vop.data.synthetic.downstream import DownstreamConfig

    if not isinstance(options, dict):
        raise ConfigError(f"data.synthetic: expected a section (mapping), got {options!r}")
    config = from_dict(DownstreamConfig, options, "data.synthetic")
    return {key: getattr(config, key) for key in options}
