"""Decoding a video file into ``F`` uniformly sampled uint8 frames ``(F, H, W, 3)``.

Sampling rule (the one CLIP4Clip and VoP use): the video's ``n`` frames are cut into
``F`` equal segments on a fractional grid, segment ``i`` covering the frame positions
``[i * n / F, (i + 1) * n / F)``.

* ``"middle"`` (evaluation) takes the frame at the segment's midpoint,
  ``floor((i + 0.5) * n / F)``.
* ``"random"`` (training) takes the frame at a uniformly random position inside the
  segment, ``floor((i + u_i) * n / F)`` with ``u_i ~ U[0, 1)`` drawn from ``generator``.
  When ``n / F`` is not an integer, a frame straddling a segment boundary can be drawn
  by either neighbour, in proportion to its overlap.

Indices are non-decreasing. A video with fewer than ``F`` frames repeats frames: a
5-frame video sampled at 12 gives ``0 0 1 1 1 2 2 3 3 3 4 4`` (each frame 2-3 times,
in order).

Sampling is uniform in frame *index* (presentation order), not in time, so it needs
neither the frame rate nor the duration, and works for variable-frame-rate files.

How frames are found. A demux pass (reading packets, no decoding; ~1-2% of the cost of
decoding) lists the stream's packets: their count is the frame count, and their
timestamps in sorted order give each frame's presentation timestamp (pts). Then:

* Seeking path, when every packet has a distinct pts and the sampled frames are spread
  over several keyframe intervals, so that decoding from the keyframe before each
  sampled frame costs at most half of decoding everything (long videos). Each kept
  frame must come out of the decoder with exactly the expected pts; any surprise
  (missing pts, overshoot, decode error) abandons this path for the next one.
* Sequential path otherwise: decode front to back once, counting the frames really
  decoded. If that count differs from the packet count (packets that hold no frame,
  a broken tail), indices are resampled on the true count, and a second pass fetches
  any needed frame that was not kept. Wrong metadata costs time, never a wrong frame.

Both paths use FFmpeg's frame/slice threading and convert to RGB only the ``<= F``
frames that are kept. On the sequential path, a decode error after at least one good
frame ends the video there (broken tails are common in scraped datasets); a file that
yields no frame at all is a :class:`VideoReadError`.

What is not a video: a file whose demuxer reads images (a PNG or JPEG renamed ``.mp4``),
whose first stream is not video (an audio file, even with cover art), or whose only
video streams are attached pictures; each is a :class:`VideoReadError` saying why.
Frames larger than :data:`MAX_FRAME_PIXELS` are scaled down by the decoder (keeping
their aspect), so a huge frame size cannot exhaust memory.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from vop.data.types import VideoReadError

__all__ = ["sample_frames", "sample_indices", "SAMPLING_MODES", "MAX_FRAME_PIXELS"]

SAMPLING_MODES = ("middle", "random")

# Errors that mean "this input is bad", translated into VideoReadError. PyAV raises
# subclasses of av.FFmpegError for anything FFmpeg rejects; OSError covers permissions
# and the like; ValueError covers PyAV's own checks (e.g. an unsupported pixel format).
_READ_ERRORS = (av.FFmpegError, OSError, ValueError)

# Seek only when the planned decode is at most this fraction of a full decode: a seek
# restarts the decoder (and its threads), so it must skip real work to pay off.
_SEEK_WORTHWHILE = 0.5

MAX_FRAME_PIXELS = 3840 * 2160  # larger frames are scaled down as they are decoded (4K UHD)

# Demuxers that read still images (image2 reads numbered files; *_pipe single images).
_IMAGE_DEMUXERS = ("image2", "image2pipe")


def sample_indices(num_total: int, num_frames: int, offsets: torch.Tensor | None = None) -> list[int]:
    """Frame indices for ``num_frames`` segments over ``num_total`` frames.

    ``offsets`` (``[num_frames]`` floats in ``[0, 1)``) is the position inside each
    segment; ``None`` means the middle (0.5). See the module docstring for the rule.
    """
    if num_total < 1 or num_frames < 1:
        raise ValueError(f"need num_total >= 1 and num_frames >= 1, got {num_total}, {num_frames}")
    if offsets is None:
        # Exact integer form of floor((i + 0.5) * n / F).
        return [((2 * i + 1) * num_total) // (2 * num_frames) for i in range(num_frames)]
    if offsets.shape != (num_frames,):
        raise ValueError(f"offsets must have shape ({num_frames},), got {tuple(offsets.shape)}")
    out = []
    for i, u in enumerate(offsets.tolist()):
        # The last frame a segment reaches: ceil((i + 1) * n / F) - 1. The clamp guards
        # against float rounding pushing u -> 1 over a boundary.
        hi = -((-(i + 1) * num_total) // num_frames) - 1
        out.append(min(int((i + u) * num_total / num_frames), hi, num_total - 1))
    return out


def sample_frames(
    path: str | os.PathLike,
    num_frames: int = 12,
    mode: str = "middle",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Decode ``num_frames`` uniformly sampled frames of the video at ``path``.

    Returns ``(frames, indices)``: uint8 frames ``[num_frames, H, W, 3]`` (RGB, the
    video's own size) and the index of each returned frame among the video's frames.
    ``mode`` is ``"middle"`` or ``"random"`` (offsets drawn from ``generator``, so a
    seeded generator reproduces the draw). Raises :class:`VideoReadError` for a
    missing, empty (0 bytes, no video stream, no frames) or corrupt file, and only
    that for bad input.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode not in SAMPLING_MODES:
        raise ValueError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}")
    name = os.fspath(path)
    file = Path(name)
    if not file.is_file():
        raise VideoReadError(name, "no such file")
    if file.stat().st_size == 0:
        raise VideoReadError(name, "empty file (0 bytes)")

    # Drawn once, up front, so a resample (wrong packet count) reuses the same draw and
    # the generator advances by exactly num_frames values per call.
    offsets = None
    if mode == "random":
        offsets = torch.rand(num_frames, generator=generator, dtype=torch.float64)

    try:
        index = _scan_packets(name)
        indices = sample_indices(index.count, num_frames, offsets)
        kept = None
        wanted = sorted(set(indices))
        if index.seekable and index.seek_cost(wanted) <= _SEEK_WORTHWHILE * index.count:
            kept = _decode_seeking(name, index, wanted)
        if kept is None:
            kept, indices = _decode_sequential(name, index.count, indices, num_frames, offsets)
    except VideoReadError:
        raise
    except _READ_ERRORS as e:
        raise VideoReadError(name, f"{type(e).__name__}: {e}") from e

    frames = np.stack([kept[i] for i in indices])  # [F, H, W, 3]
    return torch.from_numpy(frames), indices


@dataclass(frozen=True)
class _PacketIndex:
    """What the demux pass learnt: frame count, and where seeking can land."""

    count: int  # packets holding data: the expected number of frames
    pts: tuple[int, ...] | None  # sorted packet pts = frame i's pts; None if not usable
    keyframes: tuple[int, ...]  # frame indices (into ``pts``) of keyframes, ascending

    @property
    def seekable(self) -> bool:
        return self.pts is not None and len(self.keyframes) > 1

    def keyframe_before(self, index: int) -> int:
        """The last keyframe at or before frame ``index`` (0 if there is none)."""
        pos = bisect.bisect_right(self.keyframes, index) - 1
        return self.keyframes[pos] if pos >= 0 else 0

    def seek_cost(self, wanted: list[int]) -> int:
        """Frames decoded to fetch the sorted frames ``wanted``, seeking where it helps."""
        cost, next_frame = 0, 0
        for t in wanted:
            start = max(self.keyframe_before(t), next_frame)
            cost += t - start + 1
            next_frame = t + 1
        return cost


def _not_a_video(container) -> str | None:
    """Why ``container`` is not a video, or None if it is one."""
    fmt = container.format.name or ""
    if fmt in _IMAGE_DEMUXERS or fmt.endswith("_pipe"):
        return f"not a video: an image ({fmt.removesuffix('_pipe')})"
    streams = list(container.streams)
    if not streams:
        return "no video stream"
    if streams[0].type != "video":
        return f"not a video: its first stream is {streams[0].type}"
    pictures = av.stream.Disposition.attached_pic
    if not any(not (s.disposition & pictures) for s in container.streams.video):
        return "not a video: its only picture is an attached image (cover art)"
    return None


def _open_video(name: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    container = av.open(name)
    if not container.streams.video:
        container.close()
        raise VideoReadError(name, "no video stream")
    reason = _not_a_video(container)
    if reason is not None:
        container.close()
        raise VideoReadError(name, reason)
    stream = next(s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic))
    stream.thread_type = "AUTO"
    return container, stream


def _scan_packets(name: str) -> _PacketIndex:
    """Demux (no decoding) the video stream's packets into a :class:`_PacketIndex`."""
    pts: list[int | None] = []
    keys: list[bool] = []
    container, stream = _open_video(name)
    with container:
        for packet in container.demux(stream):
            # Flush packets (size 0) and packets the demuxer marks for the decoder to
            # drop (e.g. before an mp4 edit list's start) are not frames.
            if packet.size == 0 or packet.is_discard:
                continue
            pts.append(packet.pts)
            keys.append(packet.is_keyframe)
    if not pts:
        raise VideoReadError(name, "video stream holds no frames")
    if any(p is None for p in pts) or len(set(pts)) != len(pts):
        return _PacketIndex(len(pts), None, ())
    order = sorted(range(len(pts)), key=lambda i: pts[i])
    keyframes = tuple(rank for rank, i in enumerate(order) if keys[i])
    return _PacketIndex(len(pts), tuple(pts[i] for i in order), keyframes)


