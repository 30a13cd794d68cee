"""Video encoding throughput, fp32 against bf16, under ``torch.inference_mode``.

For each method and batch size three paths run in alternation in one process:

- ``fp32``: the model as built;
- ``bf16 weights``: a copy of the model with every parameter cast to bfloat16
  (``model.to(torch.bfloat16)``); LayerNorm still computes in fp32;
- ``bf16 autocast``: the fp32 model under ``torch.autocast(dtype=torch.bfloat16)``, which
  re-casts the weights on every call;
- with ``--compile``, ``bf16 compiled``: the bf16-weights copy's ``encode_video`` through
  ``torch.compile`` (Inductor fuses the elementwise work around the matrix products; the
  compile time is printed and left out of the timing).

The table gives videos per second, the speed-up over fp32, and the agreement of each
bf16 path with fp32 (the smallest cosine similarity between the two embeddings of a
video over the batch). It also counts the model's FLOPs (``FlopCounterMode``: matrix
products, convolutions and the attention kernels it knows) and divides the achieved
rate by this machine's matrix-product peak in the same dtype: a large square product
timed in the same interleaved rounds as the encoders (median against median), so that a
shared machine's slow spells weigh on both alike. The best peak before and after all
runs is printed too, for reference.

    python benchmarks/encode.py --threads 1                      # CPU, batches 1 and 8
    python benchmarks/encode.py --threads 1 --tuned-malloc       # glibc keeps freed memory
    python benchmarks/encode.py --device cuda --batches 1,32 --reps 10
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import vop.backbone  # noqa: E402
import vop.methods  # noqa: E402


PEAKS = {"peak fp32": torch.float32, "peak bf16": torch.bfloat16}


def square_product(dtype: torch.dtype, device: torch.device, size: int):
    """A call computing the product of two ``size`` x ``size`` matrices (``2 size^3`` FLOP)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return lambda: a @ b


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int, reps: int = 5) -> float:
    """FLOP/s of the best of ``reps`` products of two ``size`` x ``size`` matrices."""
    times = common.interleaved({"mm": square_product(dtype, device, size)}, reps, warmup=1, device=device)["mm"]
    return 2 * size**3 / min(times)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class CompiledEncode:
    """``encode_video`` of ``model`` through ``torch.compile`` (the encoder() interface)."""

    def __init__(self, model: torch.nn.Module):
        self.encode_video = torch.compile(model.encode_video)


def encoder(model, frames: torch.Tensor, autocast: bool):
    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=autocast):
            return model.encode_video(frames)
    return run


