"""ActivityNet Captions as paragraph-to-video retrieval.

``train.json`` and ``val_1.json`` map ``"v_<youtube id>"`` to ``{"duration",
"timestamps", "sentences"}``; the sentences of a video, in order, are joined by a space
into one paragraph for the whole video. Following the paper (and CLIP4Clip), ``test`` is
``val_1``.

``val`` is held out of ``train.json`` (the last
:data:`~vop.data.benchmarks.common.VAL_FRACTION` of the ids in natural order), *not*
``val_2.json``: val_2 annotates the same videos as val_1, so choosing a model on it would
choose on the test videos. ``train`` is the whole ``train.json`` (the paper's),
``train-minus-val`` leaves the validation videos out.

Video files are ``v_<id>.<ext>`` (the ActivityNet download) or ``<id>.<ext>`` (the
CLIP4Clip layout); both are looked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from vop.data.benchmarks.common import VAL_FRACTION, Annotations, BenchmarkReader, hold_out

_LAYOUT = """\
<root>/
  train.json         ActivityNet Captions training annotations (train, train-minus-val, val)
  val_1.json         the test split
  videos/v_<id>.mp4 ...   (or <id>.mp4; or video_dir=...; .mp4/.webm/.mkv/.avi/.mov)"""


class ActivityNetReader(BenchmarkReader):
    """ActivityNet Captions paragraph-to-video, tested on val_1."""

    name = "activitynet"
    splits = ("train", "train-minus-val", "val", "test")
    video_ext = ".mp4"
    layout = _LAYOUT

    def __init__(self, val_fraction: float = VAL_FRACTION):
        self.val_fraction = val_fraction  # share of training videos held out as val

    def annotations(self, root: Path, split: str) -> Annotations:
        self.check_split(split)
        filename = "val_1.json" if split == "test" else "train.json"
        path = self.require(root, filename)
        paragraphs = self._paragraphs(path)
        if split in ("val", "train-minus-val"):
            kept, held = hold_out(list(paragraphs), self.val_fraction)
            paragraphs = {v: paragraphs[v] for v in (held if split == "val" else kept)}
        return Annotations.from_groups(((v, [p]) for v, p in paragraphs.items()), path)

    def video_names(self, video_id: str) -> tuple[str, ...]:
        return (video_id, video_id[2:]) if video_id.startswith("v_") else (video_id, f"v_{video_id}")

    @staticmethod
    def _paragraphs(path: Path) -> dict[str, str]:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object mapping video ids to annotations")
        return {
            video_id: " ".join(s.strip() for s in entry.get("sentences", []) if s.strip())
            for video_id, entry in data.items()
        }
