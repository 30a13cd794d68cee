"""``vop serve --demo``: a searchable collection out of the box.

Writes the first ``count`` videos of the synthetic downstream world's test split (held
out of training) as real mp4 files, indexes them with the shipped tiny CLIP and, when
``vop demo`` has saved them, its trained prompts (else zero-shot, with a note), and
returns what :func:`vop.search.app.create_app` needs.

Where things live (``$VOP_DEMO_DIR``, default ``~/.cache/vop/demo``)::

    <demo dir>/prompts/                 the checkpoint `vop demo` saves (DEMO_PROMPTS)
    <demo dir>/search/videos/*.mp4      the collection, with captions.json
    <demo dir>/search/index-<encoder>/  its index ("prompts" or "zero-shot")
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vop import atomic
from vop.paths import demo_home, demo_prompts_dir

__all__ = ["DEMO_BACKBONE", "DEMO_COUNT", "DemoSetup", "demo_prompts_dir", "demo_search_dir", "prepare_demo",
           "write_demo_videos"]

DEMO_BACKBONE = "tiny-synthetic"  # the shipped pretrained tiny CLIP
FALLBACK_BACKBONE = "tiny"  # random weights: only so the demo runs before tiny-synthetic is built
DEMO_COUNT = 48  # videos (24 reversal pairs)
DEMO_FRAMES, DEMO_FPS, DEMO_SCALE = 24, 8, 2  # 3 s clips, rendered at 64 px and stored at 128 px


def demo_search_dir(base: Path | None = None) -> Path:
    return (Path(base) if base else demo_home()) / "search"


def _codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """uint8 ``[T, H, W, 3]`` -> an H.264 (or MPEG-4 part 2) mp4, written to a temp name first."""
    import av

    codec = _codec()
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"} if codec == "libx264" else {"qscale": "2"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    atomic.fsync_file(tmp)  # durable before it is published: a kill never leaves a truncated video
    tmp.replace(path)
    atomic.fsync_dir(path.parent)


def write_demo_videos(folder: Path, count: int = DEMO_COUNT, seed: int = 0) -> list[dict]:
    """Write the first ``count`` test-split videos to ``folder`` (skipping ones already there);
    returns and saves (``captions.json``) ``[{"path", "caption", "kind"}]``."""
    from vop.data.synthetic import DownstreamWorld

    folder.mkdir(parents=True, exist_ok=True)
    manifest_file = folder / "captions.json"
    if manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text())
        if manifest.get("seed") == seed and len(manifest.get("videos", [])) == count and all(
                (folder / v["path"]).is_file() for v in manifest["videos"]):
            return manifest["videos"]
    split = DownstreamWorld(seed=seed).split("test")
    source = split.source
    count = min(count, split.num_videos)
    videos = []
    for start in range(0, count, 16):
        batch = list(range(start, min(count, start + 16)))
        frames = source.load_batch(batch, num_frames=DEMO_FRAMES).numpy()  # [B, T, 64, 64, 3]
        for i, clip in zip(batch, frames):
            info = source.info(i)
            slug = re.sub(r"[^a-z0-9]+", "-", f"{info.kind} {info.subject.replace('->', ' to ')}").strip("-")
            name = f"{i:03d}-{slug}.mp4"
            big = clip.repeat(DEMO_SCALE, axis=1).repeat(DEMO_SCALE, axis=2)  # nearest upscale for viewing
            if not (folder / name).is_file():
                _write_mp4(folder / name, big, DEMO_FPS)
            videos.append({"path": name, "caption": info.caption(), "kind": info.kind})
    atomic.write_text(manifest_file, json.dumps({"seed": seed, "videos": videos}, indent=1))
    return videos


@dataclass
class DemoSetup:
    videos: Path  # the collection
    index: Path  # its index
    checkpoint: str  # the prompts checkpoint, or "zero-shot"
    backbone: str | None  # the backbone source for zero-shot
    notes: list[str]  # what the user should know (zero-shot fallback, random backbone)
    examples: list[str]  # example queries (captions of the collection)


def _backbone_available(name: str) -> bool:
    from vop.backbone.packaged import asset_path

    try:
        return asset_path(name).is_file()
    except ValueError:
        return False


def prepare_demo(base: Path | None = None, count: int = DEMO_COUNT, progress: bool = True, cache=None) -> DemoSetup:
    """Write the demo videos and (re-)index them; see the module docstring for the paths."""
    from vop.search.encode import EncodeConfig, encode_collection
    from vop.search.method import IndexMismatch, load_method

    home = Path(base) if base else demo_home()
    root = demo_search_dir(home)
    videos = write_demo_videos(root / "videos", count)
    prompts = home / "prompts" if base else demo_prompts_dir()
    notes: list[str] = []
    if (prompts / "meta.json").is_file():
        checkpoint, backbone, tag = str(prompts), None, "prompts"
    else:
        checkpoint, tag = "zero-shot", "zero-shot"
        backbone = DEMO_BACKBONE if _backbone_available(DEMO_BACKBONE) else FALLBACK_BACKBONE
        notes.append(f"no trained demo prompts at {prompts}: searching zero-shot "
                     "(run `vop demo` to train them, then restart `vop serve --demo`)")
        if backbone == FALLBACK_BACKBONE:
            notes.append(f"the packaged backbone {DEMO_BACKBONE!r} is not built (`vop pretrain`): using random "
                         f"{FALLBACK_BACKBONE!r} weights, so rankings are meaningless")
    model, identity = load_method(checkpoint, backbone, cache=cache)
    index = root / f"index-{tag}"
    config = EncodeConfig(batch_size=16, progress=progress)
    try:
        report = encode_collection(root / "videos", index, model, identity, config)
    except IndexMismatch:  # e.g. `vop demo` retrained the prompts since the last run
        report = encode_collection(root / "videos", index, model, identity,
                                   EncodeConfig(batch_size=16, progress=progress, rebuild=True))
    if report.failed:
        notes.append(f"{len(report.failed)} demo videos could not be read")
    examples = list({v["kind"]: v["caption"] for v in reversed(videos)}.values())[::-1][:8]  # one per kind
    return DemoSetup(root / "videos", index, checkpoint, backbone, notes, examples)
