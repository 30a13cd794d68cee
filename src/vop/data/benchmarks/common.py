"""What every benchmark reader shares.

A reader turns a benchmark's annotation files into :class:`Annotations` (video ids,
captions, which caption describes which video); :class:`BenchmarkReader` then looks for
each video file, leaves out (and reports) the ones that are absent, and builds the
:class:`~vop.data.types.RetrievalSplit` with a file-backed video source. The format
modules only parse; finding files, validating and reporting live here once.
"""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from vop.data.types import RetrievalSplit

if TYPE_CHECKING:
    from vop.data.cache import FrameCache

logger = logging.getLogger(__name__)

# Containers a video may come in, in order of preference when one id has several files.
# The first five are the usual ones; the rest are original Flickr uploads (DiDeMo).
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".webm", ".mkv", ".avi", ".mov",
    ".m4v", ".mpg", ".mpeg", ".3gp", ".wmv", ".flv",
)

# The share of training videos held out as a validation split by the benchmarks that
# have no official one (MSR-VTT, ActivityNet Captions, LSMDC without its val file).
VAL_FRACTION = 0.05

DOCS = "docs/data.md"

# How many missing ids a warning or summary names before it only counts.
_SHOWN_IDS = 5


@dataclass
class ReadLog:
    """What the readers did while :func:`record_reads` was active (for ``vop data check``):
    the annotation files they opened, and the videos they left out for lack of a caption."""

    files: list[Path] = field(default_factory=list)  # absolute paths, in the order first opened
    uncaptioned: list[str] = field(default_factory=list)  # video ids listed without any caption
    notes: list[str] = field(default_factory=list)  # the warnings those videos caused


_READ_LOG: ContextVar[ReadLog | None] = ContextVar("vop_read_log", default=None)


@contextmanager
def record_reads() -> Iterator[ReadLog]:
    """Collect a :class:`ReadLog` of the reader calls made inside the ``with`` block."""
    log = ReadLog()
    token = _READ_LOG.set(log)
    try:
        yield log
    finally:
        _READ_LOG.reset(token)


def _absolute(path: Path | str) -> str:
    """The path as a message shows it: absolute (a relative root is ambiguous in a log)."""
    return os.path.abspath(path)


@dataclass(frozen=True)
class Annotations:
    """One split as its annotation files describe it, before any video file is looked for.

    ``caption_to_video[i]`` indexes ``video_ids``; every video has at least one caption.
    """

    video_ids: tuple[str, ...]
    captions: tuple[str, ...]
    caption_to_video: tuple[int, ...]

    @classmethod
    def from_groups(
        cls,
        groups: Iterable[tuple[str, Sequence[str]]],
        origin: Path | str = "",
        captions_from: Path | str = "",
    ) -> Annotations:
        """Build from ``(video_id, captions)`` pairs in the order they should keep.

        A video listed twice gets the captions of both entries. Videos without any caption
        are left out with a warning: they have no query, and a gallery video without a
        ground-truth caption would break video-to-text ranks. ``origin`` is the file the
        video ids came from and ``captions_from`` the file their captions came from when
        that is another one; the warning names both by full path.
        """
        order: list[str] = []
        grouped: dict[str, list[str]] = {}
        for video_id, captions in groups:
            if video_id not in grouped:
                order.append(video_id)
                grouped[video_id] = []
            grouped[video_id].extend(c.strip() for c in captions if c and c.strip())
        uncaptioned = [v for v in order if not grouped[v]]
        if uncaptioned:
            message = "%d video(s)%s have no caption%s and are left out: %s" % (
                len(uncaptioned),
                f" listed in {_absolute(origin)}" if origin else "",
                f" in {_absolute(captions_from)}" if captions_from else "",
                _first_ids(uncaptioned),
            )
            logger.warning(message)
            log = _READ_LOG.get()
            if log is not None:
                log.uncaptioned.extend(uncaptioned)
                log.notes.append(message)
        video_ids = tuple(v for v in order if grouped[v])
        captions: list[str] = []
        caption_to_video: list[int] = []
        for index, video_id in enumerate(video_ids):
            captions.extend(grouped[video_id])
            caption_to_video.extend([index] * len(grouped[video_id]))
        return cls(video_ids, tuple(captions), tuple(caption_to_video))

    def keep(self, keep: Sequence[bool]) -> Annotations:
        """The videos where ``keep`` is true, with their captions, re-indexed."""
        new_index: dict[int, int] = {}
        for old, flag in enumerate(keep):
            if flag:
                new_index[old] = len(new_index)
        pairs = [(c, new_index[v]) for c, v in zip(self.captions, self.caption_to_video) if v in new_index]
        return Annotations(
            video_ids=tuple(v for v, flag in zip(self.video_ids, keep) if flag),
            captions=tuple(c for c, _ in pairs),
            caption_to_video=tuple(v for _, v in pairs),
        )


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: ``video9 < video10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def hold_out(video_ids: Sequence[str], fraction: float = VAL_FRACTION) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split ids into ``(kept, held_out)``: the held-out part is the last ``fraction`` of
    the ids in natural sort order (at least one), so it does not depend on file order or
    a seed. Both parts keep the input order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    n_held = max(1, int(len(video_ids) * fraction))
    held = set(sorted(video_ids, key=natural_key)[-n_held:])
    kept = tuple(v for v in video_ids if v not in held)
    return kept, tuple(v for v in video_ids if v in held)


