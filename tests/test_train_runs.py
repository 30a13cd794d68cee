"""Runs that explain themselves and survive their users (issues 12, 13, 14): the header, the
resume and Ctrl-C messages, a finished run re-run, a moved run folder, a `last` without its
training state, non-finite trained tensors, unreadable splits found before training, the
progress bar's total, and the optimisation objects built in one place."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from vop.data.datasets import OpenedSplit, open_split
from vop.data.types import VideoReadError
from vop.train import trainer as trainer_module
from vop.train.config import TrainConfig
from vop.train.trainer import Trainer, TrainingDiverged

STEPS = 8  # 32 training captions, batch 8: 4 steps per epoch, 2 epochs


def tiny_config(out_dir, optim: dict | None = None, **runtime) -> TrainConfig:
    return TrainConfig.from_dict({
        "backbone": "tiny",
        "method": {"name": "vop-fc"},
        "data": {"benchmark": "synthetic", "num_frames": 4, "workers": 0,
                 "synthetic": {"train_pairs": 16, "val_pairs": 4, "test_pairs": 4}},
        "optim": {"batch_size": 8, "epochs": 2, "lr": 1e-2, "warmup_ratio": 0.25, **(optim or {})},
        "runtime": {"device": "cpu", "out_dir": str(out_dir), "save_every": 1, "log_every": 1,
                    "progress": False, "tensorboard": False, **runtime},
    })


def _interrupt_at(step: int):
    def on_step(trainer: Trainer) -> None:
        if trainer.state.step == step:
            raise KeyboardInterrupt

    return on_step


def _weights(out_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out_dir / "checkpoints" / which / "weights.safetensors"))


def _step_of(out_dir: Path, which: str = "last") -> int:
    return json.loads((out_dir / "checkpoints" / which / "meta.json").read_text())["step"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run: its folder, summary and what its header said."""
    out = tmp_path_factory.mktemp("finished") / "run"
    said: list[str] = []
    summary = Trainer(tiny_config(out), say=said.append).fit()
    return out, summary, said


# -- the header, resuming, Ctrl-C -----------------------------------------------------------
def test_the_header_says_what_the_run_is(finished):
    out, _, said = finished
    header = said[0]
    lines = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in header.splitlines()[1:])}
    assert header.splitlines()[0] == "vop train: vop-fc on synthetic"
    assert lines["backbone"] == "tiny: random weights (seed 0)"
    trained = Trainer(tiny_config(out / "x")).model.num_trainable()
    assert lines["method"].startswith(f"vop-fc: {trained:,} trainable parameters (")
    assert lines["device"] == "cpu, precision fp32 (autocast)"
    assert lines["world"] == "1 process (no process group)"
    assert lines["steps"].startswith(f"{STEPS} optimiser steps (2 epochs of 4)")
    assert lines["data"] == "synthetic train: synthetic world, rendered in memory (32 videos, 32 captions)"
    assert lines["output"] == str(out.resolve())
    assert not any("resuming" in s for s in said)


def test_the_header_names_the_frame_cache_or_the_video_folder(tmp_path):
    from helpers_video import write_video
    from vop.data.cache import build_frame_cache
    from vop.data.datasets import describe_source
    from vop.data.sources import FileVideoSource
    from vop.data.types import RetrievalSplit

    videos = tmp_path / "videos"
    videos.mkdir()
    paths = []
    for i in range(2):
        paths.append(videos / f"v{i}.mp4")
        write_video(paths[-1], torch.full((8, 16, 16, 3), 40 * i, dtype=torch.uint8).numpy())
    raw = RetrievalSplit("t", ("v0", "v1"), ("a", "b"), (0, 1), FileVideoSource(paths))
    assert describe_source(OpenedSplit(raw)) == f"raw videos decoded from {videos} (2 videos, 2 captions)"
    build_frame_cache(paths[:1], tmp_path / "cache", num_frames=4, size=16, progress=False)
    from vop.data.cache import FrameCache

    cached = dataclasses.replace(raw, source=FileVideoSource(paths, cache=FrameCache.open(tmp_path / "cache")))
    assert describe_source(OpenedSplit(cached)) == (
        f"frame cache {tmp_path / 'cache'} (1 of 2 videos cached; the rest decoded from {videos}; 2 captions)")


