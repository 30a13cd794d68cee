"""``vop data check``: benchmark data checked before training (docs/data.md)."""

from __future__ import annotations

import argparse

from vop.cli.common import command


# -- vop data check -----------------------------------------------------------------------
def _data_args(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    c = actions.add_parser("check", help="check a benchmark's annotation files, videos and frame cache",
                           description="For each split: the annotation files parsed, captions per video, videos "
                                       "present / missing / unreadable, frame cache coverage. Exit status 1 when "
                                       "there is a problem, 0 when the data is ready (docs/data.md).")
    c.add_argument("benchmark", nargs="?", help="benchmark name (msrvtt-9k, didemo, ...); default: the config's")
    c.add_argument("root", nargs="?", help="annotation folder (docs/data.md); default: the config's data.root")
    c.add_argument("--config", default=None,
                   help="a train YAML config: its data section gives benchmark, root, video_dir and cache_dir")
    c.add_argument("--video-dir", default=None, help="video folder (default: ROOT/videos)")
    c.add_argument("--cache", default=None, help="frame cache folder (vop cache --out) whose coverage to report")
    c.add_argument("--splits", default=None, help="comma-separated splits (default: all of the benchmark's)")
    c.add_argument("--decode", action="store_true",
                   help="decode the sampled frames of every video (slow, thorough) instead of opening each and "
                        "decoding its first frame")
    c.add_argument("--no-probe", action="store_true", help="only look for the video files, do not open them")
    c.add_argument("--num-frames", type=int, default=12, help="frames sampled by --decode")
    c.add_argument("--workers", type=int, default=2, help="probing threads")
    c.add_argument("--sample", type=int, default=5, help="names shown per list of missing/unreadable (0: all)")
    c.add_argument("--json", action="store_true", help="print one JSON document (counts complete, names cut to --sample)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")


@command("data", "check benchmark data: vop data check BENCHMARK ROOT (docs/data.md)")(_data_args)
def _data(args: argparse.Namespace) -> int:
    import json

    from vop.data.check import check_benchmark

    benchmark, root, video_dir, cache = args.benchmark, args.root, args.video_dir, args.cache
    if args.config:
        from vop.train.config import load_train_config

        data = load_train_config(args.config, []).data
        benchmark, root = benchmark or data.benchmark, root or data.root
        video_dir, cache = video_dir or data.video_dir, cache or data.cache_dir
    if not benchmark or not root:
        raise ValueError("give BENCHMARK and ROOT (e.g. vop data check msrvtt-9k data/msrvtt), or --config")
    if args.decode and args.no_probe:
        raise ValueError("--decode and --no-probe contradict each other; give one")
    if args.sample < 0:
        raise ValueError(f"--sample must be >= 0, got {args.sample}")
    report = check_benchmark(
        benchmark, root, video_dir=video_dir, cache_dir=cache,
        splits=[s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None,
        probe="none" if args.no_probe else "decode" if args.decode else "open", num_frames=args.num_frames,
        workers=args.workers, progress=not args.quiet and not args.json, sample=args.sample)
    print(json.dumps(report.to_dict(sample=args.sample), indent=2) if args.json else report.format(args.sample))
    return 0 if report.ok else 1
