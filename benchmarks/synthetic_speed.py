"""Throughput of the synthetic worlds on one CPU thread: upstream images per second
(batches of 256) and downstream videos per second (12 frames, one at a time through
``load`` as a data loader calls it, and in batches of 32 through ``load_batch``).

    python benchmarks/synthetic_speed.py [--threads 1] [--seconds 3] [--image-size 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from vop.data.synthetic import DownstreamWorld, UpstreamWorld


def _rate(fn, items_per_call: int, seconds: float) -> tuple[float, float]:
    """Items per wall second and per CPU second of this process (the CPU figure is the
    one to trust on a shared machine)."""
    fn()  # warm-up (grid cache, allocator)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += items_per_call
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def _show(label: str, rates: tuple[float, float], unit: str, frames: int = 0) -> None:
    wall, cpu = rates
    extra = f"  ({cpu * frames:.0f} frames per CPU s)" if frames else ""
    print(f"{label:<40} {wall:8.0f} {unit}/s wall, {cpu:8.0f} {unit}/s per CPU s{extra}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    p.add_argument("--image-size", type=int, default=64, help="image / frame side in pixels")
    p.add_argument("--frames", type=int, default=12, help="frames per video")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    up = UpstreamWorld(seed=0, image_size=args.image_size)
    g = torch.Generator().manual_seed(0)
    _show("upstream, sample(256)", _rate(lambda: up.sample(256, g), 256, args.seconds), "images")
    up2 = UpstreamWorld(seed=0, image_size=args.image_size, two_object_prob=0.3)
    _show("upstream, sample(256), 30 % two objects", _rate(lambda: up2.sample(256, g), 256, args.seconds), "images")

    t0 = time.perf_counter()
    world = DownstreamWorld(seed=0, image_size=args.image_size, num_frames=args.frames)
    splits = {name: world.split(name) for name in ("train", "val", "test")}
    sizes = ", ".join(f"{k} {v.num_videos}" for k, v in splits.items())
    print(f"downstream splits built in {time.perf_counter() - t0:.2f} s ({sizes} videos)")
    src = splits["train"].source
    n = len(src)
    i = iter(range(10**9))
    r = _rate(lambda: src.load(next(i) % n, args.frames, "random", g), 1, args.seconds)
    _show(f"downstream, load() one by one, F={args.frames}", r, "videos", args.frames)
    batch = lambda: src.load_batch(torch.randint(0, n, (32,), generator=g), args.frames, "random", g)  # noqa: E731
    r = _rate(batch, 32, args.seconds)
    _show(f"downstream, load_batch(32), F={args.frames}", r, "videos", args.frames)


if __name__ == "__main__":
    main()