def test_resuming_and_ctrl_c_say_where_the_run_stands(tmp_path):
    out = tmp_path / "run"
    said: list[str] = []
    # `last` every 2 steps; interrupted at step 3: step 2 is kept, one step is lost.
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(out, save_every=2), on_step=_interrupt_at(3), say=said.append).fit()
    assert said[-1] == (f"interrupted at step 3: the last checkpoint is step 2 ({out / 'checkpoints' / 'last'}), "
                        "so 1 step(s) are lost; running the same command again resumes from step 2")
    with open(out / "log.jsonl", "a") as f:
        f.write('{"kind": "train", "st')  # and a line torn by a kill mid-write
    said.clear()
    summary = Trainer(tiny_config(out, save_every=2), say=said.append).fit()
    assert said[0].startswith("vop train: vop-fc on synthetic")
    assert said[1] == f"resuming from step 2 of {STEPS} (checkpoint {out / 'checkpoints' / 'last'})"
    assert summary["steps"] == STEPS
    # Step 3 was trained twice but is logged once; the torn line is gone.
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["kind"] == "train"] == list(range(1, STEPS + 1))


def test_ctrl_c_before_the_first_checkpoint_says_the_run_starts_over(tmp_path):
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tmp_path / "run", save_every=0), on_step=_interrupt_at(1), say=said.append).fit()
    assert said[-1] == ("interrupted at step 1, before the first checkpoint: 1 step(s) lost; running the same "
                        "command again starts the run over")


class _BarRecorder:
    """Stands in for tqdm: records the totals and updates the trainer's bar gets."""

    made: list = []

    def __init__(self, total=None, initial=0, **kwargs):
        self.total, self.n = total, initial
        _BarRecorder.made.append(self)

    def update(self, n=1):
        self.n += n

    def set_description(self, *a, **k):
        pass

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass


def test_the_progress_bar_counts_to_the_runs_real_total(tmp_path, monkeypatch):
    # max_steps 5 with 4 steps per epoch: one bar to 5, not epoch bars of 4 batches.
    _BarRecorder.made = []
    monkeypatch.setattr(trainer_module, "tqdm", _BarRecorder)
    summary = Trainer(tiny_config(tmp_path / "run", optim={"max_steps": 5})).fit()
    assert summary["steps"] == 5
    assert [(b.total, b.n) for b in _BarRecorder.made] == [(5, 5)]


# -- a finished run, a moved run ------------------------------------------------------------
def test_a_finished_run_re_run_says_so_and_does_nothing(finished, monkeypatch):
    out, summary, _ = finished
    log_before = (out / "log.jsonl").read_bytes()
    summary_before = (out / "summary.json").stat()
    weights_before = _weights(out)
    said: list[str] = []
    trainer = Trainer(tiny_config(out), say=said.append)
    evaluated = []
    monkeypatch.setattr(trainer, "validate", lambda *a, **k: evaluated.append(a))
    again = trainer.fit()
    assert said == [f"{out}: already complete ({STEPS} steps); its results are in {out / 'summary.json'}. "
                    "Nothing to do (vop train --restart trains it again)"]
    assert again == json.loads(json.dumps(summary))
    assert evaluated == []  # no validation, no second test evaluation
    assert (out / "log.jsonl").read_bytes() == log_before  # not one step more
    after = (out / "summary.json").stat()
    assert (after.st_mtime_ns, after.st_ino) == (summary_before.st_mtime_ns, summary_before.st_ino)
    for name, tensor in _weights(out).items():
        assert torch.equal(tensor, weights_before[name]), name