def strip_video_extension(name: str) -> str:
    """``"abc.mov"`` -> ``"abc"``; a name without a known video extension is returned as is."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in VIDEO_EXTENSIONS else name


class VideoFinder:
    """Finds ``<folder>/<stem><ext>`` for any ext of :data:`VIDEO_EXTENSIONS`.

    Each folder is listed once (one ``scandir`` instead of a ``stat`` per id and
    extension: 10k ids x 11 extensions would be 110k system calls on a network disk).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._listings: dict[Path, dict[str, Path]] = {}

    def find(self, names: Iterable[str]) -> Path | None:
        """The first file matching one of ``names`` (``"stem"`` or ``"subfolder/stem"``)."""
        for name in names:
            rel = PurePosixPath(name)
            folder = self.root.joinpath(*rel.parts[:-1])
            hit = self._listing(folder).get(rel.name)
            if hit is not None:
                return hit
        return None

    def _listing(self, folder: Path) -> dict[str, Path]:
        if folder not in self._listings:
            found: dict[str, tuple[int, Path]] = {}
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                entries = []
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                ext = ext.lower()
                if ext not in VIDEO_EXTENSIONS or not entry.is_file():
                    continue
                rank = VIDEO_EXTENSIONS.index(ext)
                if stem not in found or rank < found[stem][0]:
                    found[stem] = (rank, Path(entry.path))
            self._listings[folder] = {stem: path for stem, (_, path) in found.items()}
        return self._listings[folder]


def _first_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN_IDS])
    return shown + (", ..." if len(ids) > _SHOWN_IDS else "")


