"""Wall time of one ``vop search INDEX "query"`` (a fresh process per query, as from a shell).

    python benchmarks/search_query.py [--dir /tmp/vop-search-query] [--repeats 3] [--before SRC]

Prepares (once, in ``--dir``) a collection of 6 generated clips and, for two backbones, a
``vop-fc`` checkpoint with random prompts and its index:

* ``tiny-synthetic``: the shipped tiny CLIP;
* ``vitb32``: a ViT-B/32-sized CLIP with random weights, saved to a safetensors file (the
  size and layout of OpenAI's ViT-B/32; 151 M parameters, 605 MB).

Then runs ``python -m vop.cli search INDEX "a dog catches a frisbee" --json`` per index:
once with an empty text-tower cache (``VOP_TEXT_CACHE``: the first query ever loads the
whole backbone and keeps its text tower), then ``--repeats`` times with it, and prints the
wall and CPU times (user + system of the child, steadier than wall time on a shared
machine) and medians, plus the time of ``python -c "import torch"`` (the floor of any
query). With ``--before SRC`` (the ``src`` folder of an earlier vop) the same query is also
timed with that code, alternating with the current code so both see the same machine load.
The results of every run are compared with the first: they must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERY = "a dog catches a frisbee"


def _frames(seed: int, num: int = 16, size: int = 64):
    import numpy as np

    rng = np.random.default_rng(seed)
    background, colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    frames = np.broadcast_to(background.astype(np.uint8), (num, size, size, 3)).copy()
    for t in range(num):
        x = (t * 3 + seed * 5) % (size - 16)
        frames[t, 16:32, x:x + 16] = colour
    return frames


def prepare(folder: Path) -> dict[str, Path]:
    """The collection, backbones, checkpoints and indexes (kept between runs)."""
    import torch
    from safetensors.torch import save_file

    import vop
    import vop.backbone
    from vop.checkpoint import save_checkpoint
    from vop.search.demo import _write_mp4
    from vop.search.encode import EncodeConfig, encode_collection
    from vop.search.method import load_method

    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        if not (videos / f"clip{i}.mp4").exists():
            _write_mp4(videos / f"clip{i}.mp4", _frames(i), fps=8)
    vitb = folder / "vitb32-random.safetensors"
    if not vitb.exists():
        clip = vop.backbone.load("ViT-B-32", random_ok=True)
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(vitb))
    indexes = {}
    for name, source in (("tiny-synthetic", "tiny-synthetic"), ("vitb32", str(vitb))):
        ckpt, index = folder / f"ckpt-{name}", folder / f"index-{name}"
        if not ckpt.exists():
            torch.manual_seed(0)
            model = vop.create("vop-fc", source)
            with torch.no_grad():
                for p in model.trainable_parameters().values():
                    p.add_(0.1 * torch.randn_like(p))
            save_checkpoint(ckpt, model, backbone_source=source)
        if not index.exists():
            model, identity = load_method(ckpt)
            encode_collection(videos, index, model, identity, EncodeConfig(progress=False, batch_size=2))
        indexes[name] = index
    return indexes


def _time(cmd: list[str], src: str | None = None, text_cache: Path | None = None) -> tuple[float, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if src is not None:
        env["PYTHONPATH"] = src
    if text_cache is not None:
        env["VOP_TEXT_CACHE"] = str(text_cache)
    t, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return Timing(wall, cpu), out


class Timing(tuple):
    """(wall seconds, CPU seconds of the child: user + system)."""

    def __new__(cls, wall: float, cpu: float):
        return super().__new__(cls, (wall, cpu))


def _fmt(times: list) -> str:
    if not times:
        return "-"
    wall, cpu = [t[0] for t in times], [t[1] for t in times]
    return (f"wall median {statistics.median(wall):.2f} s ({', '.join(f'{t:.2f}' for t in wall)}), "
            f"CPU median {statistics.median(cpu):.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/vop-search-query")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--before", default=None, help="the src folder of an earlier vop, timed alternately")
    args = p.parse_args()
    indexes = prepare(Path(args.dir))
    floor = [_time([sys.executable, "-c", "import torch"])[0] for _ in range(args.repeats)]
    print(f"python -c 'import torch': {_fmt(floor)}")
    for name, index in indexes.items():
        cmd = [sys.executable, "-m", "vop.cli", "search", str(index), QUERY, "--json"]
        towers = Path(tempfile.mkdtemp(prefix="vop-text-towers-"))
        try:
            cold, first = _time(cmd, text_cache=towers)
            before, after, outputs = [], [], [first]
            for _ in range(args.repeats):
                if args.before:
                    t, out = _time(cmd, src=args.before)
                    before.append(t)
                    outputs.append(out)
                t, out = _time(cmd, text_cache=towers)
                after.append(t)
                outputs.append(out)
        finally:
            shutil.rmtree(towers, ignore_errors=True)
        results = [json.loads(o) for o in outputs]
        assert all(r == results[0] for r in results), "results differ between runs"
        if before:
            print(f"vop search, {name}, before: {_fmt(before)}")
        print(f"vop search, {name}, first query (whole backbone, keeps the text tower): {_fmt([cold])}")
        print(f"vop search, {name}, text tower: {_fmt(after)}; top hit {results[0][0]['path']} "
              f"{results[0][0]['score']:+.6f}, results identical in all {len(results)} runs")


if __name__ == "__main__":
    main()
