"""How ``vop`` and ``vop-fc`` training steps scale with frames per video and videos per
batch, and whether SDPA keeps the joint attention of ``vop-fc`` linear in memory.

Part 1 (models). For every configuration (frames x batch) both methods are built and
their training steps (forward, symmetric InfoNCE, backward, fused AdamW) timed in
alternation in this process; the table gives each step time as a ratio to ``vop`` at the
smallest configuration (the baseline, timed in the same rounds) and ``vop-fc / vop`` at
the same configuration. "Saved MiB" is the activation memory autograd keeps for
backward, counted exactly (distinct storages, via ``saved_tensors_hooks``); "train
MiB" (``--memory``) is the measured peak of two steps above the memory held before
them, each in a fresh child process (see ``train_step.py``).

Part 2 (attention). One joint attention layer of ``vop-fc``, sequence length
``F + 8 + F * patches``, 12 heads of 64: SDPA against the explicit
``softmax(Q K^T / sqrt(d)) V`` on the same inputs, forward + backward, interleaved; the
memory saved for backward is counted exactly, and on a GPU the peak allocated too.

    python benchmarks/scaling.py                            # frames 4,8,12,16; batch 1,2,4
    python benchmarks/scaling.py --frames 4,8 --batches 1 --reps 1 --no-models
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import train_step  # noqa: E402

import vop.backbone  # noqa: E402
import vop.methods  # noqa: E402

METHODS = ("vop", "vop-fc")


def saved_mib(fn, exclude=()) -> float:
    """MiB autograd saves while ``fn`` runs, parameters in ``exclude`` not counted."""
    return common.saved_bytes(fn, exclude)[0] / common.MIB


def models(args, device: torch.device, dtype: torch.dtype) -> None:
    frames_list = [int(f) for f in args.frames.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    base_frames = 12 if 12 in frames_list else frames_list[-1]
    fb = args.frames_batch
    configs = [(fb, f) for f in frames_list] + [(b, base_frames) for b in batches if b != fb]
    clip = vop.backbone.load(args.backbone)
    trainers, saved = {}, {}
    for batch, frames in configs:
        ns = argparse.Namespace(batch=batch, frames=frames)
        for name in METHODS:
            t = train_step.build(name, copy.deepcopy(clip), ns, device, dtype)
            trainers[(name, batch, frames)] = t
            saved[(name, batch, frames)] = saved_mib(t.forward, list(t.model.parameters()))
    print(f"# {len(trainers)} models built; timing {args.reps} rounds (+1 warm-up), all interleaved", flush=True)
    times = common.interleaved({k: t.step for k, t in trainers.items()}, args.reps, warmup=1, device=device)
    del trainers
    med = {k: common.median(v) for k, v in times.items()}
    base = med[("vop", *configs[0])]

    mem = {}
    if args.memory and device.type == "cpu":
        for batch, frames in configs:
            for name in METHODS:
                argv = ["--backbone", args.backbone, "--batch", str(batch), "--frames", str(frames),
                        "--dtype", args.dtype]
                mem[(name, batch, frames)] = train_step.child_memory(name, argv)["train_mem"] / common.MIB
    elif args.memory:
        for batch, frames in configs:
            for name in METHODS:
                ns = argparse.Namespace(backbone=args.backbone, batch=batch, frames=frames)
                measured = train_step.training_memory(name, ns, device, dtype)
                mem[(name, batch, frames)] = measured["train_mem"] / common.MIB

    rows = []
    for batch, frames in configs:
        a, b = ("vop", batch, frames), ("vop-fc", batch, frames)
        joint = frames + 8 + frames * clip.config.num_patches
        row = [batch, frames, joint, f"{med[a]:.2f}", f"{med[a] / base:.2f}", f"{med[b] / base:.2f}",
               f"{med[b] / med[a]:.2f}", f"{saved[a]:.0f}", f"{saved[b]:.0f}", f"{saved[b] / saved[a]:.2f}"]
        if mem:
            row += [f"{mem[a]:.0f}", f"{mem[b]:.0f}", f"{mem[b] / mem[a]:.2f}"]
        rows.append(row)
    headers = ["batch", "frames", "joint seq", "vop step s", "vop x base", "vop-fc x base", "vop-fc / vop",
               "vop saved MiB", "vop-fc saved MiB", "fc / vop"]
    if mem:
        headers += ["vop train MiB", "vop-fc train MiB", "fc / vop"]
    print(f"base: vop at batch {configs[0][0]} x {configs[0][1]} frames")
    print(common.markdown_table(headers, rows))


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The textbook form: materialises the [B, h, L, L] scores and probabilities."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, h, L, L]
    return scores.softmax(dim=-1) @ v  # [B, h, L, hd]


def attention(args, device: torch.device, dtype: torch.dtype) -> None:
    heads, hd, patches = 12, 64, 49
    rows = []
    for frames in [int(f) for f in args.attention_frames.split(",")]:
        length = frames + 8 + frames * patches
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, heads, length, hd, generator=g).to(device, dtype).requires_grad_()
                   for _ in range(3))
        grad = torch.randn(1, heads, length, hd, generator=g).to(device, dtype)
        impls = {"sdpa": F.scaled_dot_product_attention, "explicit": explicit_attention}

        def run(fn):
            def go():
                fn(q, k, v).backward(grad)
                q.grad = k.grad = v.grad = None
            return go

        saved = {n: saved_mib(lambda fn=fn: fn(q, k, v)) for n, fn in impls.items()}
        peak = {}
        if device.type == "cuda":
            for n, fn in impls.items():
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                run(fn)()
                peak[n] = (torch.cuda.max_memory_allocated() - before) / common.MIB
        t = common.interleaved({n: run(fn) for n, fn in impls.items()}, args.reps + 2, warmup=1, device=device)
        ts, te = common.median(t["sdpa"]), common.median(t["explicit"])
        row = [frames, length, f"{te * 1e3:.1f}", f"{ts * 1e3:.1f}", f"{te / ts:.2f}",
               f"{saved['explicit']:.1f}", f"{saved['sdpa']:.1f}", f"{saved['explicit'] / saved['sdpa']:.1f}"]
        if peak:
            row += [f"{peak['explicit']:.0f}", f"{peak['sdpa']:.0f}"]
        rows.append(row)
    headers = ["frames", "joint seq L", "explicit ms", "SDPA ms", "explicit / SDPA", "explicit saved MiB",
               "SDPA saved MiB", "explicit / SDPA"]
    if device.type == "cuda":
        headers += ["explicit peak MiB", "SDPA peak MiB"]
    print(f"one joint attention layer, batch 1, {heads} heads x {hd}, {args.dtype}, forward + backward")
    print(common.markdown_table(headers, rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    p.add_argument("--frames", default="4,8,12,16", help="frame counts (at --frames-batch videos)")
    p.add_argument("--frames-batch", type=int, default=1, help="videos per batch along the frames axis")
    p.add_argument("--batches", default="1,2,4", help="batch sizes (at 12 frames)")
    p.add_argument("--attention-frames", default="4,8,12,16,32,64", help="frame counts for part 2")
    p.add_argument("--reps", type=int, default=2, help="timed rounds")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--memory", action="store_true", help="also measure training memory (child processes on CPU)")
    p.add_argument("--no-models", action="store_true", help="part 2 only")
    args = p.parse_args(argv)
    device = common.start(args)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if not args.no_models:
        models(args, device, dtype)
    attention(args, device, dtype)


if __name__ == "__main__":
    main()
