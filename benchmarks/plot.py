"""Bar chart of ``train_step.py`` results: step time and training memory of every method
as a fraction of full fine-tuning, one panel per JSON file (e.g. CPU and GPU runs).
Nothing is measured here; the figures are the ratios the JSON files hold.

    python benchmarks/plot.py cpu.json gpu.json --labels "CPU fp32, batch 2" "H200 bf16, batch 32" \
        --out docs/performance_train_step.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help="train_step.py --json outputs")
    p.add_argument("--labels", nargs="*", help="one title per file")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.files), figsize=(6.5 * len(args.files), 4.8), squeeze=False)
    for i, (path, ax) in enumerate(zip(args.files, axes[0])):
        data = json.loads(path.read_text())
        res = {n: r for n, r in data["results"].items() if "step_ratio" in r and n != "full"}
        names = list(res)
        x = range(len(names))
        ax.bar([j - 0.2 for j in x], [res[n]["step_ratio"] for n in names], 0.4, label="step time")
        ax.bar([j + 0.2 for j in x], [res[n].get("mem_ratio", 0) for n in names], 0.4, label="training memory")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(0.7, color="tab:blue", lw=0.8, ls="--", label="goal: time 0.7")
        ax.axhline(0.5, color="tab:orange", lw=0.8, ls="--", label="goal: memory 0.5")
        ax.set_xticks(list(x), names, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("fraction of full fine-tuning")
        a = data["args"]
        title = args.labels[i] if args.labels and i < len(args.labels) else path.stem
        ax.set_title(f"{title}\n{a['backbone']}, batch {a['batch']} x {a['frames']} frames, {a['dtype']}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
