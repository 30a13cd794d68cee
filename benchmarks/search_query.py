"""Wall time of one ``vop search INDEX "query"`` (a fresh process per query, as from a shell).

    python benchmarks/search_query.py [--dir /tmp/vop-search-query] [--repeats 3]

Prepares (once, in ``--dir``) a collection of 6 generated clips and, for two backbones, a
``vop-fc`` checkpoint with random prompts and its index:

* ``tiny-synthetic``: the shipped tiny CLIP;
* ``vitb32``: a ViT-B/32-sized CLIP with random weights, saved to a safetensors file (the
  size and layout of OpenAI's ViT-B/32; 151 M parameters, 605 MB).

Then runs ``python -m vop.cli search INDEX "a dog catches a frisbee" --json`` ``--repeats``
times per index and prints each wall time and the median, plus the time of
``python -c "import vop.cli"`` (the interpreter and import floor). The results of every run
are compared with the first: they must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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


def _time(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return time.perf_counter() - t, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/vop-search-query")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    indexes = prepare(Path(args.dir))
    floor = [_time([sys.executable, "-c", "import vop.cli"])[0] for _ in range(args.repeats)]
    print(f"import vop.cli: median {statistics.median(floor):.2f} s ({', '.join(f'{t:.2f}' for t in floor)})")
    for name, index in indexes.items():
        runs = [_time([sys.executable, "-m", "vop.cli", "search", str(index), QUERY, "--json"])
                for _ in range(args.repeats)]
        first = json.loads(runs[0][1])
        assert all(json.loads(out) == first for _, out in runs), "results differ between runs"
        times = [t for t, _ in runs]
        print(f"vop search, {name}: median {statistics.median(times):.2f} s "
              f"({', '.join(f'{t:.2f}' for t in times)}); top hit {first[0]['path']} {first[0]['score']:+.6f}")


if __name__ == "__main__":
    main()
