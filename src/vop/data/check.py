"""``vop data check``: is a benchmark laid out the way its reader expects, before hours of
training find out?

For each split of a benchmark :func:`check_benchmark` reports

* the annotation files the reader opened and what they hold (videos, captions, captions
  per video min / mean / max), or why they could not be read;
* the videos present, missing (no file under the video folder) and unreadable;
* with a frame cache, how many of the split's videos it holds, how many it recorded as
  failed, and how many it lacks.

Unreadable is decided by a probe of every present video file (each file once, however
many splits list it):

* ``"open"`` (the default, ~10 ms a video): open the container, find a video stream and
  decode its first frame. Catches empty, truncated-header, foreign and audio-only files.
* ``"decode"``: decode the frames evaluation samples (:func:`~vop.data.video.sample_frames`,
  ``"middle"`` mode), exactly what training and evaluation will do; catches damage past
  the first frame too, at the cost of a real decode (~0.1-1 s a video).
* ``"none"``: only look for the files.

A problem (:attr:`CheckReport.problems`) is something that makes runs fail or silently
train and test on fewer videos: a missing or malformed annotation file, an empty split, a
missing video folder, missing or unreadable videos, videos the frame cache recorded as
failed, a frame cache that cannot be opened. Warnings do not fail the check: videos
listed without any caption (the reader leaves them out, as it always has) and videos a
partial frame cache lacks (they are decoded from their files).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vop.data.benchmarks import get_reader
from vop.data.benchmarks.common import DOCS, VIDEO_EXTENSIONS, VideoFinder, record_reads

__all__ = ["PROBES", "CacheCoverage", "CheckReport", "Problem", "SplitCheck", "check_benchmark", "probe_video",
           "terminal_safe"]

PROBES = ("none", "open", "decode")


def terminal_safe(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (``\\x1b``, ``\\n``),
    so a hostile or broken file name cannot move the cursor or recolour the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _names(ids: Sequence[str], sample: int | None) -> str:
    shown = list(ids) if not sample else list(ids)[:sample]
    text = ", ".join(terminal_safe(i) for i in shown)
    return text + (f", ... ({len(ids) - len(shown)} more)" if len(shown) < len(ids) else "")


@dataclass(frozen=True)
class Problem:
    """One thing that makes the benchmark unusable as it is.

    ``kind`` is one of ``annotations``, ``empty``, ``video-folder``, ``missing``,
    ``unreadable``, ``cache``, ``cache-failed``; ``split`` is None for the whole benchmark.
    """

    kind: str
    split: str | None
    message: str  # one line, names escaped for the terminal


@dataclass
class CacheCoverage:
    """Which of a split's videos a frame cache holds (it is keyed by video id)."""

    cached: int
    failed: dict[str, str]  # video id -> the reason the cache recorded
    absent: list[str]  # video ids the cache does not know


@dataclass
class SplitCheck:
    """What :func:`check_benchmark` found for one split."""

    split: str
    files: list[str] = field(default_factory=list)  # absolute paths of the annotation files read
    error: str | None = None  # why the annotations could not be read (then nothing below is set)
    videos: int = 0  # captioned videos the annotations list
    captions: int = 0
    captions_per_video: dict[str, float] | None = None  # {"min", "mean", "max"}
    uncaptioned: list[str] = field(default_factory=list)  # listed without a caption: left out
    videos_checked: bool = False  # False: no video folder (or nothing parsed)
    present: int = 0
    missing: list[str] = field(default_factory=list)  # video ids without a file
    unreadable: dict[str, str] = field(default_factory=dict)  # video id -> reason the probe gave
    cache: CacheCoverage | None = None


