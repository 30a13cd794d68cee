"""DiDeMo as paragraph-to-video retrieval, from the LocalizingMoments annotation files.

``{train,val,test}_data.json`` are lists of moments ``{"annotation_id", "description",
"video", "times", ...}``. Following CLIP4Clip and the VoP protocol, the moments are
ignored as moments: all descriptions of a video, in annotation order, are joined by a
space into one paragraph that describes the whole video. DiDeMo has an official
validation set, so ``val`` is ``val_data.json``.

The ``video`` field is the original Flickr file name (e.g. ``<user>_<id>_<hash>.mov``);
the AWS download script saves it as ``<video>.mp4``, conversions often as
``<name without extension>.mp4``: both are looked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from vop.data.benchmarks.common import Annotations, BenchmarkReader, strip_video_extension

_LAYOUT = """\
<root>/
  train_data.json    LocalizingMoments annotations (train)
  val_data.json      (val)
  test_data.json     (test)
  videos/<video>.mp4 ...   <video> as in the json, with or without its own extension
                           (or video_dir=...; .mp4/.webm/.mkv/.avi/.mov)"""


class DiDeMoReader(BenchmarkReader):
    """DiDeMo paragraph-to-video: one paragraph per video, whole video."""

    name = "didemo"
    splits = ("train", "val", "test")
    video_ext = ".mp4"
    layout = _LAYOUT

    def annotations(self, root: Path, split: str) -> Annotations:
        self.check_split(split)
        filename = f"{split}_data.json"
        path = self.require(root, filename)
        with open(path, encoding="utf-8") as f:
            moments = json.load(f)
        if not isinstance(moments, list):
            raise ValueError(f"{path}: expected a list of moments")
        paragraphs: dict[str, list[str]] = {}
        for moment in moments:
            description = moment.get("description", "").strip()
            paragraphs.setdefault(moment["video"], [])
            if description:
                paragraphs[moment["video"]].append(description)
        return Annotations.from_groups(((v, [" ".join(d)]) for v, d in paragraphs.items()), path)

    def video_names(self, video_id: str) -> tuple[str, ...]:
        stem = strip_video_extension(video_id)
        return (video_id,) if stem == video_id else (video_id, stem)
