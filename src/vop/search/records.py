"""The videos of a collection: finding them, identifying them and describing them.

A collection is a folder walked recursively for video files (:data:`VIDEO_SUFFIXES`).
Each file becomes a :class:`VideoRecord` keyed by its path relative to the folder (POSIX
separators), with a stable ``id`` derived from that path, so the id of a file never
depends on anything a request can say.

Change detection is cheap first: a file whose size and modification time (ns) are
unchanged is taken as unchanged. Otherwise its :func:`content_hash` decides: a file only
touched (same hash) keeps its embedding; a changed one is encoded again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

__all__ = ["VIDEO_SUFFIXES", "HASH_BLOCK", "VideoRecord", "FileState", "content_hash", "video_id",
           "walk_videos", "probe"]

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")
HASH_BLOCK = 1 << 20  # bytes hashed from each end of a file (1 MiB)


def content_hash(path: str | os.PathLike, size: int | None = None) -> str:
    """``sha256(size as 8 little-endian bytes + first 1 MiB + last 1 MiB)`` in hex.

    Files of at most 2 MiB are hashed whole (the two blocks would overlap). Reading 2 MiB
    instead of the whole file keeps re-indexing a large collection fast; containers write
    their headers and indexes at the ends, so a re-encode or trim changes what is hashed.
    An edit confined to the middle of a large file that keeps its size is not seen, and
    neither is one that also keeps the modification time (see the module docstring).
    """
    size = os.path.getsize(path) if size is None else size
    h = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= 2 * HASH_BLOCK:
            h.update(f.read())
        else:
            h.update(f.read(HASH_BLOCK))
            f.seek(size - HASH_BLOCK)
            h.update(f.read(HASH_BLOCK))
    return h.hexdigest()


def video_id(relpath: str) -> str:
    """The stable id of the file at ``relpath`` (16 hex digits of its sha256)."""
    return hashlib.sha256(relpath.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True)
class FileState:
    """What the walk saw of one file, before any decoding."""

    path: str  # relative to the collection root, POSIX separators
    size: int  # bytes
    mtime_ns: int  # modification time, ns since the epoch


@dataclass(frozen=True)
class VideoRecord:
    """One indexed video: a line of ``videos.jsonl``; row ``i`` of the embeddings is line ``i``."""

    id: str  # video_id(path): 16 hex digits
    path: str  # relative to the collection root, POSIX separators
    size: int  # bytes
    mtime_ns: int  # modification time when encoded, ns since the epoch
    hash: str  # content_hash() when encoded
    duration: float | None  # seconds, from the container (None if it does not say)
    width: int  # frame size in pixels
    height: int
    num_frames: int  # frames sampled for the embedding

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def walk_videos(root: str | os.PathLike, suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> Iterator[FileState]:
    """Every video file under ``root`` (recursively, sorted by relative path).

    Hidden files and folders (a leading ``.``) are skipped, which also keeps an index
    written inside the collection out of it. Symlinked folders are not followed (no
    cycles); symlinked files are listed like files.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    found: list[FileState] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            full = Path(folder) / name
            try:
                st = full.stat()
            except OSError:  # vanished or a dangling link: nothing to index
                continue
            rel = full.relative_to(root).as_posix()
            found.append(FileState(rel, st.st_size, st.st_mtime_ns))
    yield from sorted(found, key=lambda s: s.path)


def probe(path: str | os.PathLike) -> tuple[float | None, int, int]:
    """``(duration_seconds, width, height)`` from the container's header (no decoding)."""
    import av

    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # av.time_base
        return duration, int(stream.codec_context.width), int(stream.codec_context.height)
