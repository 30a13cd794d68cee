"""Video sources over files on disk, optionally served from a frame cache.

:class:`FileVideoSource` implements :class:`~vop.data.types.VideoSource` for a list of
video files. Given a :class:`~vop.data.cache.FrameCache`, every video the cache holds
is read from it, in both sampling modes, instead of being decoded:

* the frames are the cache's (``"middle"`` sampling, already resized and centre-cropped
  to ``S x S``), so ``"random"`` mode gets no temporal jitter for cached videos and the
  training crop is taken from that centre crop (the trade the cache makes for speed);
* a video the cache recorded as failed raises :class:`VideoReadError` with the recorded
  reason, without another decode attempt;
* a video the cache does not know is decoded from its file as usual (raw size), so a
  partial cache still works. The transforms bring both to the same output size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from vop.data.cache import FrameCache, video_key
from vop.data.types import VideoReadError
from vop.data.video import sample_frames

__all__ = ["FileVideoSource"]


class FileVideoSource:
    """Sampled uint8 frames ``[F, H, W, 3]`` of video files, by index.

    ``keys`` name the videos in ``cache`` (default: the file stems, as
    :func:`~vop.data.cache.build_frame_cache` uses).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        cache: FrameCache | None = None,
        keys: Sequence[str] | None = None,
    ):
        self.paths = tuple(os.fspath(p) for p in paths)
        self.keys = tuple(video_key(p) for p in self.paths) if keys is None else tuple(str(k) for k in keys)
        if len(self.keys) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.keys)} keys")
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return self.paths[index]

    def load(
        self, index: int, num_frames: int, mode: str = "middle", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        key = self.keys[index]
        if self.cache is not None:
            if key in self.cache:
                if self.cache.num_frames != num_frames:
                    raise ValueError(
                        f"the frame cache at {self.cache.directory} holds {self.cache.num_frames} frames "
                        f"per video, but {num_frames} were asked for"
                    )
                return self.cache.get(key)
            if key in self.cache.failed:
                raise VideoReadError(self.paths[index], self.cache.failed[key])
        frames, _ = sample_frames(self.paths[index], num_frames=num_frames, mode=mode, generator=generator)
        return frames

    def __repr__(self) -> str:
        return f"FileVideoSource({len(self)} videos, cache={self.cache!r})"
