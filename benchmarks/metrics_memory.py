"""Peak memory of :func:`vop.eval.chunked_similarity_metrics` on a large random test set.

Each configuration runs in a fresh child process, which builds ``--texts`` x ``--dim``
and ``--videos`` x ``--dim`` random unit embeddings, reads its resident set size (RSS),
computes the metrics and reads its peak RSS (``ru_maxrss``). The difference is the
extra memory the metrics needed, to compare with the dense ``T x V`` float32 matrix
they avoid. A fresh process per run keeps one run's high-water mark out of the next.

    python benchmarks/metrics_memory.py                     # 20,000 x 10,000, D = 256
    python benchmarks/metrics_memory.py --full              # 100,000 x 10,000, D = 256
    python benchmarks/metrics_memory.py --chunk-size 1024 4096 --dual-softmax
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MIB = 1024**2


def _rss_bytes() -> int:
    """Current resident set size; Linux only (``/proc/self/statm`` counts pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS, where /proc is missing anyway).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(texts: int, videos: int, dim: int, chunk_size: int, use_dsl: bool, threads: int) -> None:
    """Measure one configuration and print a JSON line (runs in its own process)."""
    import torch

    from vop.eval import chunked_similarity_metrics

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    text = torch.randn(texts, dim, generator=g)
    video = torch.randn(videos, dim, generator=g)
    # In place, so that no embedding-sized temporary raises the high-water mark before we start.
    text.div_(text.norm(dim=1, keepdim=True))
    video.div_(video.norm(dim=1, keepdim=True))
    text_to_video = torch.arange(texts) % videos  # texts / videos captions per video
    # Warm up on a tiny problem so one-off library set-up is not counted as metric memory.
    chunked_similarity_metrics(text[:64], video[:16], text_to_video[:64] % 16, dual_softmax=use_dsl)

    before = _rss_bytes()
    start = time.perf_counter()
    metrics = chunked_similarity_metrics(
        text, video, text_to_video, chunk_size=chunk_size, dual_softmax=use_dsl
    )
    seconds = time.perf_counter() - start
    peak = _peak_rss_bytes()
    print(json.dumps({"rss_before": before, "peak": peak, "seconds": seconds, "metrics": metrics}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000, help="number of captions T")
    parser.add_argument("--videos", type=int, default=10_000, help="number of videos V")
    parser.add_argument("--dim", type=int, default=256, help="embedding width D")
    parser.add_argument("--full", action="store_true", help="the 100,000 x 10,000 case (sets --texts 100000)")
    parser.add_argument("--chunk-size", type=int, nargs="+", default=[4096], help="rows per block; one run each")
    parser.add_argument("--dual-softmax", action="store_true", help="also apply dual-softmax (one more pass)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.full:
        args.texts = 100_000

    if args.child:
        child(args.texts, args.videos, args.dim, args.chunk_size[0], args.dual_softmax, args.threads)
        return

    dense = args.texts * args.videos * 4
    post = "dual-softmax" if args.dual_softmax else "none"
    print(
        f"T = {args.texts:,} texts, V = {args.videos:,} videos, D = {args.dim}, "
        f"post-processing: {post}, {args.threads} threads"
    )
    print(f"dense T x V float32 matrix (avoided): {dense / MIB:,.0f} MiB")
    for chunk_size in args.chunk_size:
        cmd = [
            sys.executable, __file__, "--child",
            "--texts", str(args.texts), "--videos", str(args.videos), "--dim", str(args.dim),
            "--chunk-size", str(chunk_size), "--threads", str(args.threads),
        ]
        if args.dual_softmax:
            cmd.append("--dual-softmax")
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        extra = result["peak"] - result["rss_before"]
        block = chunk_size * args.videos * 4
        m = result["metrics"]
        print(
            f"chunk_size {chunk_size:>6,}: peak extra RSS {extra / MIB:,.0f} MiB "
            f"(= {extra / block:.2f} x one {block / MIB:,.0f} MiB block; "
            f"{100 * extra / dense:.1f}% of the dense matrix), {result['seconds']:.1f} s; "
            f"t2v R@1 {m['t2v_r1']:.3f}, MnR {m['t2v_mnr']:,.0f}"
        )


if __name__ == "__main__":
    main()
