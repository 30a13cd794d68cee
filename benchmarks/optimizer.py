"""AdamW step time for the trainable parameters of a method: torch's default
implementation against ``foreach=True`` and ``fused=True``, interleaved in one process
(the default is the baseline). Gradients are random; only the step is timed.

    python benchmarks/optimizer.py --methods full,vop-c --threads 1
    python benchmarks/optimizer.py --device cuda
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

IMPLS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--methods", default="full,vop-c,vop", help="comma-separated method names")
    p.add_argument("--reps", type=int, default=5, help="timed steps per implementation")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = p.parse_args(argv)
    device = common.start(args)
    rows = []
    for name in args.methods.split(","):
        model = vop.create(name, vop.backbone.load(args.backbone)).to(device)
        params = list(model.trainable_parameters().values())
        g = torch.Generator().manual_seed(0)
        for q in params:
            q.grad = (torch.randn(q.shape, generator=g) * 1e-3).to(device)
        opts = {k: torch.optim.AdamW(params, lr=1e-7, weight_decay=0.2, **kw) for k, kw in IMPLS.items()}
        t = common.interleaved({k: o.step for k, o in opts.items()}, args.reps, warmup=1, device=device)
        med = {k: common.median(v) for k, v in t.items()}
        rows.append([name, sum(q.numel() for q in params)] +
                    [f"{med[k] * 1e3:.1f} ({med[k] / med['default']:.2f})" for k in IMPLS])
        del model, opts, params
    print(common.markdown_table(["method", "trainable", *(f"{k} ms (x default)" for k in IMPLS)], rows))


if __name__ == "__main__":
    main()
