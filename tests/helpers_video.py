"""Tiny test videos written with PyAV, and bad files for the error paths.

``index_frames`` makes frames whose solid grey level encodes the frame index
(``LEVEL_STEP * index``), so a test can tell which frame came back despite codec loss:
``decoded_index`` rounds the mean level back to an index.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import torch

LEVEL_STEP = 8  # grey level per frame index: up to 32 distinct frames in 0..255


def best_codec() -> str:
    """libx264 (B-frames, so decode order != display order) when available, else mpeg4."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: int = 30, codec: str | None = None, gop: int | None = None
) -> Path:
    """Encode uint8 frames ``[T, H, W, 3]`` (H, W even) into ``path``; the container
    follows the suffix (``.mp4`` stores a frame count, ``.mkv`` does not). ``gop``
    is the keyframe interval (small values make sampling take the seeking path)."""
    frames = np.asarray(frames, dtype=np.uint8)
    codec = codec or best_codec()
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"qp": "0", "preset": "ultrafast", "bframes": "2"}  # lossless luma
        else:
            stream.options = {"qscale": "1"}  # mpeg4: best quality
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def index_frames(num: int, height: int = 24, width: int = 32) -> np.ndarray:
    """``[num, H, W, 3]`` solid grey frames, frame ``i`` at level ``LEVEL_STEP * i``."""
    if num * LEVEL_STEP > 256:
        raise ValueError(f"at most {256 // LEVEL_STEP} index frames")
    levels = np.arange(num, dtype=np.uint8) * LEVEL_STEP
    return np.broadcast_to(levels[:, None, None, None], (num, height, width, 3)).copy()


def decoded_index(frames: torch.Tensor) -> list[int]:
    """The index encoded in each of ``[F, H, W, 3]`` frames made by :func:`index_frames`."""
    return [round(level / LEVEL_STEP) for level in frames.float().mean(dim=(1, 2, 3)).tolist()]


def write_empty_file(path: str | os.PathLike) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def write_corrupt_file(path: str | os.PathLike, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a video name."""
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return Path(path)


def write_audio_only(path: str | os.PathLike) -> Path:
    """A valid WAV file: a media file with no video stream."""
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def write_no_frames(path: str | os.PathLike) -> Path:
    """A container with a video stream but not one frame."""
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream(best_codec(), rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        container.start_encoding()
    return Path(path)
