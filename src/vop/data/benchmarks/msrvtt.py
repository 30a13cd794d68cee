"""MSR-VTT in the CLIP4Clip / JSFusion file format.

- ``MSRVTT_data.json``: ``{"videos": [...], "sentences": [{"caption", "video_id",
  "sen_id"}, ...]}``, about 20 captions per video.
- ``MSRVTT_train.9k.csv`` / ``MSRVTT_train.7k.csv``: the training video ids (column
  ``video_id``); the two training splits of the paper.
- ``MSRVTT_JSFUSION_test.csv``: the 1k-A test set, rows ``key,vid_key,video_id,sentence``,
  one caption per video. Both training splits are tested on it.

MSR-VTT has no official validation set for these splits, so ``val`` is held out of the
training list: the last :data:`~vop.data.benchmarks.common.VAL_FRACTION` of the training
ids in natural order (``video9999`` last), one caption each (the lowest ``sen_id``), like
the test. ``train`` is the whole training list (the paper's), ``train-minus-val`` the
training list without the validation videos, for tuning on ``val`` without leakage.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vop.data.benchmarks.common import VAL_FRACTION, Annotations, BenchmarkReader, hold_out

DATA_JSON = "MSRVTT_data.json"
TEST_CSV = "MSRVTT_JSFUSION_test.csv"

_LAYOUT = """\
<root>/
  MSRVTT_data.json           captions of all 10k videos (train, train-minus-val, val)
  {train_csv}   training video ids
  MSRVTT_JSFUSION_test.csv   the 1k-A test: one caption per video
  videos/video0.mp4 ...      (or video_dir=...; .mp4/.webm/.mkv/.avi/.mov)"""


class MSRVTTReader(BenchmarkReader):
    """MSR-VTT with the training list ``train_csv`` (9k or 7k), tested on 1k-A."""

    splits = ("train", "train-minus-val", "val", "test")
    video_ext = ".mp4"

    def __init__(self, name: str, train_csv: str, val_fraction: float = VAL_FRACTION):
        self.name = name
        self.train_csv = train_csv  # file of training video ids, column video_id
        self.val_fraction = val_fraction  # share of training videos held out as val
        self.layout = _LAYOUT.format(train_csv=train_csv.ljust(24))

    def train_video_ids(self, root: Path) -> tuple[str, ...]:
        """The ids of the training list, in file order."""
        path = self.require(root, self.train_csv)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "video_id" not in rows[0]:
            raise ValueError(f"{path}: no column 'video_id' (columns: {', '.join(rows[0])})")
        return tuple(row["video_id"].strip() for row in rows if row["video_id"].strip())

    def annotations(self, root: Path, split: str) -> Annotations:
        self.check_split(split)
        if split == "test":
            return self._test(root)
        train_ids = self.train_video_ids(root)
        kept, held = hold_out(train_ids, self.val_fraction)
        ids = {"train": train_ids, "train-minus-val": kept, "val": held}[split]
        captions = self._captions(root)
        # Ids from the training list, captions from the data json: a warning names both.
        files = {"origin": Path(root) / self.train_csv, "captions_from": Path(root) / DATA_JSON}
        if split == "val":
            return Annotations.from_groups(((v, captions.get(v, [])[:1]) for v in ids), **files)
        return Annotations.from_groups(((v, captions.get(v, [])) for v in ids), **files)

    def _test(self, root: Path) -> Annotations:
        path = self.require(root, TEST_CSV)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"video_id", "sentence"} <= set(rows[0]):
            raise ValueError(f"{path}: expected columns video_id and sentence, found {', '.join(rows[0])}")
        return Annotations.from_groups(((r["video_id"].strip(), [r["sentence"]]) for r in rows), path)

    def _captions(self, root: Path) -> dict[str, list[str]]:
        """video id -> its captions, ordered by ``sen_id``."""
        path = self.require(root, DATA_JSON)
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or "sentences" not in data:
            raise ValueError(f"{path}: expected an object with a 'sentences' list")
        by_video: dict[str, list[tuple[int, str]]] = {}
        for position, sentence in enumerate(data["sentences"]):
            sen_id = sentence.get("sen_id", position)
            by_video.setdefault(sentence["video_id"], []).append((sen_id, sentence["caption"]))
        return {v: [c for _, c in sorted(pairs, key=lambda p: p[0])] for v, pairs in by_video.items()}
