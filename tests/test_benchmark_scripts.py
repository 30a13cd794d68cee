"""The benchmark scripts run end to end on the tiny backbone (seconds) and print their
tables: they are documented commands, so they must not rot. No timings are checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--backbone", "tiny", *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def table_rows(out: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_unread_rows_reports_every_method_with_less_saved_memory_when_skipping():
    out = run("unread_rows.py", "--threads", "1", "--reps", "1", "--methods", "vop,vop-f", "--no-encode")
    rows = table_rows(out)
    assert set(rows) == {"full", "vop", "vop-f"}
    for name in ("vop", "vop-f"):
        saved_plain, saved_skip = float(rows[name][5]), float(rows[name][6])
        assert saved_skip <= saved_plain


@pytest.mark.parametrize("extra", [[], ["--checkpointing", "--checkpoint-image-blocks", "2"], ["--plain-rows"]])
def test_train_step_runs_with_its_options(extra):
    out = run("train_step.py", "--threads", "1", "--reps", "1", "--methods", "vop", "--no-memory", *extra)
    rows = table_rows(out)
    assert "vop" in rows and rows["vop"][-1] == "ok"  # frozen tensors: no grad, no optimiser state


def test_data_path_reports_throughput_and_input_waiting():
    out = run("data_path.py", "--clips", "2", "--seconds", "2", "--min-seconds", "0.2", "--loader",
              "--threads", "1", "--steps", "2")
    assert "speed-up, cache vs raw decode" in out
    rows = table_rows(out)
    assert set(rows) == {"raw video, 0 workers", "raw video, 1 worker", "raw video, 2 workers", "frame cache, 0 workers"}
    for step_s, waiting in rows.values():
        assert float(step_s) > 0 and 0 <= int(waiting.rstrip("%")) <= 100


def test_encode_reports_every_path_against_the_peak_of_its_own_rounds():
    out = run("encode.py", "--threads", "1", "--reps", "1", "--batches", "2", "--methods", "zero-shot,vop-fc",
              "--peak-size", "128")
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    body = [[c.strip() for c in r] for r in rows[1:]]
    assert {(r[0], r[2]) for r in body} == {(m, p) for m in ("zero-shot", "vop-fc")
                                            for p in ("fp32", "bf16 weights", "bf16 autocast")}
    for r in body:
        assert float(r[8]) > 0 and r[9].endswith("%")  # the same-round peak and the share of it
    assert sum(line.startswith("goal ") for line in out.splitlines()) == 2


def test_lstm_compile_compares_nn_lstm_with_the_bilstm():
    out = run("lstm_compile.py", "--threads", "1", "--reps", "1", "--batch", "2", "--backend", "eager")
    rows = table_rows(out)
    assert set(rows) == {"uncompiled", "compiled, nn.LSTM (before)", "compiled, BiLSTM (after)"}
    assert int(rows["compiled, nn.LSTM (before)"][3]) > 1  # nn.LSTM breaks the graph
    assert rows["compiled, BiLSTM (after)"][3] == "1"


def test_synthetic_table_runs_method_and_head_rows(tmp_path):
    # A tiny world and budget; the rows name a method or METHOD+HEAD.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = ["data.synthetic.train_pairs=8", "data.synthetic.val_pairs=4", "data.synthetic.test_pairs=4",
            "optim.batch_size=4", "eval.batch_size=8", "runtime.val_every_steps=0", "runtime.save_every=0"]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "synthetic_table.py"), "--methods",
                           "zero-shot,vop+seqlstm", "--seeds", "0", "--steps", "2", "--threads", "1",
                           "--out", str(tmp_path / "t.md"), "--runs", str(tmp_path / "runs"),
                           *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "t.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "vop+seqlstm" in rows and "zero-shot" in rows
    assert "2,101,248" not in rows["vop+seqlstm"]  # the head on the tiny CLIP, not ViT-B/32's count
    import json

    runs = json.loads((tmp_path / "t.json").read_text())
    assert {r["method"] for r in runs} == {"zero-shot", "vop+seqlstm"}
    assert next(r for r in runs if r["method"] == "vop+seqlstm")["trainable"] > next(
        r for r in runs if r["method"] == "zero-shot")["trainable"]