def test_a_run_stopped_between_training_and_testing_tests_once(finished, tmp_path):
    out, summary, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "summary.json").unlink()  # killed after the last checkpoint, before the test split
    said: list[str] = []
    trainer = Trainer(tiny_config(copy), say=said.append)
    calls = []
    real = trainer.validate
    trainer.validate = lambda name, model=None: calls.append(name) or real(name, model=model)
    again = trainer.fit()
    assert said == [f"{copy}: training already complete ({STEPS} steps); evaluating the test split"]
    assert calls == ["test"]
    assert again["test"] == summary["test"] and again["steps"] == STEPS
    assert json.loads((copy / "summary.json").read_text())["test"] == summary["test"]


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_moved_or_copied_run_folder_resumes(tmp_path, finished, how):
    ref, _, _ = finished
    first = tmp_path / "first"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(first), on_step=_interrupt_at(3)).fit()
    second = tmp_path / "elsewhere" / "run"
    second.parent.mkdir()
    (shutil.move if how == "moved" else shutil.copytree)(str(first), str(second))
    said: list[str] = []
    summary = Trainer(tiny_config(second), say=said.append).fit()
    assert said[1] == f"resuming from step 3 of {STEPS} (checkpoint {second / 'checkpoints' / 'last'})"
    assert summary["steps"] == STEPS
    ref_weights, got = _weights(ref), _weights(second)
    for name in ref_weights:  # the same run, wherever its folder lives
        assert torch.equal(got[name], ref_weights[name]), name


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_last_checkpoint_without_its_training_state_is_refused(tmp_path, damage):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(out), on_step=_interrupt_at(5)).fit()  # an epoch end passed: `best` exists
    state = out / "checkpoints" / "last" / "state.pt"
    if damage == "missing":
        state.unlink()
    else:
        state.write_bytes(b"not a pickle")
    before = {which: _weights(out, which) for which in ("last", "best")}
    with pytest.raises(ValueError, match="missing" if damage == "missing" else "cannot be read") as err:
        Trainer(tiny_config(out)).fit()
    assert str(state) in str(err.value) and "--restart" in str(err.value)
    assert _step_of(out) == 5
    for which, tensors in before.items():  # neither overwritten
        for name, tensor in _weights(out, which).items():
            assert torch.equal(tensor, tensors[name]), (which, name)


def test_non_finite_trained_tensors_are_never_saved(tmp_path):
    out = tmp_path / "run"

    def poison(trainer: Trainer) -> None:
        if trainer.state.step == 2:  # after step 2's `last`; step 3's save must refuse
            with torch.no_grad():
                next(iter(trainer.model.trainable_parameters().values())).fill_(float("inf"))

    with pytest.warns(UserWarning, match="non-finite loss"):
        with pytest.raises(TrainingDiverged, match="non-finite values") as err:
            Trainer(tiny_config(out, max_bad_steps=100), on_step=poison).fit()
    assert f"last good checkpoint {out / 'checkpoints' / 'last'} (step 2)" in str(err.value)
    assert _step_of(out) == 2
    for name, tensor in _weights(out).items():
        assert torch.isfinite(tensor).all(), name


