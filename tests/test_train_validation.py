"""Validation every N steps: logged at those steps, best chosen among them, no double
validation when an epoch ends on such a step."""

from __future__ import annotations

import json

from test_train_loop import tiny_config
from vop.train.trainer import Trainer


def test_validation_every_n_steps(tmp_path):
    config = tiny_config(tmp_path, val_every_steps=2)
    summary = Trainer(config).fit()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in records if r["kind"] == "val"]
    expected = list(range(2, summary["steps"] + 1, 2))
    if summary["steps"] % 2:
        expected.append(summary["steps"])  # the end of training validates too
    assert val_steps == expected
    best = json.loads((tmp_path / "checkpoints" / "best" / "meta.json").read_text())
    assert best["step"] in val_steps