def _bounded(width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` scaled down to at most :data:`MAX_FRAME_PIXELS`, keeping the aspect."""
    if width * height <= MAX_FRAME_PIXELS:
        return width, height
    scale = (MAX_FRAME_PIXELS / (width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """``[H, W, 3]`` uint8 at ``size`` (width, height): the first kept frame's size, so a
    stream that changes size mid-file keeps one shape; ``None`` for the first frame (its
    own size, bounded by :data:`MAX_FRAME_PIXELS`)."""
    size = size or _bounded(frame.width, frame.height)
    if (frame.width, frame.height) == size:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=size[0], height=size[1])


def _decode_seeking(name: str, index: _PacketIndex, wanted: list[int]) -> dict[int, np.ndarray] | None:
    """Fetch the sorted frames ``wanted`` by seeking to the keyframe before each one
    that lies past the decoder's position; ``None`` if the file does not behave as
    its packet index says (the caller then decodes sequentially)."""
    assert index.pts is not None
    kept: dict[int, np.ndarray] = {}
    size: tuple[int, int] | None = None
    container, stream = _open_video(name)
    with container:
        try:
            frames = container.decode(stream)
            next_frame = 0  # index of the next frame ``frames`` yields
            for t in wanted:
                key = index.keyframe_before(t)
                if key > next_frame:
                    container.seek(index.pts[key], stream=stream, backward=True)
                    frames = container.decode(stream)
                target = index.pts[t]
                for frame in frames:
                    if frame.pts is None or frame.pts > target:
                        return None
                    if frame.pts == target:
                        kept[t] = _to_rgb(frame, size)
                        size = size or (kept[t].shape[1], kept[t].shape[0])
                        break
                else:
                    return None
                next_frame = t + 1
        except av.FFmpegError:
            return None
    return kept


def _decode_sequential(
    name: str, count: int, indices: list[int], num_frames: int, offsets: torch.Tensor | None
) -> tuple[dict[int, np.ndarray], list[int]]:
    """Decode front to back keeping ``indices``; resample if the real frame count is not
    ``count``. Returns the kept frames and the (possibly resampled) indices."""
    kept, decoded = _decode_kept(name, set(indices), stop_after=None)
    if decoded == 0:
        raise VideoReadError(name, "no decodable video frames")
    if decoded != count:
        indices = sample_indices(decoded, num_frames, offsets)
        missing = set(indices) - kept.keys()
        if missing:
            kept.update(_decode_kept(name, missing, stop_after=max(missing))[0])
            if set(indices) - kept.keys():
                raise VideoReadError(name, "frame count changed between decode passes")
    return kept, indices


def _decode_kept(name: str, wanted: set[int], stop_after: int | None) -> tuple[dict[int, np.ndarray], int]:
    """Decode frames in order, converting to RGB only those whose index is ``wanted``.

    Returns the kept ``{index: [H, W, 3] uint8}`` and the number of frames decoded
    (all of them unless ``stop_after`` ends the pass early). A decode error after at
    least one frame is taken as the end of the video.
    """
    kept: dict[int, np.ndarray] = {}
    count = 0
    size: tuple[int, int] | None = None  # (width, height) of the first kept frame
    container, stream = _open_video(name)
    with container:
        try:
            for frame in container.decode(stream):
                if count in wanted:
                    kept[count] = _to_rgb(frame, size)
                    size = size or (kept[count].shape[1], kept[count].shape[0])
                count += 1
                if stop_after is not None and count > stop_after:
                    break
        except av.FFmpegError:
            if count == 0:
                raise
    return kept, count
