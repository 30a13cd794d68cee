"""MSVD (the Microsoft Research Video Description corpus, YouTubeClips).

Splits are the standard 1,200 / 100 / 670 videos of ``train_list.txt``, ``val_list.txt``
and ``test_list.txt`` (one id per line). Captions come from ``captions_msvd.json``
(video id -> list of strings) or, when that is absent, CLIP4Clip's ``raw-captions.pkl``
(video id -> list of token lists, joined by spaces). Every caption is a query, in the
test split too (about 40 per video), so text-to-video counts a hit for any caption's
own video and video-to-text ranks the best of a video's captions.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

from vop.data.benchmarks.common import Annotations, BenchmarkReader

CAPTIONS_JSON = "captions_msvd.json"
CAPTIONS_PKL = "raw-captions.pkl"

_LAYOUT = """\
<root>/
  captions_msvd.json    video id -> captions   (or raw-captions.pkl: id -> token lists)
  train_list.txt        1,200 video ids
  val_list.txt          100
  test_list.txt         670
  videos/<id>.avi ...   the YouTubeClips files (or video_dir=...; .mp4/.webm/.mkv/.avi/.mov)"""


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only built-in containers and strings: a captions file has no business
    naming a class, and refusing classes keeps a doctored file from running code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"caption file refers to {module}.{name}; only plain data is accepted")


def load_plain_pickle(path: Path):
    """Load a pickle of plain built-in data (dicts, lists, strings, numbers)."""
    return _PlainUnpickler(io.BytesIO(Path(path).read_bytes())).load()


class MSVDReader(BenchmarkReader):
    """MSVD text-video retrieval with all captions as queries."""

    name = "msvd"
    splits = ("train", "val", "test")
    video_ext = ".avi"
    layout = _LAYOUT

    def annotations(self, root: Path, split: str) -> Annotations:
        self.check_split(split)
        list_name = f"{split}_list.txt"
        list_path = self.require(root, list_name)
        ids = [line.strip() for line in list_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        captions_path = self.require(root, CAPTIONS_JSON, alternatives=(CAPTIONS_PKL,))
        captions = self._captions(captions_path)
        return Annotations.from_groups(((v, captions.get(v, [])) for v in ids), list_path, captions_path)

    @staticmethod
    def _captions(path: Path) -> dict[str, list[str]]:
        if path.suffix == ".json":
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        else:
            data = load_plain_pickle(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping from video id to captions")
        return {
            video_id: [c if isinstance(c, str) else " ".join(c) for c in captions]
            for video_id, captions in data.items()
        }
