"""`vop eval` reproduces a run's own test numbers: the run records the precision it
evaluated in (bf16 autocast here) and `vop eval` uses it unless told otherwise."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest


def test_vop_eval_reproduces_a_bf16_runs_test_numbers(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_cli import _run, train_on_fake_msrvtt

    out = train_on_fake_msrvtt(tmp_path, "vop", **{"runtime.precision": "bf16"})
    summary = json.loads((out / "summary.json").read_text())
    meta = json.loads((out / "checkpoints" / "best" / "meta.json").read_text())
    assert meta["eval_precision"] == "bf16"
    base = [sys.executable, "-m", "vop.cli", "eval", "--checkpoint", str(out / "checkpoints" / "best"),
            "--set", f"data.root={tmp_path / 'msrvtt'}", "--device", "cpu", "--json", "--quiet"]
    same = json.loads(_run(base, tmp_path).stdout)
    keys = [k for k, v in summary["test"].items() if isinstance(v, float)]
    assert {k: same[k] for k in keys} == pytest.approx({k: summary["test"][k] for k in keys}, abs=0)
    fp32 = json.loads(_run(base + ["--precision", "fp32"], tmp_path).stdout)
    assert set(fp32) >= set(keys)  # runs in fp32 when asked (its numbers may differ in ranks)
