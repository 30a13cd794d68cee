"""Shared pieces of the search tests (no tests here): tiny mp4 collections and indexes
encoded zero-shot on the random ``tiny`` backbone (32 px frames), so everything is fast."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers_video import write_corrupt_file, write_video

NUM_VIDEOS = 6


def clip_frames(seed: int, num: int = 8, size: int = 32) -> np.ndarray:
    """``[num, size, size, 3]`` uint8: a coloured square moving over a coloured background."""
    rng = np.random.default_rng(seed)
    background, colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    frames = np.broadcast_to(background.astype(np.uint8), (num, size, size, 3)).copy()
    for t in range(num):
        x = (t * 3 + seed * 5) % (size - 8)
        frames[t, 8:16, x:x + 8] = colour
    return frames


def make_collection(folder: Path, count: int = NUM_VIDEOS, with_bad: bool = True) -> Path:
    """``count`` tiny mp4s (some in a subfolder) and, optionally, one corrupt file."""
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rel = f"sub/clip{i}.mp4" if i % 2 else f"clip{i}.mp4"
        write_video(folder / rel, clip_frames(i))
    if with_bad:
        write_corrupt_file(folder / "broken.mp4")
    (folder / "notes.txt").write_text("not a video")
    return folder


def encode(video_dir: Path, out: Path, checkpoint: str = "zero-shot", backbone: str | None = "tiny", cache=None,
           **config):
    from vop.search.encode import EncodeConfig, encode_collection
    from vop.search.method import load_method

    model, identity = load_method(checkpoint, backbone, cache=cache)
    config = EncodeConfig(progress=False, **{"batch_size": 4, **config})
    return encode_collection(video_dir, out, model, identity, config)


def save_prompts(path: Path, seed: int = 0, method: str = "vop") -> Path:
    """A method checkpoint on the ``tiny`` backbone with random prompts."""
    import torch

    import vop.backbone
    import vop.methods
    from vop.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    clip = vop.backbone.load("tiny")
    start = vop.backbone.identity(clip)  # before training changes any backbone tensor
    model = vop.create(method, clip)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.1 * torch.randn_like(p))  # "trained": differs from the shared backbone
    return save_checkpoint(path, model, backbone_source="tiny", backbone_identity=start)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A collection and its zero-shot index, built once (tests that change files copy it)."""
    base = tmp_path_factory.mktemp("search")
    videos = make_collection(base / "videos")
    report = encode(videos, base / "index")
    return videos, base / "index", report


def copy_built(built, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the collection, and where its index should go (not yet built: an
    index records its collection's absolute root)."""
    videos, index, _ = built
    shutil.copytree(videos, tmp_path / "videos", copy_function=shutil.copy2)
    return tmp_path / "videos", tmp_path / "index"
