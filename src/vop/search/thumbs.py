"""Thumbnail strips: a few frames of a video side by side, made on first request and cached.

A strip is ``num_frames`` frames sampled like the encoder samples them (segment middles),
each scaled to ``height`` pixels keeping its aspect, as one JPEG (through Pillow when it is
installed) or PNG (written by hand with zlib otherwise, so serving never needs Pillow).
Cached files are named ``<id>-<content hash>.<ext>`` in the index's ``thumbs/`` folder, so
a changed video gets a new strip; a read-only index folder keeps them in memory instead.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from vop import atomic

__all__ = ["thumbnail_strip", "encode_image", "png_bytes", "ThumbnailCache"]


def thumbnail_strip(path: str | os.PathLike, num_frames: int = 6, height: int = 72) -> np.ndarray:
    """uint8 ``[height, num_frames * w, 3]``: ``num_frames`` sampled frames side by side.

    Raises :class:`vop.data.types.VideoReadError` for an unreadable file."""
    from vop.data.video import sample_frames

    from vop.data.transforms import resize

    frames, _ = sample_frames(path, num_frames=num_frames, mode="middle")  # [F, H, W, 3]
    h, w = frames.shape[1:3]
    width = max(1, min(4 * height, round(w * height / h)))  # cap very wide frames
    # uint8 all the way (no float copy of full-size frames: 4x their memory)
    y = resize(frames, height, width).permute(1, 0, 2, 3)  # [height, F, width, 3]
    return y.reshape(height, -1, 3).contiguous().numpy()


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 RGB ``[H, W, 3]`` image as PNG bytes (8-bit truecolour, no filtering)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1)  # filter byte 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # depth 8, colour type 2 (RGB)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + chunk(b"IEND", b""))


def encode_image(image: np.ndarray) -> tuple[bytes, str]:
    """``(bytes, media type)``: JPEG via Pillow if importable, else PNG."""
    try:
        from PIL import Image
    except ImportError:
        return png_bytes(image), "image/png"
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=85)
    return buf.getvalue(), "image/jpeg"


_EXT = {"image/jpeg": "jpg", "image/png": "png"}


class ThumbnailCache:
    """Strips cached as files in ``folder`` (or in memory when it cannot be written)."""

    def __init__(self, folder: Path, num_frames: int = 6, height: int = 72, memory_items: int = 256):
        self.folder = Path(folder)
        self.num_frames, self.height = num_frames, height
        self._memory: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._memory_items = memory_items
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: str, video: Path) -> tuple[bytes, str]:
        """The strip of ``video`` under cache key ``key`` (``<id>-<hash>``): ``(bytes, media type)``."""
        with self._lock(key):  # one decode per key, however many requests wait for it
            for media, ext in _EXT.items():
                file = self.folder / f"{key}.{ext}"
                if file.is_file():
                    return file.read_bytes(), media
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
            data, media = encode_image(thumbnail_strip(video, self.num_frames, self.height))
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                atomic.write_bytes(self.folder / f"{key}.{_EXT[media]}", data)  # never a half-written strip
            except OSError:
                self._memory[key] = (data, media)
                while len(self._memory) > self._memory_items:
                    self._memory.popitem(last=False)
            return data, media
