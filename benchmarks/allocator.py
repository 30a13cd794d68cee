"""CPU only: glibc's default allocator against one that keeps freed memory
(:func:`common.tune_glibc_malloc`), for a bf16 and an fp32 ``encode_video`` and a
``vop`` fp32 training step.

An allocator setting cannot be switched back and forth inside one process (the heap
it leaves behind stays), so this is the one figure that is not measured within a single
process: child processes with the default and the tuned allocator run in alternation
(default, tuned, default, tuned, ...) on the same machine in the same minutes, each
timing a few calls after a warm-up; the table gives the medians over all children of a
kind and their ratio. Times are CPU seconds of the child, which include the kernel's
page-fault work.

    python benchmarks/allocator.py [--rounds 2] [--batch 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def child(args) -> None:
    import vop.backbone
    import vop.methods

    if args.tuned:
        assert common.tune_glibc_malloc(), "not glibc"
    model = vop.create("vop", vop.backbone.load(args.backbone))
    low = copy.deepcopy(model).to(torch.bfloat16).eval()
    g = torch.Generator().manual_seed(0)
    frames = common.fake_frames(args.batch, 12, model.clip.config.image_resolution, g)
    one = frames[:1]
    ids = common.fake_ids(1, model.caption_length, generator=g)

    def encode(m, x):
        def run():
            with torch.inference_mode():
                m.encode_video(x)
        return run

    def step():
        video, text, scale = model(one, ids)
        common.info_nce(video, text, scale).backward()
        model.zero_grad(set_to_none=True)

    cases = {f"encode bf16 weights, batch {args.batch}": encode(low, frames),
             f"encode fp32, batch {args.batch}": encode(model, frames),
             "vop training step fp32, batch 1": step}
    times = common.interleaved(cases, args.reps, warmup=1, clock="cpu")
    print(json.dumps({k: common.median(v) for k, v in times.items()}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--batch", type=int, default=4, help="videos per encode call")
    p.add_argument("--reps", type=int, default=3, help="timed calls per child")
    p.add_argument("--rounds", type=int, default=2, help="children of each kind, alternating")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    print(f"# machine: {common.describe_machine(torch.device('cpu'))}; cpu seconds")
    base = [sys.executable, __file__, "--child", "--backbone", args.backbone, "--batch", str(args.batch),
            "--reps", str(args.reps), "--threads", str(args.threads)]
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for kind in runs:
            out = subprocess.run(base + (["--tuned"] if kind == "tuned" else []), capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{kind} child failed:\n{out.stderr[-2000:]}")
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for case in runs["default"][0]:
        d = common.median([r[case] for r in runs["default"]])
        t = common.median([r[case] for r in runs["tuned"]])
        rows.append([case, f"{d:.3f}", f"{t:.3f}", f"{t / d:.2f}"])
    print(f"{args.rounds} children of each kind, alternating, {args.reps} timed calls each")
    print(common.markdown_table(["what", "default malloc s", "tuned malloc s", "tuned / default"], rows))


if __name__ == "__main__":
    main()
