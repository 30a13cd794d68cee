"""runtime.compile: the training step through torch.compile equals the eager step (losses
and trained tensors, fp32 on the CPU, tiny backbone), and a run started eager resumes
compiled. (The speed it buys is a GPU matter: benchmarks/gpu.sh.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vop.checkpoint import read_weights
from vop.train.config import TrainConfig
from vop.train.trainer import Trainer


def _config(out: Path, compile: bool, steps: int = 3) -> TrainConfig:
    return TrainConfig.from_dict({
        "backbone": "tiny",
        "method": {"name": "vop"},
        "data": {"benchmark": "synthetic", "num_frames": 4, "workers": 0, "random_crop": False, "flip": False,
                 "synthetic": {"train_pairs": 8, "val_pairs": 2, "test_pairs": 2}},
        "optim": {"batch_size": 8, "max_steps": steps, "lr": 1e-2, "warmup_ratio": 0.0},
        "runtime": {"device": "cpu", "out_dir": str(out), "save_every": 1, "log_every": 1, "progress": False,
                    "tensorboard": False, "compile": compile},
    })


def _losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r["kind"] == "train"]


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    out = tmp_path_factory.mktemp("eager")
    Trainer(_config(out, compile=False)).fit()
    return out


def test_the_compiled_step_equals_the_eager_step(eager, tmp_path):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    Trainer(_config(tmp_path, compile=True)).fit()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it really ran compiled
    assert _losses(tmp_path) == pytest.approx(_losses(eager), rel=1e-4)
    got, want = read_weights(tmp_path / "checkpoints" / "last"), read_weights(eager / "checkpoints" / "last")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_a_run_started_eager_resumes_compiled(eager, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_one(trainer):
        if trainer.state.step == 1:
            raise Stop

    with pytest.raises(Stop):
        Trainer(_config(tmp_path, compile=False), on_step=stop_after_one).fit()
    torch._dynamo.reset()
    said = []
    summary = Trainer(_config(tmp_path, compile=True), say=said.append).fit()  # same run, now compiled
    assert summary["steps"] == 3 and any("resuming from step 1" in line for line in said), said
    got, want = read_weights(tmp_path / "checkpoints" / "last"), read_weights(eager / "checkpoints" / "last")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)
