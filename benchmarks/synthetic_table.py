"""Train and evaluate every registered method on the synthetic downstream world with the
same budget and several seeds; write docs/results-synthetic.md (+ a chart and JSON).

    python benchmarks/synthetic_table.py                      # all methods, seeds 0,1,2
    python benchmarks/synthetic_table.py --methods vop,vop-p --seeds 0 --steps 100
    python benchmarks/synthetic_table.py --methods vop+seqtransf,full+seqtransf,dgl  # METHOD+HEAD rows

Each run uses `--data synthetic --method <method>` (the shipped tiny CLIP, pair batches) with
``optim.max_steps`` set to the budget; the test split is evaluated once with the best
checkpoint chosen on val. Pair accuracy: does a reversible test video rank its own
caption above its reversal's (ties count half)?
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

KEYS = ("t2v_r1", "t2v_r5", "t2v_mnr", "v2t_r1", "v2t_r5", "v2t_mnr", "pair_accuracy")


def run_one(row: str, seed: int, steps: int, out_root: Path, overrides: list[str]) -> dict:
    """One run of table row ``row``: a method name, or ``METHOD+HEAD`` for a method with a
    CLIP4Clip temporal head (``vop+seqtransf``)."""
    from vop.backbone import load
    from vop.demo import synthetic_config
    from vop.eval.evaluate import evaluate
    from vop.model import create
    from vop.train.trainer import Trainer

    method, _, head = row.partition("+")
    extra = [f"runtime.seed={seed}", f"optim.max_steps={steps}", "runtime.progress=false",
             f"runtime.out_dir={out_root / row / f'seed{seed}'}", *([f"method.options.head={head}"] if head else []),
             *overrides]
    config = synthetic_config(method, extra)
    if method == "zero-shot":
        from vop.data.datasets import open_split

        d = config.data
        test = open_split(d, d.test_split)
        model = create("zero-shot", load(config.backbone))
        metrics = evaluate(model, test, config.eval, progress=False)
        return {"method": method, "seed": seed, "steps": 0, "trainable": 0, "train_seconds": 0.0, "test": metrics,
                "val_curve": []}
    import shutil

    shutil.rmtree(Path(config.runtime.out_dir), ignore_errors=True)
    trainer = Trainer(config)
    summary = trainer.fit()
    curve = []
    for line in (Path(config.runtime.out_dir) / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "val":
            curve.append((rec["step"], rec.get("pair_accuracy"), rec.get("t2v_r1")))
    return {"method": row, "seed": seed, "steps": steps, "trainable": trainer.model.num_trainable(),
            "train_seconds": summary["train_seconds"], "test": summary["test"], "val_curve": curve}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def write_markdown(results: list[dict], args, out: Path, seconds: float,
                   threads_note: str | None = None) -> None:
    threads_note = threads_note or f"{torch.get_num_threads()} torch threads"
    import platform

    methods = list(dict.fromkeys(r["method"] for r in results))
    steps = max(r.get("steps", args.steps) for r in results)
    seeds = ",".join(str(s) for s in sorted({r["seed"] for r in results}))
    lines = [
        "# Results on the synthetic world",
        "",
        f"Produced by `python benchmarks/synthetic_table.py --steps {steps} --seeds {seeds}` (run as parallel "
        "workers with `--methods` subsets and `--threads 1`, merged with `--from-json`)",
        f"on {platform.machine()}, {threads_note}, "
        f"{seconds / 60:.0f} min of training in all. Every method: the shipped `tiny-synthetic` CLIP, "
        f"--data synthetic --method <method>, {steps} steps of 32 videos (each with its time reversal in the "
        "batch), best checkpoint on val, test evaluated once. Mean ± standard deviation over seeds.",
        "",
        "| method | seeds | trainable | train s | t2v R@1 | t2v R@5 | t2v MnR | v2t R@1 | v2t R@5 | v2t MnR | pair acc. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        rs = [r for r in results if r["method"] == m]
        cells = [mean_std([r["test"][k] for r in rs]) for k in KEYS]
        lines.append(f"| {m} | {len(rs)} | {rs[0]['trainable']:,} | {statistics.mean(r['train_seconds'] for r in rs):.0f} | "
                     + " | ".join(cells) + " |")
    n = results[0]["test"].get("num_videos")
    lines += ["", f"Test split: {n} videos, {results[0]['test'].get('num_captions')} captions; chance t2v MnR is "
              f"{(n + 1) / 2:.1f}. Pair accuracy 50 % means blind to temporal order.", "",
              ]
    curves = {m: next(r for r in results if r["method"] == m)["val_curve"] for m in methods}
    if any(len(c) > 1 for c in curves.values()):
        lines += ["## Pair accuracy on val as training proceeds (first seed)", "", "| method | step: pair acc. |",
                  "|---|---|"]
        lines += [f"| {m} | " + ", ".join(f"{s}: {p:.1f}" for s, p, _ in c) + " |" for m, c in curves.items() if c]
    lines += ["", "![results](results-synthetic.png)", ""]
    out.write_text("\n".join(lines))


def write_chart(results: list[dict], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    methods = list(dict.fromkeys(r["method"] for r in results))
    pair = [[r["test"]["pair_accuracy"] for r in results if r["method"] == m] for m in methods]
    r1 = [[r["test"]["t2v_r1"] for r in results if r["method"] == m] for m in methods]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, values, title in ((axes[0], pair, "pair accuracy (%)"), (axes[1], r1, "t2v R@1 (%)")):
        ax.bar(methods, [statistics.mean(v) for v in values],
               yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in values], capsize=3)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=60)
    axes[0].axhline(50, color="grey", linestyle="--", linewidth=1)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="", help="comma-separated (default: every registered method)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=150, help="optimiser steps per run (the demo budget)")
    p.add_argument("--out", default="docs/results-synthetic.md")
    p.add_argument("--runs", default="runs/synthetic-table")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=None, help="where to keep per-run results (default: OUT with .json)")
    p.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                   help="only write the report from saved per-run results (e.g. of parallel workers)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.from_json:
        results, seen = [], set()
        for r in (r for f in args.from_json for r in json.loads(Path(f).read_text())):
            if (r["method"], r["seed"], r["steps"]) not in seen:  # a run two workers both did counts once
                seen.add((r["method"], r["seed"], r["steps"]))
                results.append(r)
        order = {m: i for i, m in enumerate(__import__("vop.methods", fromlist=["names"]).names())}
        results.sort(key=lambda r: (order.get(r["method"].partition("+")[0], 99), r["method"], r["seed"]))
        args.methods = ",".join(dict.fromkeys(r["method"] for r in results))
        write_markdown(results, args, out, sum(r["train_seconds"] for r in results),
                       threads_note="parallel workers of 1 torch thread each sharing a 2-core machine")
        write_chart(results, out.with_suffix(".png"))
        print(f"wrote {out}, {out.with_suffix('.png')}")
        return 0
    import vop.methods

    methods = args.methods.split(",") if args.methods else vop.methods.names()
    seeds = [int(s) for s in args.seeds.split(",")]
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    partial = Path(args.results) if args.results else out.with_suffix(".json")
    # an interrupted table resumes: runs already in the results file are kept, not repeated
    results = json.loads(partial.read_text()) if partial.exists() else []
    done = {(r["method"], r["seed"], r["steps"]) for r in results}
    for method in methods:
        for seed in (seeds if method != "zero-shot" else seeds[:1]):
            if (method, seed, args.steps if method != "zero-shot" else 0) in done:
                print(f"{method:<14} seed {seed}: already in {partial}, kept", flush=True)
                continue
            t = time.time()
            r = run_one(method, seed, args.steps, Path(args.runs), args.overrides)
            results.append(r)
            print(f"{method:<14} seed {seed}: pair {r['test']['pair_accuracy']:.1f} t2v R@1 {r['test']['t2v_r1']:.1f} "
                  f"({time.time() - t:.0f} s)", flush=True)
            partial.write_text(json.dumps(results, indent=1))  # progress survives an interruption
    write_markdown(results, args, out, time.time() - started)
    write_chart(results, out.with_suffix(".png"))
    print(f"wrote {out}, {out.with_suffix('.png')}, {partial}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
