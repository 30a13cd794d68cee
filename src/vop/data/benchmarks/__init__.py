"""Benchmark readers: one module per annotation format, a registry by benchmark name.

>>> from vop.data.benchmarks import load_split
>>> split = load_split("msrvtt-9k", "data/msrvtt", "test")   # doctest: +SKIP
>>> split.num_videos, split.num_captions                     # doctest: +SKIP
(1000, 1000)

Every reader accepts the splits in its ``splits`` attribute: ``train``, ``val``,
``test`` and, where ``val`` is carved out of the training list, ``train-minus-val``.
``docs/data.md`` describes the folder layout each reader expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vop.data.benchmarks.activitynet import ActivityNetReader
from vop.data.benchmarks.common import VAL_FRACTION, VIDEO_EXTENSIONS, Annotations, BenchmarkReader
from vop.data.benchmarks.didemo import DiDeMoReader
from vop.data.benchmarks.lsmdc import LSMDCReader
from vop.data.benchmarks.msrvtt import MSRVTTReader
from vop.data.benchmarks.msvd import MSVDReader
from vop.data.types import RetrievalSplit

if TYPE_CHECKING:
    from vop.data.cache import FrameCache

__all__ = [
    "READERS",
    "VAL_FRACTION",
    "VIDEO_EXTENSIONS",
    "Annotations",
    "BenchmarkReader",
    "get_reader",
    "load_split",
    "register_reader",
    "summarize",
]

READERS: dict[str, BenchmarkReader] = {
    "msrvtt-9k": MSRVTTReader("msrvtt-9k", train_csv="MSRVTT_train.9k.csv"),
    "msrvtt-7k": MSRVTTReader("msrvtt-7k", train_csv="MSRVTT_train.7k.csv"),
    "didemo": DiDeMoReader(),
    "activitynet": ActivityNetReader(),
    "lsmdc": LSMDCReader(),
    "msvd": MSVDReader(),
}


def register_reader(reader: BenchmarkReader) -> None:
    """Add a reader under ``reader.name`` (e.g. a new benchmark, or another val fraction)."""
    if not reader.name:
        raise ValueError("a reader needs a name")
    if reader.name in READERS:
        raise ValueError(f"benchmark {reader.name!r} is already registered")
    READERS[reader.name] = reader


def get_reader(benchmark: str) -> BenchmarkReader:
    """The registered reader of ``benchmark``; an unknown name lists the known ones."""
    try:
        return READERS[benchmark]
    except KeyError:
        raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(READERS)}") from None


def load_split(
    benchmark: str,
    root: Path | str,
    split: str,
    video_dir: Path | str | None = None,
    check_videos: bool = True,
    cache: FrameCache | None = None,
) -> RetrievalSplit:
    """Read one split of a benchmark.

    Args:
        benchmark: a key of :data:`READERS` (``msrvtt-9k``, ``msrvtt-7k``, ``didemo``,
            ``activitynet``, ``lsmdc``, ``msvd``).
        root: the folder holding the annotation files.
        split: ``train``, ``val``, ``test`` or (where val is held out of training)
            ``train-minus-val``; ``get_reader(benchmark).splits`` lists them.
        video_dir: the folder of the video files; ``<root>/videos`` by default.
        check_videos: look for every video file, leave out (and list in ``missing``, with
            a logged warning) those not found. False skips the scan for a fast listing:
            paths are then guessed as ``<video_dir>/<id><reader.video_ext>``.
        cache: a :class:`~vop.data.cache.FrameCache` for the split's
            :class:`~vop.data.sources.FileVideoSource`. The source looks videos up by
            video id, so build the cache with ``keys=split.video_ids`` (file stems can
            differ from ids: ActivityNet files without ``v_``, DiDeMo files renamed).

    Raises:
        FileNotFoundError: an annotation file is missing (the message names it and the
            expected layout), the video folder is missing, or none of the videos is there.
        ValueError: unknown benchmark or split, or a malformed annotation file.
    """
    return get_reader(benchmark).load(root, split, video_dir=video_dir, check_videos=check_videos, cache=cache)


def summarize(
    benchmark: str, root: Path | str, video_dir: Path | str | None = None, check_videos: bool = True
) -> dict:
    """What is there of a benchmark, for ``vop data check``; never raises for missing files.

    Returns ``{"benchmark", "root", "video_dir", "videos_checked", "splits": {split:
    {"videos", "captions", "missing", "missing_examples"} or {"error": message}}}``.
    ``videos``/``captions`` count the annotations; ``missing`` counts the videos without a
    file (None when videos were not checked: ``check_videos=False`` or no video folder).
    """
    return get_reader(benchmark).summarize(root, video_dir=video_dir, check_videos=check_videos)