class _Unreadable:
    """A video source whose every video fails, as a folder of corrupt files would."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def describe(self, index):
        return f"broken{index}.mp4"

    def load(self, index, num_frames, mode="middle", generator=None):
        raise VideoReadError(self.describe(index), "invalid data found when processing input")


@pytest.mark.parametrize("which", ["val", "test"])
def test_a_split_with_no_readable_video_fails_before_training(tmp_path, which):
    config = tiny_config(tmp_path / "run")
    splits = {name: open_split(config.data, name) for name in ("train", "val", "test")}
    broken = splits[which]
    splits[which] = dataclasses.replace(broken, split=dataclasses.replace(
        broken.split, source=_Unreadable(broken.split.source)))
    steps = []
    trainer = Trainer(config, splits=splits, on_step=lambda t: steps.append(t.state.step))
    with pytest.raises(ValueError, match=f"the {which} split has no readable video: all 8 failed") as err:
        trainer.fit()
    assert "broken0.mp4" in str(err.value) and "vop data check" in str(err.value)
    assert steps == [] and not (tmp_path / "run" / "log.jsonl").exists()


def test_the_split_probe_leaves_the_random_stream_alone(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run"))
    before = torch.random.get_rng_state()
    trainer.check_splits()
    assert torch.equal(torch.random.get_rng_state(), before)


# -- the optimisation objects, in one place ---------------------------------------------------
def test_the_optimisation_objects_are_built_in_one_overridable_place(tmp_path):
    class SGDTrainer(Trainer):
        def _build_optimisation(self, total_steps: int) -> None:
            groups = [{"params": g["params"], "lr_scale": g["lr_scale"]} for g in self.model.parameter_groups()]
            self.optimizer = torch.optim.SGD(groups, lr=0.1)
            self.scheduler = torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)
            self.scaler = None
            self.built_for = total_steps

    trainer = SGDTrainer(tiny_config(tmp_path / "run", optim={"max_steps": 3}))
    assert (trainer.optimizer, trainer.scheduler, trainer.scaler) == (None, None, None)  # all set in __init__
    summary = trainer.fit()
    assert summary["steps"] == 3 and trainer.built_for == 3
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last" / "state.pt", weights_only=False)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.1 and "nesterov" in state["optimizer"]["param_groups"][0]


def test_the_default_loader_workers_fit_the_machine():
    import os

    from vop.data.config import DataConfig

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert DataConfig().workers == min(4, cpus - 1)
    from vop.train.config import load_train_config

    assert load_train_config(None, [], data="msrvtt-9k", method="vop").data.workers == min(4, cpus - 1)


def test_a_save_interrupted_between_its_renames_resumes_from_the_complete_leftover(tmp_path, finished):
    ref, _, _ = finished
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(out), on_step=_interrupt_at(3)).fit()
    ckpts = out / "checkpoints"
    # Killed after `last` (step 3) was renamed away and before the new one was renamed in;
    # a half-written leftover carries a name that sorts later.
    (ckpts / "last").rename(ckpts / ".last.old-0001")
    (ckpts / ".last.tmp-ffff").mkdir()
    (ckpts / ".last.tmp-ffff" / "meta.json").write_text("{")
    said: list[str] = []
    summary = Trainer(tiny_config(out), say=said.append).fit()
    assert said[1] == f"resuming from step 3 of {STEPS} (checkpoint {ckpts / 'last'})"
    assert summary["steps"] == STEPS
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last"]
    for name, tensor in _weights(ref).items():
        assert torch.equal(_weights(out)[name], tensor), name


def test_unreadable_weights_in_last_are_refused_naming_the_file(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(out), on_step=_interrupt_at(2)).fit()
    weights = out / "checkpoints" / "last" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="cannot be read") as err:
        Trainer(tiny_config(out)).fit()
    assert str(weights) in str(err.value)


@pytest.mark.parametrize("optim, message", [
    ({"max_steps": 0}, "optim.max_steps must be >= 1"),
    ({"max_steps": -5}, "optim.max_steps must be >= 1"),
    ({"grad_accum": 5}, "makes no optimiser step with optim.grad_accum 5"),  # 4 batches per epoch
])
def test_a_run_that_would_train_nothing_or_everything_is_refused_before_a_step(tmp_path, optim, message):
    try:
        config = tiny_config(tmp_path / "run", optim=optim)
    except ValueError as exc:  # the config may already refuse it
        assert "max_steps" in str(exc)
        return
    with pytest.raises(ValueError, match=message):
        Trainer(config).fit()
    assert not (tmp_path / "run" / "log.jsonl").exists()
