"""Open a benchmark split by name, the synthetic world included: one entry point for
training, evaluation and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vop.data.config import DataConfig
from vop.data.types import RetrievalSplit
from vop.defaults import NUM_FRAMES


@dataclass(frozen=True)
class OpenedSplit:
    split: RetrievalSplit
    groups: list[list[int]] | None = None  # caption indices to keep in one batch (reversal pairs)
    pairs: list[tuple[int, int, int, int]] | None = None  # (video_a, caption_a, video_b, caption_b)
    num_frames: int = NUM_FRAMES  # frames sampled per video (the data config's)


def open_split(data: DataConfig, split: str, *, image_size: int | None = None) -> OpenedSplit:
    """Split ``split`` of the data ``data`` describes. ``data.benchmark`` is a reader name
    (``vop.data.benchmarks.READERS``) or ``synthetic``."""
    benchmark, num_frames = data.benchmark, data.num_frames
    root, video_dir, cache_dir, synthetic = data.root, data.video_dir, data.cache_dir, data.synthetic
    if benchmark == "synthetic":
        if cache_dir is not None:
            raise ValueError(f"data.cache_dir {cache_dir} is set, but the synthetic world renders its frames and "
                             "reads no cache; remove data.cache_dir")

        options = dict(synthetic or {})
        options.setdefault("num_frames", num_frames)
        if image_size is not None:
            options.setdefault("image_size", image_size)
        world = _world(tuple(sorted(options.items())))
        s = world.split(split)
        pairs = world.reversal_pairs(split)
        video_to_captions: dict[int, list[int]] = {}
        for c, v in enumerate(s.caption_to_video):
            video_to_captions.setdefault(v, []).append(c)
        groups = [video_to_captions.get(a, []) + video_to_captions.get(b, []) for a, _, b, _ in pairs]
        return OpenedSplit(s, [g for g in groups if g], pairs, num_frames)
    from vop.data.benchmarks import load_split

    if root is None:
        raise ValueError(f"benchmark {benchmark!r} needs data.root (the annotation folder; see docs/data.md)")
    cache = None
    if cache_dir is not None:  # named in the config: it must be there (a typo must not mean "decode everything")
        if not Path(cache_dir).is_dir():
            raise FileNotFoundError(f"data.cache_dir {cache_dir} does not exist; build it with vop cache "
                                    f"{benchmark} {root} --out {cache_dir}, fix the path, or remove data.cache_dir")
        from vop.data.cache import FrameCache

        cache = FrameCache.open(cache_dir)
    s = load_split(benchmark, Path(root), split, video_dir=Path(video_dir) if video_dir else None, cache=cache)
    return OpenedSplit(s, num_frames=num_frames)


_WORLDS: dict = {}


def _world(key: tuple):
    """Synthetic worlds are deterministic; build each configuration once per process."""
    if key not in _WORLDS:
        from vop.data.synthetic import DownstreamWorld

        _WORLDS[key] = DownstreamWorld(**dict(key))
    return _WORLDS[key]


def describe_source(split: OpenedSplit) -> str:
    """Where ``split``'s frames come from, in words (for run headers): the synthetic world,
    a frame cache (with its folder), or raw video files (with their folder)."""
    from vop.data.sources import FileVideoSource
    from vop.data.synthetic.downstream import SyntheticVideoSource

    s = split.split
    counts = f"{s.num_videos} videos, {s.num_captions} captions"
    source = s.source
    if isinstance(source, SyntheticVideoSource):
        return f"synthetic world, rendered in memory ({counts})"
    if isinstance(source, FileVideoSource) and source.paths:
        import os

        folder = os.path.commonpath([os.path.dirname(p) for p in source.paths])
        if source.cache is not None:
            cached = sum(1 for key in source.keys if key in source.cache)
            return (f"frame cache {source.cache.directory} ({cached} of {s.num_videos} videos cached; the rest "
                    f"decoded from {folder}; {s.num_captions} captions)")
        return f"raw videos decoded from {folder} ({counts})"
    return f"{type(source).__name__} ({counts})"