class BenchmarkReader(ABC):
    """Reads one benchmark: its annotation files under ``root`` and its videos.

    Subclasses set the class attributes and implement :meth:`annotations` (and
    :meth:`video_names` when files are not simply ``<video_id>.<ext>``).
    """

    name: str = ""  # registry key, e.g. "msrvtt-9k"
    splits: tuple[str, ...] = ("train", "val", "test")  # the split names load() accepts
    video_ext: str = ".mp4"  # the extension assumed when check_videos=False
    layout: str = ""  # the expected folder layout, shown when a file is missing

    @abstractmethod
    def annotations(self, root: Path, split: str) -> Annotations:
        """Parse the annotation files of ``split`` under ``root``."""

    def video_names(self, video_id: str) -> tuple[str, ...]:
        """File stems (relative to the video folder, ``/``-separated) to try for a video."""
        return (video_id,)

    # -- helpers for subclasses ---------------------------------------------------------

    def require(self, root: Path, filename: str, alternatives: Sequence[str] = ()) -> Path:
        """``root / filename`` (or the first existing alternative); a missing file raises
        FileNotFoundError naming it and the expected layout."""
        for name in (filename, *alternatives):
            path = Path(root) / name
            if path.is_file():
                log = _READ_LOG.get()
                if log is not None and Path(_absolute(path)) not in log.files:
                    log.files.append(Path(_absolute(path)))
                return path
        names = " or ".join(repr(n) for n in (filename, *alternatives))
        raise FileNotFoundError(
            f"{self.name}: annotation file {names} not found in {root}.\n"
            f"Expected layout:\n{self.layout.rstrip()}\n"
            f"See {DOCS} for where the files come from."
        )

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name} has no split {split!r}; known: {', '.join(self.splits)}")

    # -- the shared part ------------------------------------------------------------------

    def default_video_dir(self, root: Path) -> Path:
        return Path(root) / "videos"

    def locate(self, annotations: Annotations, video_dir: Path) -> list[Path | None]:
        """The file of each video, or None where none is found."""
        if not Path(video_dir).is_dir():
            raise FileNotFoundError(
                f"{self.name}: video folder {video_dir} not found (pass video_dir=..., or "
                f"check_videos=False to read the annotations only). See {DOCS}."
            )
        finder = VideoFinder(video_dir)
        return [finder.find(self.video_names(v)) for v in annotations.video_ids]

    def load(
        self,
        root: Path | str,
        split: str,
        video_dir: Path | str | None = None,
        check_videos: bool = True,
        cache: FrameCache | None = None,
    ) -> RetrievalSplit:
        """Read ``split``; see :func:`vop.data.benchmarks.load_split`."""
        from vop.data.sources import FileVideoSource  # decoding stack only when a split is built

        self.check_split(split)
        root = Path(root)
        video_dir = Path(video_dir) if video_dir is not None else self.default_video_dir(root)
        annotations = self.annotations(root, split)
        name = f"{self.name}/{split}"
        if not annotations.video_ids:
            raise ValueError(f"{name}: the annotation files under {root} list no captioned video")
        missing: tuple[str, ...] = ()
        if check_videos:
            found = self.locate(annotations, video_dir)
            missing = tuple(v for v, path in zip(annotations.video_ids, found) if path is None)
            if len(missing) == len(found):
                raise FileNotFoundError(
                    f"{name}: none of the {len(found)} videos found under {video_dir} "
                    f"(looked for e.g. {self.video_names(annotations.video_ids[0])[0]}"
                    f"{{{','.join(VIDEO_EXTENSIONS[:5])},...}}). See {DOCS}."
                )
            if missing:
                logger.warning(
                    "%s: %d of %d videos not found under %s and left out: %s",
                    name, len(missing), len(found), video_dir, _first_ids(missing),
                )
                annotations = annotations.keep([path is not None for path in found])
            paths = [path for path in found if path is not None]
        else:
            paths = [video_dir / f"{self.video_names(v)[0]}{self.video_ext}" for v in annotations.video_ids]
        return RetrievalSplit(
            name=name,
            video_ids=annotations.video_ids,
            captions=annotations.captions,
            caption_to_video=annotations.caption_to_video,
            # Keyed by video id, not file stem: the two differ where a file is found under
            # another name (ActivityNet without "v_", DiDeMo without ".mov").
            source=FileVideoSource(paths, cache=cache, keys=annotations.video_ids),
            missing=missing,
        )

    def summarize(self, root: Path | str, video_dir: Path | str | None = None, check_videos: bool = True) -> dict:
        """Videos, captions and missing videos per split; see :func:`vop.data.benchmarks.summarize`."""
        root = Path(root)
        video_dir = Path(video_dir) if video_dir is not None else self.default_video_dir(root)
        check_videos = check_videos and video_dir.is_dir()
        splits: dict[str, dict] = {}
        for split in self.splits:
            try:
                annotations = self.annotations(root, split)
            except (FileNotFoundError, ValueError) as err:
                splits[split] = {"error": str(err).splitlines()[0]}  # the layout is reader.layout
                continue
            entry: dict = {"videos": len(annotations.video_ids), "captions": len(annotations.captions)}
            if check_videos:
                found = self.locate(annotations, video_dir)
                missing = [v for v, path in zip(annotations.video_ids, found) if path is None]
                entry["missing"] = len(missing)
                entry["missing_examples"] = missing[:_SHOWN_IDS]
            else:
                entry["missing"] = None
            splits[split] = entry
        return {
            "benchmark": self.name,
            "root": str(root),
            "video_dir": str(video_dir),
            "videos_checked": check_videos,
            "splits": splits,
        }
