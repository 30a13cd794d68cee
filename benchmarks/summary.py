"""One table from the JSON files of ``train_step.py`` and ``encode.py`` (``--json``):
per method, the training step and its memory against full fine-tuning, and encoding
throughput at the largest batch, fp32 against the faster bf16 path, with the bf16
agreement. The ratios are those the two scripts measured; nothing is re-timed.

    python benchmarks/summary.py --train train_step.json --encode encode.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, required=True, help="train_step.py --json output")
    p.add_argument("--encode", type=Path, help="encode.py --json output")
    args = p.parse_args(argv)
    train = json.loads(args.train.read_text())
    enc = json.loads(args.encode.read_text()) if args.encode and args.encode.exists() else None
    ta = train["args"]
    print(f"# {train['machine']}")
    print(f"# training: {ta['backbone']}, batch {ta['batch']} x {ta['frames']} frames, {ta['dtype']}")
    by_method: dict[str, dict] = {}
    if enc is not None:
        big = max(int(b) for b in enc["args"]["batches"].split(","))
        print(f"# encoding: batch {big} x {enc['args']['frames']} frames, inference_mode")
        for r in enc["results"]:
            if r["batch"] != big:
                continue
            m = by_method.setdefault(r["method"], {})
            if r["path"] == "fp32":
                m["fp32"] = r
            elif "bf16" not in m or r["speedup"] > m["bf16"]["speedup"]:
                m["bf16"] = r
    rows = []
    for name, r in train["results"].items():
        if "step" not in r:
            continue
        row = [name, r["trainable"], f"{r['step'] * 1e3:.0f}", f"{r['step_ratio']:.2f}"]
        row += ([f"{r['train_mem'] / common.MIB:.0f}", f"{r['mem_ratio']:.2f}"] if "mem_ratio" in r else ["-", "-"])
        e = by_method.get(name)
        if e and "fp32" in e and "bf16" in e:
            row += [f"{e['fp32']['videos_per_s']:.1f}", f"{e['bf16']['videos_per_s']:.1f} ({e['bf16']['path']})",
                    f"{e['bf16']['speedup']:.2f}", f"{100 * e['bf16'].get('fraction_of_peak', 0):.0f} %",
                    f"{e['bf16']['min_cos']:.5f}"]
        else:
            row += ["-"] * 5
        row.append("ok" if r.get("frozen_ok") else "FAILED")
        rows.append(row)
    print(common.markdown_table(
        ["method", "trainable", "step ms", "x full", "train mem MiB", "x full", "encode fp32 videos/s",
         "encode bf16 videos/s", "x fp32", "of bf16 peak", "min cos bf16 vs fp32", "frozen check"], rows))


if __name__ == "__main__":
    main()
