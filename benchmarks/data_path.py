"""Data-path throughput: sampling frames from raw video vs reading the frame cache.

Writes a few synthetic 640x360, 30 fps H.264 clips (moving gradients and boxes plus
noise, so the codec has real work) into a temporary directory, then prints videos/s for

* ``sample_frames(path, 12)`` from the raw file (decode only),
* the same plus ``resize_center_crop(224)`` (what a cache row holds),
* ``FrameCache.get`` on a 224 px cache of the same clips (page cache warm: the file was
  just written, as it is after the first epoch),

and the ratio. With ``--loader``, it then trains ``vop`` (``--backbone``, random weights)
for a few steps on those clips through the training data loader with 0, 1 and 2 worker
processes and from the cache, and reports the share of training time spent waiting for
input (as the trainer logs it: ``input_wait``). ``--quick`` uses fewer, shorter clips
(about a minute on 2 cores);
``--gop 30`` writes a keyframe every second, which lets long clips take the seeking
path of :func:`~vop.data.video.sample_frames`::

    python benchmarks/data_path.py --quick
    python benchmarks/data_path.py --quick --loader --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch

from vop.data.cache import build_frame_cache
from vop.data.transforms import resize_center_crop
from vop.data.video import sample_frames


def synthetic_frames(num: int, height: int, width: int, seed: int) -> Iterator[np.ndarray]:
    """``num`` uint8 frames ``[H, W, 3]``: a drifting colour gradient, two moving boxes,
    mild noise (yielded one at a time: a 30 s clip would be 600 MiB at once)."""
    rng = np.random.default_rng(seed)
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    noise = rng.normal(0, 6, (8, height, width, 1)).astype(np.float32)  # a small bank, cycled
    frame = np.empty((height, width, 3), np.float32)
    for t in range(num):
        phase = t / 30.0
        frame[..., 0] = 127 + 100 * np.sin(xs / 57.0 + phase)
        frame[..., 1] = 127 + 100 * np.sin(ys / 31.0 - 1.3 * phase)
        frame[..., 2] = 127 + 100 * np.sin((xs + ys) / 83.0 + 0.7 * phase)
        for k, (vx, vy) in enumerate([(3, 2), (-2, 3)]):
            x0 = int((50 + 200 * k + vx * t) % (width - 80))
            y0 = int((40 + 100 * k + vy * t) % (height - 80))
            frame[y0 : y0 + 80, x0 : x0 + 80] = (255 * k, 200, 255 * (1 - k))
        yield np.clip(frame + noise[t % len(noise)], 0, 255).astype(np.uint8)


def write_clip(path: Path, seconds: int, fps: int, height: int, width: int, seed: int, gop: int | None) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.options = {"preset": "veryfast", "crf": "23"} if stream.codec_context.name == "libx264" else {}
        for image in synthetic_frames(seconds * fps, height, width, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def videos_per_second(fn, items, min_seconds: float) -> float:
    """Call ``fn`` on every item, repeating the pass until ``min_seconds`` have elapsed."""
    count, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        count += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 clips of 10 s instead of 4 of 30 s")
    parser.add_argument("--clips", type=int, default=None, help="number of clips (overrides --quick)")
    parser.add_argument("--seconds", type=int, default=None, help="clip length in seconds (overrides --quick)")
    parser.add_argument("--gop", type=int, default=None, help="keyframe interval (default: x264's 250)")
    parser.add_argument("--num-frames", type=int, default=12, help="frames sampled per video")
    parser.add_argument("--size", type=int, default=224, help="cache frame size")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="minimum timing per measurement")
    parser.add_argument("--loader", action="store_true", help="also measure input waiting during training")
    parser.add_argument("--backbone", default="ViT-B-32", help="--loader: the model trained (random weights)")
    parser.add_argument("--batch", type=int, default=2, help="--loader: videos per step")
    parser.add_argument("--steps", type=int, default=6, help="--loader: timed steps per setting (after 1 untimed)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = args.clips or (2 if args.quick else 4)
    seconds = args.seconds or (10 if args.quick else 30)
    fps, height, width = 30, 360, 640

    print(f"torch threads: {torch.get_num_threads()}, PyAV {av.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        paths = []
        for i in range(clips):
            paths.append(root / f"clip{i}.mp4")
            write_clip(paths[-1], seconds, fps, height, width, seed=i, gop=args.gop)
        mb = sum(p.stat().st_size for p in paths) / 2**20
        print(
            f"wrote {clips} clips of {seconds} s, {width}x{height} @ {fps} fps, keyframe interval "
            f"{args.gop or 'x264 default'} ({mb:.1f} MiB) "
            f"in {time.perf_counter() - start:.1f} s"
        )

        n, size = args.num_frames, args.size
        raw = videos_per_second(lambda p: sample_frames(p, n), paths, args.min_seconds)
        raw_resized = videos_per_second(
            lambda p: resize_center_crop(sample_frames(p, n)[0], size), paths, args.min_seconds
        )

        start = time.perf_counter()
        cache = build_frame_cache(paths, root / "cache", num_frames=n, size=size, progress=False)
        build_s = time.perf_counter() - start
        cached = videos_per_second(cache.get, list(cache.keys()), args.min_seconds)
        waits = loader_waits(paths, cache, args) if args.loader else []

    print(f"sample_frames({n}) from raw video:        {raw:10.2f} videos/s")
    print(f"sample_frames({n}) + resize_center_crop:  {raw_resized:10.2f} videos/s")
    print(f"frame cache get ({size} px):              {cached:10.2f} videos/s")
    print(f"cache build: {build_s:.1f} s for {clips} videos")
    print(f"speed-up, cache vs raw decode: {cached / raw:.0f}x (vs decode + resize: {cached / raw_resized:.0f}x)")
    if waits:
        print(f"\ntraining vop ({args.backbone}, batch {args.batch} x {n} frames, {torch.get_num_threads()} torch "
              f"threads), {args.steps} steps per setting:")
        print("| input | step s (wait + compute) | waiting for input |")
        print("|---|---|---|")
        for label, step_s, fraction in waits:
            print(f"| {label} | {step_s:.2f} | {fraction:.0%} |")


def loader_waits(paths: list[Path], cache, args) -> list[tuple[str, float, float]]:
    """Train vop on the clips through the training loader; per input setting: (label,
    seconds per step, share of it spent waiting for the batch)."""
    import vop.backbone
    import vop.methods
    from vop.data.sources import FileVideoSource
    from vop.data.transforms import VideoTransform, normalize
    from vop.data.types import RetrievalSplit
    from vop.train.batches import CaptionVideoDataset, EpochSampler, make_loader, timed_batches, wait_fraction
    from vop.train.loss import SymmetricInfoNCE

    model = vop.create("vop", vop.backbone.load(args.backbone)).train()
    loss_fn = SymmetricInfoNCE()
    optimizer = torch.optim.AdamW(list(model.trainable_parameters().values()), lr=1e-4)
    ids = model.tokenize(["a caption of about ten words describing what happens in it"] * args.batch)
    transform = VideoTransform(size=model.clip.config.image_resolution, train=True)
    results = []
    for label, workers, use_cache in (("raw video, 0 workers", 0, False), ("raw video, 1 worker", 1, False),
                                      ("raw video, 2 workers", 2, False), ("frame cache, 0 workers", 0, True)):
        source = FileVideoSource(paths, cache=cache if use_cache else None)
        # One epoch long enough for every step: the clips, repeated as captions (a loader
        # starts its workers once per epoch, as in training).
        n = (args.steps + 1) * args.batch
        split = RetrievalSplit("bench", tuple(p.stem for p in paths), tuple(f"caption {i}" for i in range(n)),
                               tuple(i % len(paths) for i in range(n)), source)
        sampler = EpochSampler([[i] for i in range(n)], args.batch)
        dataset = CaptionVideoDataset(split, transform, args.num_frames, mode="random")
        timing = {"wait": 0.0, "compute": 0.0}
        for step, batch in enumerate(timed_batches(make_loader(dataset, sampler, workers), timing)):
            started = time.perf_counter()
            video, text, scale = model(normalize(batch["frames"]), ids)
            loss_fn(video, text, scale).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            timing["compute"] += time.perf_counter() - started
            if step == 0:  # the first step (worker start-up, allocator warm-up) is not counted
                timing["wait"] = timing["compute"] = 0.0
        results.append((label, (timing["wait"] + timing["compute"]) / args.steps, wait_fraction(timing)))
        print(f"# {label}: done", flush=True)
    return results


if __name__ == "__main__":
    main()
