"""Why ``vop-c`` / ``vop-fc`` steps cost more than ``vop``: the Context Modeling Module
(a BiLSTM over the F frame [CLS] tokens plus a linear layer) runs once per prompted
layer, and its recurrence is F sequential steps, whatever the batch.

Times, in alternation in one process, forward + backward of: one frozen ViT block on the
video tokens (the baseline: ``B * F`` images of ``1 + 8 + patches`` tokens), and the
context module of ``vop-c`` on ``[B, F, width]`` in fp32, under bf16 autocast, and with
autocast switched off around it (fp32 recurrence inside a bf16 model). The ratio to the
block says what the module adds per layer.

    python benchmarks/context_module.py --batch 2             # CPU
    python benchmarks/context_module.py --device cuda --batch 32 --reps 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import vop.backbone  # noqa: E402
import vop.methods  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=2, help="videos")
    p.add_argument("--frames", type=int, default=12, help="frames per video")
    p.add_argument("--reps", type=int, default=5, help="timed rounds")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = p.parse_args(argv)
    device = common.start(args)
    model = vop.create("vop-c", vop.backbone.load(args.backbone)).to(device)
    fp, cfg = model.frame_prompts, model.clip.config
    block = model.clip.visual.blocks[0]
    b, f, w = args.batch, args.frames, cfg.vision_width
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(b * f, 1 + fp.length + cfg.num_patches, w, generator=g).to(device).requires_grad_()
    cls = torch.randn(b, f, w, generator=g).to(device).requires_grad_()

    def run(fn, autocast: bool):
        def go():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out = fn()
            out.float().sum().backward()
            tokens.grad = cls.grad = None
            model.zero_grad(set_to_none=True)
        return go

    def context_fp32_inside():
        with torch.autocast(device.type, enabled=False):
            return fp.prompts(0, cls.float())

    cases = {
        "block fp32": run(lambda: block(tokens), False),
        "block bf16 autocast": run(lambda: block(tokens), True),
        "context fp32": run(lambda: fp.prompts(0, cls), False),
        "context bf16 autocast": run(lambda: fp.prompts(0, cls), True),
        "context fp32 inside autocast": run(context_fp32_inside, True),
    }
    t = {k: common.median(v) for k, v in common.interleaved(cases, args.reps, warmup=2, device=device).items()}
    rows = []
    for k, v in t.items():
        base = t["block bf16 autocast" if "autocast" in k else "block fp32"]
        rows.append([k, f"{v * 1e3:.2f}", f"{v / base:.2f}"])
    print(f"one layer, forward + backward, {b} videos x {f} frames, width {w}")
    print(common.markdown_table(["what", "ms", "x one block (same precision)"], rows))
    print(f"per step the context module runs {fp.depth} times (once per prompted layer)")


if __name__ == "__main__":
    main()