def measure(name: str, args, batches: list[int], device: torch.device, rows: list, results: list) -> None:
    """Time the paths of method ``name`` at every batch size, with the matrix-product peaks in
    the same rounds; append rows and results."""
    options = {"num_frames": args.frames} if args.frames != 12 else {}
    model = vop.create(name, vop.backbone.load(args.backbone), **options).to(device).eval()
    low = copy.deepcopy(model).to(torch.bfloat16)
    for batch in batches:
        g = torch.Generator().manual_seed(batch)
        frames = common.fake_frames(batch, args.frames, model.clip.config.image_resolution, g).to(device)
        runs = {"fp32": encoder(model, frames, False), "bf16 weights": encoder(low, frames, False),
                "bf16 autocast": encoder(model, frames, True)}
        flops = count_flops(runs["fp32"])
        reference = runs["fp32"]().float()
        if args.compile:
            compiled = encoder(CompiledEncode(low), frames, False)
            started = time.perf_counter()
            compiled()
            print(f"#   {name} batch {batch}: torch.compile took {time.perf_counter() - started:.0f} s", flush=True)
            runs["bf16 compiled"] = compiled
        cos = {k: F.cosine_similarity(runs[k]().float(), reference, dim=-1).min().item() for k in runs if k != "fp32"}
        products = {k: square_product(dt, device, args.peak_size) for k, dt in PEAKS.items()}
        times = common.interleaved(runs | products, args.reps, warmup=1, device=device)
        t = {k: common.median(v) for k, v in times.items()}
        peak = {k: 2 * args.peak_size**3 / t[k] for k in PEAKS}
        for k in runs:
            r = {"method": name, "batch": batch, "path": k, "videos_per_s": batch / t[k],
                 "speedup": t["fp32"] / t[k], "min_cos": cos.get(k, 1.0), "gflop_per_video": flops / batch / 1e9,
                 "tflops": flops / t[k] / 1e12, "peak_tflops": peak["peak fp32" if k == "fp32" else "peak bf16"] / 1e12}
            r["fraction_of_peak"] = r["tflops"] / r["peak_tflops"]
            results.append(r)
            rows.append([name, batch, k, f"{r['videos_per_s']:.2f}", f"{r['speedup']:.2f}",
                         "-" if k == "fp32" else f"{r['min_cos']:.5f}", f"{r['gflop_per_video']:.1f}",
                         f"{r['tflops'] * 1e3:.0f}", f"{r['peak_tflops'] * 1e3:.0f}",
                         f"{100 * r['fraction_of_peak']:.0f} %"])
        print(f"#   {name} batch {batch}: bf16 weights {t['fp32'] / t['bf16 weights']:.2f} x, "
              f"autocast {t['fp32'] / t['bf16 autocast']:.2f} x fp32"
              + (f", compiled {t['fp32'] / t['bf16 compiled']:.2f} x" if "bf16 compiled" in t else ""), flush=True)
    del model, low


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--methods", default="zero-shot,vop,vop-fc", help="comma-separated method names, or 'all'")
    p.add_argument("--batches", default="1,8", help="comma-separated videos per call")
    p.add_argument("--frames", type=int, default=12, help="frames per video")
    p.add_argument("--reps", type=int, default=3, help="timed calls per path")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--tuned-malloc", action="store_true",
                   help="keep freed memory in the heap (common.tune_glibc_malloc); see benchmarks/allocator.py")
    p.add_argument("--peak-size", type=int, default=0, help="matrix side for the peak (0: 4096 CPU, 8192 GPU)")
    p.add_argument("--compile", action="store_true", help="also time the bf16 weights path through torch.compile")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tuned_malloc and not common.tune_glibc_malloc():
        print("# --tuned-malloc: not glibc, ignored")
    device = torch.device(args.device)
    size = args.peak_size = args.peak_size or (8192 if device.type == "cuda" else 4096)
    batches = [int(b) for b in args.batches.split(",")]
    names = vop.methods.names() if args.methods == "all" else args.methods.split(",")
    print(f"# machine: {common.describe_machine(device)}{'; tuned malloc' if args.tuned_malloc else ''}")
    print(f"# {args.backbone}, {args.frames} frames, {args.reps} reps per path, interleaved, "
          f"{common.default_clock(device)} seconds")

    peaks_before = {dt: matmul_peak(dt, device, size) for dt in (torch.float32, torch.bfloat16)}
    rows, results, failed = [], [], []
    for name in names:
        try:
            measure(name, args, batches, device, rows, results)
        except Exception as exc:  # noqa: BLE001 - one method's failure must not hide the others' figures
            failed.append(name)
            print(f"#   {name}: FAILED {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr, flush=True)
    peaks_after = {dt: matmul_peak(dt, device, size) for dt in (torch.float32, torch.bfloat16)}
    peak = {dt: max(peaks_before[dt], peaks_after[dt]) for dt in peaks_before}

    print(f"matmul peak ({size}^3, best of 5, before / after all runs; the table's peak column is "
          f"the median in each row's own rounds): "
          f"fp32 {peaks_before[torch.float32] / 1e9:.0f} / {peaks_after[torch.float32] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks_before[torch.bfloat16] / 1e9:.0f} / {peaks_after[torch.bfloat16] / 1e9:.0f} GFLOP/s "
          f"(bf16 = {peak[torch.bfloat16] / peak[torch.float32]:.1f} x fp32)")
    print(common.markdown_table(["method", "batch", "path", "videos/s", "x fp32", "min cos vs fp32",
                                 "GFLOP/video", "GFLOP/s", "peak GFLOP/s (same rounds)",
                                 "of own-dtype matmul peak"], rows))
    big = max(batches)
    for name in (n for n in names if n not in failed):
        best = max((r for r in results if r["method"] == name and r["batch"] == big and r["path"] != "fp32"),
                   key=lambda r: r["speedup"])
        print(f"goal {name} batch {big}: best bf16 path ({best['path']}) {best['speedup']:.2f} x fp32 "
              f"(goal >= 2.5: {'met' if best['speedup'] >= 2.5 else 'NOT met'}), "
              f"{100 * best['fraction_of_peak']:.0f} % of bf16 peak "
              f"(goal >= 40 %: {'met' if best['fraction_of_peak'] >= 0.4 else 'NOT met'}), "
              f"min cos {best['min_cos']:.5f} (>= 0.999: {'met' if best['min_cos'] >= 0.999 else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "machine": common.describe_machine(device),
                                         "peak_flops": {str(k): v for k, v in peak.items()},
                                         "results": results}, indent=1))
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
