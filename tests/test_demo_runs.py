"""`vop demo` run again in the same folder trains from scratch and reports each validation
once (its run folders were kept, and the appended log gave every validation twice)."""

from __future__ import annotations

import json
import shutil

import pytest

import vop.demo as demo_module
from vop.demo import format_table, run_demo, validation_curve

pytestmark = pytest.mark.slow
TINY = ["data.synthetic.train_pairs=16", "data.synthetic.val_pairs=4", "data.synthetic.test_pairs=4",
        "runtime.val_every_steps=1", "runtime.log_every=1", "optim.batch_size=8", "eval.batch_size=8"]


def test_a_second_demo_in_the_same_folder_reports_each_validation_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VOP_DEMO_DIR", str(tmp_path / "home"))  # the prompts it keeps go here
    prompts = tmp_path / "home" / "prompts"
    run_demo(("vop",), steps=2, out_dir=tmp_path / "demo", overrides=TINY, progress=False)
    kept = {p.name: p.read_bytes() for p in prompts.iterdir()}

    # A failure while the new prompts are copied leaves the previous ones whole.
    real_copytree = shutil.copytree

    def copy_then_fail(src, dst, **kwargs):
        real_copytree(src, dst, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo_module.shutil, "copytree", copy_then_fail)
    with pytest.raises(OSError, match="No space"):
        run_demo(("vop",), steps=2, out_dir=tmp_path / "demo", overrides=TINY, progress=False)
    assert {p.name: p.read_bytes() for p in prompts.iterdir()} == kept
    monkeypatch.undo()
    monkeypatch.setenv("VOP_DEMO_DIR", str(tmp_path / "home"))

    rows = run_demo(("vop",), steps=2, out_dir=tmp_path / "demo", overrides=TINY, progress=False)
    assert [step for step, _, _ in rows[1].curve] == [1, 2]
    assert format_table(rows).count("vop: val pair accuracy by training step: 1: ") == 1
    logged = [json.loads(line) for line in (tmp_path / "demo" / "runs" / "vop" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["kind"] == "train"] == [1, 2]  # this run's steps only
    assert (prompts / "meta.json").exists()
    assert sorted(p.name for p in prompts.parent.iterdir()) == ["prompts"]  # no leftovers


def test_the_validation_curve_counts_a_step_validated_twice_once(tmp_path):
    # A run resumed from a checkpoint before its last validation validates that step again.
    log = tmp_path / "log.jsonl"
    records = [{"kind": "val", "step": 2, "pair_accuracy": 50.0, "t2v_r1": 10.0},
               {"kind": "train", "step": 3, "loss": 1.0},
               {"kind": "val", "step": 4, "pair_accuracy": 60.0, "t2v_r1": 20.0},
               {"kind": "val", "step": 4, "pair_accuracy": 61.0, "t2v_r1": 21.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert validation_curve(log) == [(2, 50.0, 10.0), (4, 61.0, 21.0)]