@dataclass
class CheckReport:
    """The result of :func:`check_benchmark`; ``ok`` when there is no problem."""

    benchmark: str
    root: str
    video_dir: str
    probe: str
    cache_dir: str | None
    cache_settings: dict[str, int] | None  # {"num_frames", "size"} of the frame cache
    splits: list[SplitCheck]
    problems: list[Problem]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self, sample: int | None = None) -> dict:
        """A JSON-ready dict. Counts are always complete; ``sample`` (when set) cuts each
        list of names to its first ``sample`` entries."""

        def cut(items):
            if not sample:
                return items
            return dict(list(items.items())[:sample]) if isinstance(items, dict) else list(items)[:sample]

        splits = []
        for s in self.splits:
            entry = asdict(s)
            entry["missing_count"] = len(s.missing)
            entry["unreadable_count"] = len(s.unreadable)
            entry["uncaptioned_count"] = len(s.uncaptioned)
            for key in ("missing", "unreadable", "uncaptioned"):
                entry[key] = cut(entry[key])
            if s.cache is not None:
                entry["cache"] = {"cached": s.cache.cached, "failed_count": len(s.cache.failed),
                                  "absent_count": len(s.cache.absent), "failed": cut(s.cache.failed),
                                  "absent": cut(s.cache.absent)}
            splits.append(entry)
        return {
            "ok": self.ok,
            "benchmark": self.benchmark,
            "root": self.root,
            "video_dir": self.video_dir,
            "probe": self.probe,
            "cache_dir": self.cache_dir,
            "cache_settings": self.cache_settings,
            "splits": splits,
            "problems": [asdict(p) for p in self.problems],
            "warnings": list(self.warnings),
        }

    def format(self, sample: int | None = 5) -> str:
        """The report as terminal text; ``sample`` names shown per list (None or 0: all)."""
        lines = [f"{self.benchmark}: annotations {terminal_safe(self.root)}, videos {terminal_safe(self.video_dir)}"
                 f" (probe: {self.probe})"]
        if self.cache_dir is not None:
            settings = (f" ({self.cache_settings['num_frames']} frames of {self.cache_settings['size']} px)"
                        if self.cache_settings else "")
            lines.append(f"frame cache {terminal_safe(self.cache_dir)}{settings}")
        for s in self.splits:
            lines.append(f"  {s.split}:")
            if s.files:
                lines.append(f"    files     {', '.join(terminal_safe(_short(f, self.root)) for f in s.files)}")
            if s.error is not None:
                lines.append(f"    error     {terminal_safe(s.error)}")
                continue
            per = s.captions_per_video
            spread = f" ({per['min']:g} / {per['mean']:.1f} / {per['max']:g} per video, min/mean/max)" if per else ""
            lines.append(f"    captions  {s.videos} videos, {s.captions} captions{spread}")
            if s.uncaptioned:
                lines.append(f"    no caption {len(s.uncaptioned)} (left out): {_names(s.uncaptioned, sample)}")
            if s.videos_checked:
                unreadable = "" if self.probe == "none" else f" ({len(s.unreadable)} unreadable)"
                lines.append(f"    videos    {s.present} present{unreadable}, {len(s.missing)} missing")
                if s.missing:
                    lines.append(f"      missing: {_names(s.missing, sample)}")
                shown = list(s.unreadable.items())[: sample or None]
                for video_id, reason in shown:
                    lines.append(f"      unreadable: {terminal_safe(video_id)}: {terminal_safe(reason)}")
                if len(shown) < len(s.unreadable):
                    lines.append(f"      unreadable: ... ({len(s.unreadable) - len(shown)} more)")
            if s.cache is not None:
                lines.append(f"    cache     {s.cache.cached} cached, {len(s.cache.failed)} failed, "
                             f"{len(s.cache.absent)} not cached")
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        for problem in self.problems:
            lines.append(f"problem: {problem.message}")
        lines.append("OK" if self.ok else f"{len(self.problems)} problem(s); see {DOCS} for the expected layout")
        return "\n".join(lines)


def _short(path: str, root: str) -> str:
    """``path`` relative to ``root`` when it lies inside it (the text output's file names)."""
    try:
        return str(Path(path).relative_to(os.path.abspath(root)))
    except ValueError:
        return path


