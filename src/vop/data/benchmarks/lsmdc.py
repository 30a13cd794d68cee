"""LSMDC (the Large Scale Movie Description Challenge, 2016 retrieval track).

The annotation files are tab-separated, one row per clip: ``clip_id, start, end,
start_aligned, end_aligned, sentence``. ``LSMDC16_annos_training.csv`` is ``train``,
``LSMDC16_challenge_1000_publictect.csv`` (sic) is the 1,000-clip ``test``.
``val`` is ``LSMDC16_annos_val.csv`` when it is there (it is disjoint from training);
otherwise it is held out of training: the last
:data:`~vop.data.benchmarks.common.VAL_FRACTION` of the clip ids in natural order,
widened to whole movies (clip ids start with the movie), so that no movie is in both. ``train`` is
the whole training file, ``train-minus-val`` leaves the held-out clips out (it equals
``train`` when the val file exists).

A clip id is ``<movie>_<hh.mm.ss.sss>-<hh.mm.ss.sss>``; the download stores clips as
``<movie>/<clip_id>.avi``, some copies flat as ``<clip_id>.<ext>``: both are looked for.
"""

from __future__ import annotations

import re
from pathlib import Path

from vop.data.benchmarks.common import VAL_FRACTION, Annotations, BenchmarkReader, hold_out, natural_key

TRAIN_CSV = "LSMDC16_annos_training.csv"
VAL_CSV = "LSMDC16_annos_val.csv"
TEST_CSV = "LSMDC16_challenge_1000_publictect.csv"

_CLIP_TIMES = re.compile(r"_\d+\.\d+\.\d+\.\d+-\d+\.\d+\.\d+\.\d+$")

_LAYOUT = """\
<root>/
  LSMDC16_annos_training.csv              train (tab-separated)
  LSMDC16_annos_val.csv                   val (optional; else held out of train)
  LSMDC16_challenge_1000_publictect.csv   test: 1,000 clips
  videos/<movie>/<clip_id>.avi ...        (or videos/<clip_id>.avi; or video_dir=...;
                                           .mp4/.webm/.mkv/.avi/.mov)"""


def movie_of(clip_id: str) -> str | None:
    """``"0001_American_Beauty_00.00.51.926-00.00.54.129"`` -> ``"0001_American_Beauty"``."""
    match = _CLIP_TIMES.search(clip_id)
    return clip_id[: match.start()] if match else None


class LSMDCReader(BenchmarkReader):
    """LSMDC text-to-clip retrieval."""

    name = "lsmdc"
    splits = ("train", "train-minus-val", "val", "test")
    video_ext = ".avi"
    layout = _LAYOUT

    def __init__(self, val_fraction: float = VAL_FRACTION):
        self.val_fraction = val_fraction  # share of training clips held out when there is no val file

    def annotations(self, root: Path, split: str) -> Annotations:
        self.check_split(split)
        if split == "test":
            return self._read(self.require(root, TEST_CSV))
        if split == "val" and (Path(root) / VAL_CSV).is_file():
            return self._read(self.require(root, VAL_CSV))
        train = self._read(self.require(root, TRAIN_CSV))
        if split == "train" or (split == "train-minus-val" and (Path(root) / VAL_CSV).is_file()):
            return train
        held = self._held_out(train.video_ids)
        return train.keep([(v in held) == (split == "val") for v in train.video_ids])

    def video_names(self, video_id: str) -> tuple[str, ...]:
        movie = movie_of(video_id)
        return (f"{movie}/{video_id}", video_id) if movie else (video_id,)

    def _held_out(self, clip_ids: tuple[str, ...]) -> set[str]:
        """The last ``val_fraction`` of the clips, widened to whole movies so that no movie
        is in both parts."""
        _, held = hold_out(clip_ids, self.val_fraction)
        first = min((movie_of(v) or v for v in held), key=natural_key)
        return {v for v in clip_ids if natural_key(movie_of(v) or v) >= natural_key(first)}

    @staticmethod
    def _read(path: Path) -> Annotations:
        rows: list[tuple[str, list[str]]] = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 6:
                    raise ValueError(
                        f"{path}:{number}: expected 6 tab-separated fields (clip_id, start, end, "
                        f"start_aligned, end_aligned, sentence), found {len(fields)}"
                    )
                # A sentence with a stray tab keeps its text rather than losing the tail.
                rows.append((fields[0].strip(), [" ".join(fields[5:])]))
        return Annotations.from_groups(rows, path)
