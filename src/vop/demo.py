"""``vop demo``: the paper's question on the built-in synthetic world, on a CPU.

Evaluates the shipped tiny CLIP zero-shot on the downstream world's test split, trains
``vop`` and ``vop-fc`` (and ``full`` on request) with the same budget, prints a results
table (t2v / v2t R@1, R@5, MnR, pair accuracy, trainable parameters, train time), writes
it as JSON and a PNG chart, and saves the trained prompts where ``vop serve --demo`` finds
them.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vop import atomic
from vop.paths import demo_home, demo_prompts_dir

DEFAULT_METHODS = ("vop", "vop-fc")


@dataclass
class Row:
    method: str
    trainable: int
    train_seconds: float
    steps: int
    metrics: dict
    curve: list = None  # (step, val pair accuracy, val t2v R@1) at each validation

    def as_dict(self) -> dict:
        keys = ("t2v_r1", "t2v_r5", "t2v_mnr", "v2t_r1", "v2t_r5", "v2t_mnr", "pair_accuracy")
        return {"method": self.method, "trainable_parameters": self.trainable, "train_seconds": round(self.train_seconds, 1),
                "steps": self.steps, **{k: round(float(self.metrics[k]), 2) for k in keys if k in self.metrics},
                "val_curve": self.curve or []}


def synthetic_config(method: str, overrides: list[str] | None = None):
    """The config of ``method`` on the synthetic world (``--data synthetic``), with overrides."""
    from vop.train.config import load_train_config

    return load_train_config(None, overrides, data="synthetic", method=method)


def run_demo(methods: tuple[str, ...] = DEFAULT_METHODS, *, steps: int | None = None, out_dir: Path | None = None,
             overrides: list[str] | None = None, progress: bool = True, seed: int = 0) -> list[Row]:
    """Zero-shot + each method trained with the demo budget; returns one row per method."""
    from vop.backbone import load
    from vop.data.datasets import open_split
    from vop.eval.evaluate import evaluate
    from vop.model import create
    from vop.train.trainer import Trainer

    out_dir = Path(out_dir or demo_home())
    extra = list(overrides or [])
    if steps is not None:
        extra.append(f"optim.max_steps={steps}")
    extra.append(f"runtime.seed={seed}")
    extra.append(f"runtime.progress={'true' if progress else 'false'}")
    base = synthetic_config("zero-shot", extra)
    d = base.data
    splits = {name: open_split(d, name) for name in (d.train_split, d.val_split, d.test_split)}
    if base.runtime.threads:
        torch.set_num_threads(base.runtime.threads)
    clip = load(base.backbone)
    zero = create("zero-shot", clip)
    test = splits[d.test_split]
    rows = [Row("zero-shot", 0, 0.0, 0, evaluate(zero, test, base.eval, progress=progress))]
    best_prompt, best_pair = None, -1.0
    for method in methods:
        config = synthetic_config(method, extra + [f"runtime.out_dir={out_dir / 'runs' / method}"])
        run_dir = Path(config.runtime.out_dir)
        # The demo always trains from scratch: the previous run's checkpoints go, and so does
        # its log (appended to, it would give every validation twice in the table).
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
        for name in ("log.jsonl", "summary.json"):
            (run_dir / name).unlink(missing_ok=True)
        if progress:
            print(f"\ntraining {method} for {config.optim.max_steps} steps of {config.optim.batch_size} videos")
        trainer = Trainer(config, clip=load(config.backbone), splits=dict(splits))
        summary = trainer.fit()
        rows.append(Row(method, trainer.model.num_trainable(), summary["train_seconds"], summary["steps"],
                        summary["test"], validation_curve(run_dir / "log.jsonl")))
        pair = summary["test"].get("pair_accuracy", 0.0)
        if method != "full" and pair > best_pair:
            best_prompt, best_pair = run_dir / "checkpoints" / "best", pair
    if best_prompt is not None:  # swapped in whole: a kill leaves the previous prompts or these
        from vop.checkpoint import copy_checkpoint

        copy_checkpoint(best_prompt, demo_prompts_dir())
    return rows


def validation_curve(log_file: Path) -> list[tuple[int, float, float]]:
    """(step, pair accuracy, t2v R@1) of every validation a run logged, in step order. A
    step validated twice (a run resumed from a checkpoint before it) counts once: its
    latest record."""
    if not log_file.exists():
        return []
    by_step = {}
    for line in log_file.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "val":
            by_step[rec["step"]] = (rec["step"], round(rec.get("pair_accuracy", float("nan")), 1),
                                    round(rec["t2v_r1"], 1))
    return [by_step[step] for step in sorted(by_step)]


def format_table(rows: list[Row]) -> str:
    head = (f"{'method':<10} {'trainable':>10} {'train s':>8} {'t2v R@1':>8} {'R@5':>6} {'MnR':>6} "
            f"{'v2t R@1':>8} {'R@5':>6} {'MnR':>6} {'pair acc':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r.metrics
        lines.append(f"{r.method:<10} {r.trainable:>10,} {r.train_seconds:>8.0f} {m['t2v_r1']:>8.1f} {m['t2v_r5']:>6.1f} "
                     f"{m['t2v_mnr']:>6.1f} {m['v2t_r1']:>8.1f} {m['v2t_r5']:>6.1f} {m['v2t_mnr']:>6.1f} "
                     f"{m.get('pair_accuracy', float('nan')):>8.1f}%")
    n = rows[0].metrics.get("num_videos", "?")
    for r in rows:
        if r.curve:
            lines.append(f"{r.method}: val pair accuracy by training step: "
                         + ", ".join(f"{step}: {pair:.1f} %" for step, pair, _ in r.curve))
    lines.append(f"test split: {n} videos ({rows[0].metrics.get('num_captions', '?')} captions); chance t2v MnR "
                 f"{(n + 1) / 2 if isinstance(n, int) else '?'}; pair accuracy 50 % is blind to time order")
    return "\n".join(lines)


def write_report(rows: list[Row], out_dir: Path) -> dict[str, Path]:
    """``results.json`` and ``results.png`` (pair accuracy and t2v R@1 per method)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json"}
    atomic.write_text(paths["json"], json.dumps({"created": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                 "rows": [r.as_dict() for r in rows]}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r.method for r in rows]
    axes[0].bar(names, [r.metrics.get("pair_accuracy", 0) for r in rows], color="#4c72b0")
    axes[0].axhline(50, color="grey", linestyle="--", linewidth=1)
    axes[0].set_ylim(0, 100)
    axes[0].set_title("pair accuracy (%): own caption above its reversal's")
    axes[1].bar(names, [r.metrics["t2v_r1"] for r in rows], color="#dd8452")
    axes[1].set_title("text-to-video R@1 (%)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    paths["png"] = out_dir / "results.png"
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    atomic.write_bytes(paths["png"], png.getvalue())
    return paths