def probe_video(path: str | os.PathLike, probe: str = "open", num_frames: int = 12) -> str | None:
    """None when the video at ``path`` reads, else why not (see the module docstring)."""
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    if probe == "none":
        return None
    from vop.data.types import VideoReadError

    name = os.fspath(path)
    if probe == "decode":
        from vop.data.video import sample_frames

        try:
            sample_frames(name, num_frames=num_frames, mode="middle")
        except VideoReadError as e:
            return e.reason
        return None
    import av

    try:
        if os.path.getsize(name) == 0:
            return "empty file (0 bytes)"
        with av.open(name) as container:
            if not container.streams.video:
                return "no video stream"
            for _ in container.decode(container.streams.video[0]):
                return None
        return "video stream holds no frames"
    except (av.FFmpegError, OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def _probe_all(paths: list[str], probe: str, num_frames: int, workers: int, progress: bool) -> dict[str, str]:
    """path -> reason for every unreadable path. Threads suffice: FFmpeg decodes without
    the GIL. The bar appears only when probing takes longer than a second."""
    from tqdm import tqdm

    def one(path: str) -> tuple[str, str | None]:
        return path, probe_video(path, probe, num_frames)

    bar = tqdm(total=len(paths), desc=f"probing videos ({probe})", unit="video", disable=not progress, delay=1.0)
    failed: dict[str, str] = {}
    try:
        if workers <= 0 or len(paths) <= 1:
            results = map(one, paths)
            for path, reason in results:
                if reason is not None:
                    failed[path] = reason
                bar.update(1)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="vop-check") as pool:
                for path, reason in pool.map(one, paths):
                    if reason is not None:
                        failed[path] = reason
                    bar.update(1)
    finally:
        bar.close()
    return failed


def check_benchmark(
    benchmark: str,
    root: str | os.PathLike,
    video_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    probe: str = "open",
    num_frames: int = 12,
    workers: int = 0,
    progress: bool = False,
    sample: int = 5,
) -> CheckReport:
    """Check the annotation files, videos and (optionally) frame cache of ``benchmark``.

    Args:
        benchmark: a reader name (``vop.data.benchmarks.READERS``).
        root: the folder of the annotation files (docs/data.md).
        video_dir: the video folder; ``<root>/videos`` by default.
        cache_dir: a frame cache built by ``vop cache``: report its coverage of each split.
        splits: the splits to check; default every split the reader knows.
        probe: ``"open"``, ``"decode"`` or ``"none"`` (see the module docstring).
        num_frames: frames sampled by the ``"decode"`` probe.
        workers: probe in this many threads (0: in this one).
        progress: show a progress bar while probing (on stderr, after a second).
        sample: names quoted per problem message (0: all).

    Never raises for what it checks: everything wrong with the data ends up in
    ``problems``. Raises ``ValueError`` for an unknown benchmark, split or probe.
    """
    reader = get_reader(benchmark)
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    names = list(splits) if splits else list(reader.splits)
    for name in names:
        reader.check_split(name)
    root = Path(root)
    video_path = Path(video_dir) if video_dir is not None else reader.default_video_dir(root)
    problems: list[Problem] = []
    warnings: list[str] = []

    # 1. Annotations, and where each video's file is.
    videos_ok = video_path.is_dir()
    if not videos_ok:
        problems.append(Problem(
            "video-folder", None,
            f"video folder {terminal_safe(os.path.abspath(video_path))} not found (pass --video-dir / video_dir=)",
        ))
    finder = VideoFinder(video_path)  # one listing of the folder for all splits
    results: list[SplitCheck] = []
    located: dict[str, list[tuple[str, Path | None]]] = {}
    ids_of: dict[str, tuple[str, ...]] = {}
    for name in names:
        result = SplitCheck(name)
        results.append(result)
        with record_reads() as log:
            try:
                annotations = reader.annotations(root, name)
            except Exception as e:  # noqa: BLE001 - any parse failure (pickle errors too) is the file's
                annotations = None
                result.error = _first_line(e)
                # A parser's own message (json's "Expecting value: line 1") may not name the file.
                if log.files and not isinstance(e, FileNotFoundError) and str(log.files[-1].name) not in result.error:
                    result.error = f"{log.files[-1]}: {result.error}"
        result.files = [str(f) for f in log.files]
        result.uncaptioned = list(dict.fromkeys(log.uncaptioned))
        if annotations is None:
            problems.append(Problem("annotations", name, f"{benchmark}/{name}: {terminal_safe(result.error or '')}"))
            continue
        for note in log.notes:
            warnings.append(f"{benchmark}/{name}: {terminal_safe(note)}")
        result.videos, result.captions = len(annotations.video_ids), len(annotations.captions)
        ids_of[name] = annotations.video_ids
        if not annotations.video_ids:
            problems.append(Problem("empty", name, f"{benchmark}/{name}: the annotation files list no captioned video"))
            continue
        counts = [0] * len(annotations.video_ids)
        for v in annotations.caption_to_video:
            counts[v] += 1
        result.captions_per_video = {"min": min(counts), "mean": sum(counts) / len(counts), "max": max(counts)}
        if videos_ok:
            found = [finder.find(reader.video_names(v)) for v in annotations.video_ids]
            located[name] = list(zip(annotations.video_ids, found))
            result.videos_checked = True
            result.missing = [v for v, path in located[name] if path is None]
            result.present = len(found) - len(result.missing)

    # 2. Probe each present file once, whichever splits list it.
    unique = list(dict.fromkeys(os.fspath(p) for pairs in located.values() for _, p in pairs if p is not None))
    failed = _probe_all(unique, probe, num_frames, workers, progress) if probe != "none" else {}
    for result in results:
        for video_id, path in located.get(result.split, []):
            if path is not None and os.fspath(path) in failed:
                result.unreadable[video_id] = failed[os.fspath(path)]

    # 3. The frame cache, keyed by video id.
    cache_settings = None
    cache = None
    if cache_dir is not None:
        from vop.data.cache import FrameCache

        try:
            cache = FrameCache.open(cache_dir)
            cache_settings = {"num_frames": cache.num_frames, "size": cache.size}
        except (OSError, ValueError, KeyError) as e:
            problems.append(Problem("cache", None, f"frame cache {terminal_safe(os.fspath(cache_dir))}: "
                                                   f"{terminal_safe(_first_line(e))} (build it with `vop cache`)"))
    for result in results:
        if result.error is not None or not result.videos:
            continue
        if cache is not None:
            ids = ids_of[result.split]
            failed_ids = {v: cache.failed[v] for v in ids if v not in cache and v in cache.failed}
            absent = [v for v in ids if v not in cache and v not in cache.failed]
            result.cache = CacheCoverage(cached=len(ids) - len(failed_ids) - len(absent), failed=failed_ids,
                                         absent=absent)
        _split_problems(benchmark, result, video_path, reader, sample, problems, warnings)

    return CheckReport(
        benchmark=benchmark,
        root=os.path.abspath(root),
        video_dir=os.path.abspath(video_path),
        probe=probe,
        cache_dir=os.path.abspath(cache_dir) if cache_dir is not None else None,
        cache_settings=cache_settings,
        splits=results,
        problems=problems,
        warnings=warnings,
    )


