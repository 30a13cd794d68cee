"""From the command line: `vop train`, `vop eval` and `vop encode` say what they run (on
stderr, so stdout keeps the results); Ctrl-C in `vop train` says what is kept and lost and
exits 130; re-running the same command resumes, and once the run is done, says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers_video import write_video
from vop.cli import main
from vop.train.trainer import Trainer

pytestmark = pytest.mark.slow


def _config_file(tmp_path, **runtime) -> str:
    config = {
        "backbone": "tiny",
        "method": {"name": "vop-fc"},
        "data": {"benchmark": "synthetic", "num_frames": 4, "workers": 0,
                 "synthetic": {"train_pairs": 16, "val_pairs": 4, "test_pairs": 4}},
        "optim": {"batch_size": 8, "epochs": 2, "lr": 1e-2},
        "runtime": {"device": "cpu", "precision": "fp32", "out_dir": str(tmp_path / "run"), "save_every": 2, "log_every": 1,
                    "progress": False, "tensorboard": False, **runtime},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _header(stderr: str, title: str) -> dict[str, str]:
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = {}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        key, value = line.split(":", 1)
        rows[key.strip()] = value.strip()
    return rows


def test_train_interrupted_resumed_and_re_run(tmp_path, monkeypatch, capsys):
    config = _config_file(tmp_path)
    last = tmp_path / "run" / "checkpoints" / "last"
    real = Trainer._optimizer_step

    def ctrl_c_after_step_3(self, trainable, loss):
        if self.state.step == 3:
            raise KeyboardInterrupt
        return real(self, trainable, loss)

    monkeypatch.setattr(Trainer, "_optimizer_step", ctrl_c_after_step_3)
    assert main(["train", config]) == 130
    out, err = capsys.readouterr()
    rows = _header(err, "vop train: vop-fc on synthetic")
    assert rows["backbone"] == "tiny: random weights (seed 0)"
    assert rows["device"] == "cpu, precision fp32 (autocast)" and rows["steps"].startswith("8 optimiser steps")
    assert rows["output"] == str((tmp_path / "run").resolve())
    assert (f"interrupted at step 3: the last checkpoint is step 2 ({last}), so 1 step(s) are lost; running the "
            "same command again resumes from step 2") in err
    assert out == ""

    monkeypatch.setattr(Trainer, "_optimizer_step", real)
    assert main(["train", config]) == 0
    out, err = capsys.readouterr()
    assert f"resuming from step 2 of 8 (checkpoint {last})" in err
    assert json.loads(out[:out.rindex("}") + 1])["steps"] == 8  # stdout: the results only

    summary = (tmp_path / "run" / "summary.json").read_bytes()
    assert main(["train", config]) == 0
    out, err = capsys.readouterr()
    assert "already complete (8 steps)" in err and "vop train: vop-fc" not in err
    assert (tmp_path / "run" / "summary.json").read_bytes() == summary

    # --restart trains the run again from step 0, with a fresh log.
    assert main(["train", config, "--restart"]) == 0
    _, err = capsys.readouterr()
    assert "vop train: vop-fc on synthetic" in err and "resuming" not in err and "already complete" not in err
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["kind"] == "train"] == list(range(1, 9))


def test_train_stops_with_one_line_when_trained_tensors_go_non_finite(tmp_path, monkeypatch, capsys):
    import torch

    real = Trainer._optimizer_step

    def poisoned_step(self, trainable, loss):
        stepped = real(self, trainable, loss)
        if self.state.step == 2:  # the step about to be counted as 3 produced inf weights
            with torch.no_grad():
                trainable[0].fill_(float("inf"))
        return stepped

    monkeypatch.setattr(Trainer, "_optimizer_step", poisoned_step)
    assert main(["train", _config_file(tmp_path, save_every=1, max_bad_steps=50)]) == 2
    _, err = capsys.readouterr()
    assert "vop train: error: step 3: 1 trained tensor(s) hold non-finite values" in err
    assert "Traceback" not in err
    assert json.loads((tmp_path / "run" / "checkpoints" / "last" / "meta.json").read_text())["step"] == 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    assert main(["train", _config_file(tmp, save_every=4)]) == 0
    return tmp / "run" / "checkpoints" / "best"


def test_eval_given_a_training_config_says_what_it_does_not_read(trained, tmp_path, capsys):
    config = _config_file(tmp_path, precision="bf16")  # a train config: method, optim, runtime
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(trained), "--data", config, "--json", "--quiet"]) == 0
    out, err = capsys.readouterr()
    json.loads(out)
    assert "not read from the config: optim, runtime, method, backbone" in err
    assert "precision fp32 (autocast, as the run evaluated)" in err  # runtime.precision bf16 not taken
    other = yaml.safe_load(Path(config).read_text())
    other["method"] = {"name": "vop-p"}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert main(["eval", "--checkpoint", str(trained), "--data", str(tmp_path / "other.yaml"), "--quiet"]) == 2
    assert re.search(r"error: .*other.yaml names method 'vop-p' but .* holds 'vop-fc'", capsys.readouterr().err)
    assert main(["eval", "--checkpoint", str(trained), "--data", "synthetic", "--set", "data.num_frames=4",
                 "--set", "data.synthetic.test_pairs=4", "--json", "--quiet", "--device", "cpu"]) == 0
    assert "not read" not in capsys.readouterr().err  # a preset's training defaults are not the user's


def test_eval_and_encode_say_what_they_run(trained, tmp_path, capsys):
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(trained), "--json", "--quiet", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    json.loads(out)  # the header does not spoil --json
    rows = _header(err, "vop eval: vop-fc on synthetic test")
    meta = json.loads((trained / "meta.json").read_text())
    assert rows["checkpoint"] == str(trained)
    assert rows["backbone"] == "tiny: random weights (seed 0)"
    assert rows["method"] == f"vop-fc: {meta['trainable_parameters']:,} trained parameters"
    assert rows["device"] == "cpu, precision fp32 (autocast, as the run evaluated)"
    assert rows["data"] == "synthetic test: synthetic world, rendered in memory (8 videos, 8 captions)"

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        write_video(videos / f"clip{i}.mp4", np.full((8, 32, 32, 3), 60 * i, np.uint8))
    index = tmp_path / "index"
    assert main(["encode", str(videos), "--checkpoint", str(trained), "--out", str(index), "--quiet"]) == 0
    _, err = capsys.readouterr()
    rows = _header(err, "vop encode: vop-fc")
    assert rows["checkpoint"] == str(trained.resolve())
    assert rows["backbone"] == "tiny: random weights (seed 0)"
    assert rows["method"] == f"vop-fc: {meta['trainable_parameters']:,} trained parameters"
    assert rows["device"] == "cpu, weights fp32 (weight cast)"
    assert rows["world"] == "1 process (no process group)"
    assert (rows["videos"], rows["output"]) == (str(videos.resolve()), str(index.resolve()))
