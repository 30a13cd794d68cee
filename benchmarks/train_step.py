"""One training step of every registered method, as a ratio against full fine-tuning.

A step is: forward of a batch of videos and captions, symmetric InfoNCE, backward, and
an AdamW step (fused kernel) over the model's trainable parameters only (``zero_grad(set_to_none)``
after it). Each method is timed in alternation with ``full`` in the same process
(method, full, full, method, ...); the table gives median step times and their ratio.
``zero-shot`` trains nothing: its row is a forward pass only.

Memory is "training memory": the peak during the first two steps minus the memory
held just before them (weights, inputs, runtime), i.e. activations saved for backward,
gradients, optimiser state and temporaries. On a GPU it is read from the caching
allocator (``max_memory_allocated``), in this process. On the CPU each method is
measured in a fresh child process, which resets the kernel's RSS high-water mark
(``/proc/self/clear_refs``) before the steps and reads ``VmHWM`` after them; the child
runs with glibc's mmap threshold pinned at 64 KiB so freed tensors leave the RSS at
once. (``tracemalloc`` sees no torch allocations; ``ru_maxrss`` alone would include
the model build's own peak.)

The script also checks, for every method, that no frozen parameter receives a
``.grad`` and that the optimiser holds state for exactly the trainable parameters.

    python benchmarks/train_step.py --batch 2 --methods vop,vop-c,vop-fc --reps 3
    python benchmarks/train_step.py --device cuda --batch 32 --dtype bf16
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import vop.backbone  # noqa: E402
import vop.methods  # noqa: E402

GOALS = {"vop": (0.7, 0.5)}  # method: (step time, training memory) as fractions of full


class Trainer:
    """A model, its optimiser over the trainable parameters, fixed inputs, and phase timings."""

    def __init__(self, model: torch.nn.Module, frames: torch.Tensor, ids: torch.Tensor,
                 device: torch.device, dtype: torch.dtype):
        self.model, self.frames, self.ids = model, frames, ids
        self.device, self.dtype = device, dtype
        params = list(model.trainable_parameters().values())
        self.optimizer = make_optimizer(params) if params else None
        self.phases: list[tuple[float, float, float]] = []  # (forward+loss, backward, optimiser)
        self.frozen_ok = True
        self.timer = time.process_time if common.default_clock(device) == "cpu" else time.perf_counter

    def forward(self) -> torch.Tensor:
        """The loss of the fixed batch (under autocast for bf16)."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            video, text, scale = self.model(self.frames, self.ids)
            return common.info_nce(video, text, scale)

    def step(self, check: bool = False) -> None:
        dev = self.device
        common.sync(dev)
        t0 = self.timer()
        loss = self.forward()
        common.sync(dev)
        t1 = self.timer()
        if loss.requires_grad:
            loss.backward()
        common.sync(dev)
        t2 = self.timer()
        if check:
            self.frozen_ok &= self.check_frozen(before_step=True)
        if self.optimizer is not None:
            self.optimizer.step()
            if check:
                self.frozen_ok &= self.check_frozen(before_step=False)
            self.optimizer.zero_grad(set_to_none=True)
        common.sync(dev)
        self.phases.append((t1 - t0, t2 - t1, self.timer() - t2))

    def check_frozen(self, before_step: bool) -> bool:
        """Frozen parameters have no .grad (after backward) and no optimiser state (after
        the step); every trainable parameter got both."""
        trainable = {id(p) for p in self.model.trainable_parameters().values()}
        state = self.optimizer.state if self.optimizer is not None else {}
        for name, p in self.model.named_parameters():
            if id(p) in trainable:
                ok = p.grad is not None if before_step else p in state
            else:
                ok = p.grad is None and p not in state
            if not ok:
                print(f"  CHECK FAILED: {name} (trainable={id(p) in trainable}, grad={p.grad is not None}, "
                      f"state={p in state})", file=sys.stderr)
                return False
        return True

    def optimizer_bytes(self) -> int:
        return common.optimizer_state_bytes(self.optimizer) if self.optimizer is not None else 0


