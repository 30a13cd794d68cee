"""An on-disk, memory-mapped store of each video's sampled frames at the model's input size.

Decoding is the slowest part of the data path (a 30 s clip costs ~a second of CPU);
the cache pays it once. Each video is decoded with ``"middle"`` sampling, resized and
centre-cropped (:func:`~vop.data.transforms.resize_center_crop`) and stored as uint8.

Layout of a cache directory::

    frames.npy   uint8 [N, F, S, S, 3]: row r holds video r's F frames (RGB, S x S),
                 a plain .npy file opened with ``np.load(mmap_mode="r")``, so reading a
                 video touches only its own row. Rows of failed videos stay zero.
    index.json   {"num_frames": F, "size": S,
                  "videos": {key: row},          # videos that decoded
                  "failed": {key: reason}}       # videos that did not, and why

``index.json`` is written last, so a directory without it is not a cache. While a build
runs, the directory also holds ``frames.npy.partial`` and ``progress.json`` (the rows
done so far); a build that was interrupted resumes from them when started again with
the same keys, ``num_frames`` and ``size``.

Crash safety: every write is fsync-ed before the rename that publishes it, and the
folder after it (:mod:`vop.atomic`); rows reach the disk before the progress that lists
them, the data file before the ``index.json`` that declares it. A kill at any instant
leaves either the finished cache or an unfinished build that the next build resumes.
``overwrite=True`` removes the old ``index.json`` first, so from then on the folder is an
unfinished build, not the old cache. ``index.json`` is validated when opened
(:class:`CacheFormatError`).

Keys name videos; by default a video's key is its file stem (``video123`` for
``.../video123.mp4``), which is the video id of the benchmark readers.

Training from the cache: the frames are fixed (middle of each segment), so cached
training loses temporal jitter, and the spatial augmentation
(:class:`~vop.data.transforms.VideoTransform` with ``train=True``) crops from the
stored ``S x S`` centre crop rather than from the full frame.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vop import atomic
from vop.data.transforms import resize_center_crop
from vop.data.types import VideoReadError
from vop.data.video import sample_frames

__all__ = ["CacheFormatError", "FrameCache", "build_frame_cache", "video_key"]

FRAMES_FILE = "frames.npy"
INDEX_FILE = "index.json"
_PARTIAL_FILE = FRAMES_FILE + ".partial"
_PROGRESS_FILE = "progress.json"
_PROGRESS_EVERY = 64  # videos between progress checkpoints of a build


class CacheFormatError(ValueError):
    """A frame cache file is damaged or not of this format (one line, with the fix)."""


def _check_index(index: object, path: Path) -> dict:
    """``index.json``: ``{"num_frames": int >= 1, "size": int >= 1, "videos": {str: int >= 0},
    "failed": {str: str}}``."""
    ok = (isinstance(index, dict)
          and all(isinstance(index.get(k), int) and not isinstance(index.get(k), bool) and index[k] >= 1
                  for k in ("num_frames", "size"))
          and isinstance(index.get("videos"), dict) and isinstance(index.get("failed"), dict)
          and all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in index["videos"].values())
          and all(isinstance(r, str) for r in index["failed"].values()))
    if not ok:
        raise CacheFormatError(f"{path}: not a frame cache index (expects num_frames, size, videos and failed); "
                               "rebuild the cache with vop cache --overwrite")
    return index


def video_key(path: str | os.PathLike) -> str:
    """The default cache key of a video file: its stem."""
    return Path(path).stem


class FrameCache:
    """Read side of a frame cache directory (see the module docstring for the layout).

    ``cache.get(key)`` gives uint8 ``[F, S, S, 3]`` read from the memory map. The
    object pickles without its memory map (it reopens lazily), so it can be handed to
    DataLoader workers without copying the file.
    """

    def __init__(self, directory: Path, num_frames: int, size: int, videos: dict[str, int], failed: dict[str, str]):
        self.directory = directory
        self.num_frames = num_frames  # F: frames per video
        self.size = size  # S: frame side in pixels
        self._videos = videos
        self.failed = failed  # key -> why the video could not be decoded
        self._frames: np.ndarray | None = None  # the memory map, opened on first use

    @classmethod
    def open(cls, directory: str | os.PathLike) -> FrameCache:
        directory = Path(directory)
        index_path = directory / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"{directory} is not a frame cache (no {INDEX_FILE})")
        try:
            index = json.loads(index_path.read_bytes())
        except ValueError as exc:
            raise CacheFormatError(f"{index_path}: not valid JSON ({exc}); rebuild the cache with vop cache "
                                   "--overwrite") from None
        index = _check_index(index, index_path)
        cache = cls(
            directory, int(index["num_frames"]), int(index["size"]), dict(index["videos"]), dict(index["failed"])
        )
        try:
            frames = cache._memmap()
        except (ValueError, EOFError) as exc:
            raise CacheFormatError(f"{directory / FRAMES_FILE}: not a readable .npy array ({exc}); rebuild the "
                                   "cache with vop cache --overwrite") from None
        expected = (cache.num_frames, cache.size, cache.size, 3)
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1:] != expected:
            raise CacheFormatError(
                f"{directory / FRAMES_FILE}: {frames.dtype} {frames.shape}, expected uint8 [N, *{expected}]"
            )
        if cache._videos and max(cache._videos.values()) >= frames.shape[0]:
            raise CacheFormatError(f"{index_path} points past the {frames.shape[0]} rows of {FRAMES_FILE}")
        return cache

    def _memmap(self) -> np.ndarray:
        if self._frames is None:
            self._frames = np.load(self.directory / FRAMES_FILE, mmap_mode="r", allow_pickle=False)
        return self._frames

    def get(self, key: str) -> torch.Tensor:
        """uint8 ``[F, S, S, 3]`` frames of video ``key``; ``KeyError`` if not cached."""
        row = self._videos[key]
        # np.array copies just this row out of the read-only map (torch wants writable memory).
        return torch.from_numpy(np.array(self._memmap()[row]))

    def __contains__(self, key: object) -> bool:
        return key in self._videos

    def __len__(self) -> int:
        return len(self._videos)

    def keys(self) -> Iterator[str]:
        return iter(self._videos)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_frames"] = None  # a pickled memmap would carry the whole array
        return state

    def __repr__(self) -> str:
        return (
            f"FrameCache({str(self.directory)!r}, videos={len(self)}, failed={len(self.failed)}, "
            f"num_frames={self.num_frames}, size={self.size})"
        )


def build_frame_cache(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    num_frames: int = 12,
    size: int = 224,
    keys: Sequence[str] | None = None,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> FrameCache:
    """Decode every video once into a frame cache at ``out_dir`` and open it.

    ``keys`` name the videos (default: file stems; they must be unique). ``workers > 0``
    decodes in that many threads; 0 decodes here. Unreadable videos are skipped and
    recorded in ``failed``. An existing finished cache is an error unless ``overwrite``
    (which also starts from scratch); an interrupted build with the same keys and
    settings is resumed.
    """
    if num_frames < 1 or size < 1:
        raise ValueError(f"num_frames and size must be >= 1, got {num_frames}, {size}")
    paths = [os.fspath(p) for p in paths]
    keys = [video_key(p) for p in paths] if keys is None else [str(k) for k in keys]
    if len(keys) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(keys)} keys")
    dup = next((k for k, n in Counter(keys).items() if n > 1), None)
    if dup is not None:
        raise ValueError(f"duplicate video key {dup!r}; pass unique keys=")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for leftover in atomic.leftovers(out / INDEX_FILE) + atomic.leftovers(out / _PROGRESS_FILE):
        leftover.unlink(missing_ok=True)  # temporary files of a killed write: never published
    if (out / INDEX_FILE).exists():
        (out / _PROGRESS_FILE).unlink(missing_ok=True)  # stale: a kill after the commit, before its clean-up
        if not overwrite:
            raise FileExistsError(f"{out} already holds a frame cache; pass overwrite=True to rebuild it")
        (out / INDEX_FILE).unlink()
        atomic.fsync_dir(out)

    settings = {"num_frames": num_frames, "size": size, "keys": keys}
    done, failed, frames = _start_or_resume(out, settings, overwrite)

    todo = [(row, paths[row]) for row in range(len(paths)) if keys[row] not in done and keys[row] not in failed]
    bar = tqdm(total=len(paths), initial=len(paths) - len(todo), desc="frame cache", unit="video", disable=not progress)
    since_checkpoint = 0
    try:
        for row, clip, reason in _decode_all(todo, num_frames, size, workers):
            if clip is None:
                failed[keys[row]] = reason
            else:
                frames[row] = clip
                done[keys[row]] = row
            bar.update(1)
            since_checkpoint += 1
            if since_checkpoint >= _PROGRESS_EVERY:
                _checkpoint(out, frames, settings, done, failed)
                since_checkpoint = 0
    except BaseException:
        _checkpoint(out, frames, settings, done, failed)  # keep what was decoded for a resume
        raise
    finally:
        bar.close()

    # Commit: data first (durably), then the index that makes the directory a cache.
    frames.flush()
    del frames
    atomic.fsync_file(out / _PARTIAL_FILE)
    os.replace(out / _PARTIAL_FILE, out / FRAMES_FILE)
    atomic.fsync_dir(out)
    index = {"num_frames": num_frames, "size": size, "videos": done, "failed": failed}
    _write_json(out / INDEX_FILE, index)
    (out / _PROGRESS_FILE).unlink(missing_ok=True)
    atomic.fsync_dir(out)
    return FrameCache.open(out)


def _start_or_resume(out: Path, settings: dict, overwrite: bool) -> tuple[dict[str, int], dict[str, str], np.memmap]:
    """Open the partial frames file of an interrupted build with the same settings, or
    create a fresh one; returns the rows already done, failures and the writable map."""
    progress_path, partial = out / _PROGRESS_FILE, out / _PARTIAL_FILE
    n, f, s = len(settings["keys"]), settings["num_frames"], settings["size"]
    if progress_path.is_file() and not partial.exists() and (out / FRAMES_FILE).is_file():
        # Interrupted between the two commit steps: the data is complete but unindexed.
        os.replace(out / FRAMES_FILE, partial)
    if progress_path.is_file() and partial.is_file() and not overwrite:
        try:
            progress = json.loads(progress_path.read_bytes())
        except ValueError:
            progress = {}  # damaged: start over
        if isinstance(progress, dict) and {k: progress.get(k) for k in settings} == settings:
            frames = np.load(partial, mmap_mode="r+")
            if frames.shape == (n, f, s, s, 3) and frames.dtype == np.uint8:
                return dict(progress["done"]), dict(progress["failed"]), frames
    # open_memmap writes the .npy header and leaves the data sparse on disk.
    frames = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(n, f, s, s, 3))
    _checkpoint(out, frames, settings, {}, {})
    return {}, {}, frames


def _checkpoint(out: Path, frames: np.memmap, settings: dict, done: dict, failed: dict) -> None:
    frames.flush()  # rows reach the file (msync) ...
    atomic.fsync_file(out / _PARTIAL_FILE)  # ... and the disk, before the progress that lists them
    _write_json(out / _PROGRESS_FILE, {**settings, "done": done, "failed": failed})


def _write_json(path: Path, obj: dict) -> None:
    atomic.write_text(path, json.dumps(obj))


def _decode_one(job: tuple[int, str, int, int]) -> tuple[int, np.ndarray | None, str]:
    """``(row, [F, S, S, 3] uint8 or None, failure reason)`` for one video."""
    row, path, num_frames, size = job
    try:
        frames, _ = sample_frames(path, num_frames=num_frames, mode="middle")
    except VideoReadError as e:
        return row, None, e.reason
    return row, resize_center_crop(frames, size).numpy(), ""


def _decode_all(
    todo: list[tuple[int, str]], num_frames: int, size: int, workers: int
) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """Decode ``todo`` here (``workers <= 0``) or in a thread pool, yielding results in
    completion order. Threads suffice: PyAV runs FFmpeg's decoder without the GIL, and
    torch's resize releases it too."""
    jobs = [(row, path, num_frames, size) for row, path in todo]
    if workers <= 0 or len(jobs) <= 1:
        yield from map(_decode_one, jobs)
        return
    pending: set[Future] = set()
    with ThreadPoolExecutor(workers, thread_name_prefix="frame-cache") as pool:
        try:
            for job in jobs:
                pending.add(pool.submit(_decode_one, job))
                if len(pending) >= 2 * workers:  # bound the decoded frames held in memory
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in done)
            for future in as_completed(pending):
                yield future.result()
        finally:
            for future in pending:
                future.cancel()