def _split_problems(benchmark: str, s: SplitCheck, video_dir: Path, reader, sample: int,
                    problems: list[Problem], warnings: list[str]) -> None:
    name = f"{benchmark}/{s.split}"
    if s.missing:
        hint = ""
        if len(s.missing) == s.videos:
            first = reader.video_names(s.missing[0])[0]
            hint = f" (none is there: looked for e.g. {terminal_safe(first)}{{{','.join(VIDEO_EXTENSIONS[:5])},...}})"
        problems.append(Problem(
            "missing", s.split,
            f"{name}: {len(s.missing)} of {s.videos} videos not found under "
            f"{terminal_safe(os.path.abspath(video_dir))}{hint}: {_names(s.missing, sample)}",
        ))
    if s.unreadable:
        shown = ", ".join(f"{terminal_safe(v)} ({terminal_safe(r)})"
                          for v, r in list(s.unreadable.items())[: sample or None])
        more = len(s.unreadable) - (min(sample, len(s.unreadable)) if sample else len(s.unreadable))
        problems.append(Problem(
            "unreadable", s.split,
            f"{name}: {len(s.unreadable)} of {s.present} video files unreadable: {shown}"
            + (f", ... ({more} more)" if more else ""),
        ))
    if s.cache is not None and s.cache.failed:
        problems.append(Problem(
            "cache-failed", s.split,
            f"{name}: the frame cache recorded {len(s.cache.failed)} videos as unreadable (they are skipped; fix "
            f"the files and rebuild with `vop cache ... --overwrite`): {_names(list(s.cache.failed), sample)}",
        ))
    if s.cache is not None and s.cache.absent:
        warnings.append(f"{name}: {len(s.cache.absent)} of {s.videos} videos are not in the frame cache (they are "
                        f"decoded from their files): {_names(s.cache.absent, sample)}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(error).__name__}: {message}" if not isinstance(error, (OSError, ValueError)) else message