def make_optimizer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW, fused where torch has the kernel (CPU and CUDA: about 3 x faster than the
    default for-loop on CPU), so that full fine-tuning is not handicapped. A tiny
    learning rate keeps the weights in range however many steps run."""
    try:
        return torch.optim.AdamW(params, lr=1e-7, weight_decay=0.2, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=1e-7, weight_decay=0.2)


def build(name: str, clip: torch.nn.Module, args, device: torch.device, dtype: torch.dtype) -> Trainer:
    options = {"num_frames": args.frames} if args.frames != 12 else {}
    model = vop.create(name, clip, **options).to(device)
    model.train()
    if getattr(args, "checkpointing", False) and name != "full":
        model.gradient_checkpointing = True  # recompute blocks in backward (full stays plain)
        model.checkpoint_image_blocks = getattr(args, "checkpoint_image_blocks", None)
    model.skip_unread_tokens = not getattr(args, "plain_rows", False)
    g = torch.Generator().manual_seed(0)
    res = model.clip.config.image_resolution
    frames = common.fake_frames(args.batch, args.frames, res, g).to(device)
    ids = common.fake_ids(args.batch, model.caption_length, generator=g).to(device)
    return Trainer(model, frames, ids, device, dtype)


def training_memory(name: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    """Build ``name``, then run two steps: the peak above the memory held before them."""
    clip = vop.backbone.load(args.backbone)
    trainer = build(name, clip, args, device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            trainer.step()
        peak = torch.cuda.max_memory_allocated()
    else:
        base = common.rss_bytes()
        exact = common.reset_peak_rss()
        for _ in range(2):
            trainer.step()
        peak = common.peak_rss_bytes() if exact else max(common.peak_rss_bytes(), base)
    out = {"train_mem": peak - base, "peak": peak, "optimizer_bytes": trainer.optimizer_bytes()}
    del trainer, clip
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def child_memory(name: str, argv: list[str]) -> dict:
    """:func:`training_memory` in a fresh interpreter (CPU), so no run inherits another's heap."""
    env = {**os.environ, **common.MEMORY_ENV}
    cmd = [sys.executable, __file__, *argv, "--memory-child", name]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory child for {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast, fp32 master weights")
    p.add_argument("--batch", type=int, default=2, help="videos (and captions) per step")
    p.add_argument("--frames", type=int, default=12, help="frames per video")
    p.add_argument("--methods", default="all", help="comma-separated method names, or 'all'")
    p.add_argument("--reps", type=int, default=3, help="timed steps per method (and as many of full)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--tuned-malloc", action="store_true",
                   help="keep freed memory in the heap (common.tune_glibc_malloc); see benchmarks/allocator.py")
    p.add_argument("--checkpointing", action="store_true",
                   help="gradient checkpointing for every method but the full baseline")
    p.add_argument("--checkpoint-image-blocks", type=int, default=None, metavar="N",
                   help="with --checkpointing: recompute only the first N image blocks (default: every block)")
    p.add_argument("--plain-rows", action="store_true",
                   help="compute every token row (skip_unread_tokens=False) in every model, full included")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tuned_malloc and not args.memory_child and not common.tune_glibc_malloc():
        print("# --tuned-malloc: not glibc, ignored")
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.memory_child:
        print(json.dumps(training_memory(args.memory_child, args, device, dtype)))
        return

    names = vop.methods.names() if args.methods == "all" else args.methods.split(",")
    for n in names:
        vop.methods.get(n)  # fail early on a typo
    print(f"# machine: {common.describe_machine(device)}{'; tuned malloc' if args.tuned_malloc else ''}")
    print(f"# {args.backbone}, batch {args.batch} x {args.frames} frames, {args.dtype}, "
          f"{args.reps} reps (+{args.warmup} warm-up) interleaved with full, "
          f"{'gradient checkpointing (not for full), ' if args.checkpointing else ''}"
          f"{f'of the first {args.checkpoint_image_blocks} image blocks, ' if args.checkpointing and args.checkpoint_image_blocks is not None else ''}"
          f"{'every token row computed, ' if args.plain_rows else ''}"
          f"{common.default_clock(device)} seconds")

    torch.manual_seed(0)
    full = build("full", vop.backbone.load(args.backbone), args, device, dtype)
    results: dict[str, dict] = {}
    for name in names:
        t0 = time.perf_counter()
        full.phases.clear()
        try:
            results[name] = time_method(name, full, args, device, dtype)
        except Exception as exc:  # noqa: BLE001 - one method's failure must not hide the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            print(f"#   {name}: FAILED {results[name]['error']}", file=sys.stderr, flush=True)
            continue
        print(f"#   {name}: {results[name]['step_ratio']:.2f} x full ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    del full
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if not args.no_memory:
        for name in dict.fromkeys(["full", *names]):
            if "error" in results.get(name, {}):
                continue
            try:
                mem = training_memory(name, args, device, dtype) if device.type == "cuda" else child_memory(name, raw)
            except Exception as exc:  # noqa: BLE001
                results.setdefault(name, {})["error"] = f"memory: {type(exc).__name__}: {str(exc)[:200]}"
                continue
            results.setdefault(name, {}).update({"train_mem": mem["train_mem"], "peak": mem["peak"]})
        for name in names:
            if "train_mem" in results[name] and "train_mem" in results.get("full", {}):
                results[name]["mem_ratio"] = results[name]["train_mem"] / results["full"]["train_mem"]

    print(common.markdown_table(*table(results, names, not args.no_memory)))
    for name, (time_goal, mem_goal) in GOALS.items():
        r = results.get(name, {})
        if "step_ratio" in r:
            print(f"goal {name} step time <= {time_goal} x full: {r['step_ratio']:.2f} -> "
                  f"{'met' if r['step_ratio'] <= time_goal else 'NOT met'}")
        if "mem_ratio" in r:
            print(f"goal {name} training memory <= {mem_goal} x full: {r['mem_ratio']:.2f} -> "
                  f"{'met' if r['mem_ratio'] <= mem_goal else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "machine": common.describe_machine(device), "results": results},
                                        indent=1, default=str))
    failed = [n for n, r in results.items() if "error" in r or not r.get("frozen_ok", True)]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def time_method(name: str, full: Trainer, args, device: torch.device, dtype: torch.dtype) -> dict:
    """Steps of ``name`` in alternation with ``full``'s; then one checked step."""
    if name == "full":
        cand = full
        times = common.interleaved({"full": full.step}, args.reps, args.warmup, device)
        times["base"] = times["full"]
    else:
        cand = build(name, copy.deepcopy(full.model.clip), args, device, dtype)
        times = common.interleaved({name: cand.step, "base": full.step}, args.reps, args.warmup, device)
    cand.step(check=True)  # one more step, with the frozen-parameter checks
    own = cand.phases[args.warmup:args.warmup + args.reps]
    result = {
        "trainable": cand.model.num_trainable(),
        "optimizer_bytes": cand.optimizer_bytes(),
        "step": common.median(times[name]),
        "full_step": common.median(times["base"]),
        "phases": [common.median([ph[i] for ph in own]) for i in range(3)],
        "frozen_ok": cand.frozen_ok,
    }
    result["step_ratio"] = result["step"] / result["full_step"]
    return result


def table(results: dict[str, dict], names: list[str], memory: bool) -> tuple[list[str], list[list]]:
    headers = ["method", "trainable", "AdamW state MiB", "step s", "x full", "fwd / bwd / opt s"]
    if memory:
        headers += ["train mem MiB", "x full", "peak MiB"]
    headers.append("frozen: no grad, no state")
    rows = []
    for name in names:
        r = results[name]
        label = name + (" (forward only)" if name == "zero-shot" else "")
        if "step" not in r:
            rows.append([label, f"FAILED: {r['error']}"] + [""] * (len(headers) - 2))
            continue
        fwd, bwd, opt = r["phases"]
        row = [label, r["trainable"], f"{r['optimizer_bytes'] / common.MIB:.1f}", f"{r['step']:.3f}",
               f"{r['step_ratio']:.2f}", f"{fwd:.3f} / {bwd:.3f} / {opt:.3f}"]
        if memory:
            row += ([f"{r['train_mem'] / common.MIB:.0f}", f"{r['mem_ratio']:.2f}", f"{r['peak'] / common.MIB:.0f}"]
                    if "mem_ratio" in r else ["-", "-", "-"])
        row.append("ok" if r["frozen_ok"] else "FAILED")
        rows.append(row)
    return headers, rows


if __name__ == "__main__":
    main()
