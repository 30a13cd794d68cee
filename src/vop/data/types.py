"""The shapes of data every reader produces and every consumer (training, evaluation,
search) reads: a split is videos + captions + which caption describes which video, and
a video source that turns a video index into sampled uint8 frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


class VideoReadError(RuntimeError):
    """A video could not be decoded (missing, empty, corrupt). Callers skip and count it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read video {path}: {reason}")
        self.path = path
        self.reason = reason


@runtime_checkable
class VideoSource(Protocol):
    """Gives the sampled frames of video ``index`` of a split.

    ``load`` returns uint8 frames ``(F, H, W, 3)`` (raw size; transforms come later) and
    raises :class:`VideoReadError` for a video it cannot read. ``mode`` is ``"middle"``
    (each segment's middle frame: evaluation) or ``"random"`` (a random frame per
    segment: training), drawn from ``generator`` so that runs are reproducible.
    """

    def __len__(self) -> int: ...

    def load(
        self, index: int, num_frames: int, mode: str = "middle", generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

    def describe(self, index: int) -> str:
        """A human-readable name of the video (its path), for error reports."""
        ...


@dataclass(frozen=True)
class RetrievalSplit:
    """One split of a retrieval benchmark.

    ``caption_to_video[i]`` is the index (into ``video_ids``) of the video caption ``i``
    describes. A video may have many captions (MSR-VTT train, MSVD) or one (1k-A test,
    paragraph benchmarks). ``missing`` lists videos the reader found unreadable or absent;
    they are already excluded from ``video_ids``.
    """

    name: str
    video_ids: tuple[str, ...]
    captions: tuple[str, ...]
    caption_to_video: tuple[int, ...]
    source: VideoSource
    missing: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.caption_to_video):
            raise ValueError(
                f"split {self.name!r}: {len(self.captions)} captions but "
                f"{len(self.caption_to_video)} caption_to_video entries"
            )
        n = len(self.video_ids)
        if len(self.source) != n:
            raise ValueError(f"split {self.name!r}: {n} video ids but the source holds {len(self.source)} videos")
        bad = [v for v in self.caption_to_video if not 0 <= v < n]
        if bad:
            raise ValueError(f"split {self.name!r}: caption_to_video holds {bad[0]}, outside 0..{n - 1}")

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_captions(self) -> int:
        return len(self.captions)
