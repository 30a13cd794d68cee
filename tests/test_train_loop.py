"""Trainer.fit on the tiny backbone and a few synthetic pairs: an interrupted run resumed
from `last` ends exactly where an uninterrupted one does; non-finite losses are skipped,
counted, and stop the run when they persist; gradient accumulation keeps each optimiser
step to its own micro-batches."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch

from vop.checkpoint import load_checkpoint, read_meta
from vop.train.config import TrainConfig
from vop.train.trainer import Trainer, TrainingDiverged

STEPS = 8  # 32 training captions, batch 8: 4 steps per epoch, 2 epochs


def tiny_config(out_dir, optim: dict | None = None, **runtime) -> TrainConfig:
    """Random frame sampling and crop/flip augmentation on, in the main process, so the
    resume test really depends on how the per-item randomness is reproduced."""
    return TrainConfig.from_dict({
        "backbone": "tiny",
        "method": {"name": "vop-fc"},
        "data": {"benchmark": "synthetic", "num_frames": 4, "workers": 0, "train_sampling": "random",
                 "random_crop": True, "flip": True,
                 "synthetic": {"train_pairs": 16, "val_pairs": 4, "test_pairs": 4}},
        "optim": {"batch_size": 8, "epochs": 2, "lr": 1e-2, "warmup_ratio": 0.25, **(optim or {})},
        "runtime": {"device": "cpu", "out_dir": str(out_dir), "save_every": 1, "log_every": 1,
                    "progress": False, "tensorboard": False, **runtime},
    })


def _losses(out_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "train"}


def _weights(out_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out_dir / "checkpoints" / which / "weights.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = Trainer(tiny_config(out)).fit()
    return out, summary


def _interrupt_at(step: int):
    def on_step(trainer: Trainer) -> None:
        if trainer.state.step == step:
            raise KeyboardInterrupt

    return on_step


def _killed_run(out_dir: str, step: int) -> None:
    """A run (in a forked child) killed with SIGKILL right after `last` reached ``step``."""

    def on_step(trainer: Trainer) -> None:
        if trainer.state.step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer(tiny_config(out_dir), on_step=on_step).fit()


@pytest.mark.parametrize("how, step", [("keyboard-interrupt", 2), ("sigkill", 6)])
def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path, uninterrupted, how, step):
    ref_dir, ref_summary = uninterrupted
    out = tmp_path / "run"
    if how == "keyboard-interrupt":
        with pytest.raises(KeyboardInterrupt):
            Trainer(tiny_config(out), on_step=_interrupt_at(step)).fit()
    else:  # killed mid-epoch, after an epoch end (validation, `best`) has passed
        # Forked rather than a fresh interpreter, which would mostly be importing torch.
        proc = multiprocessing.get_context("fork").Process(target=_killed_run, args=(str(out), step))
        proc.start()
        proc.join(120)
        if proc.is_alive():
            proc.kill()
        assert proc.exitcode == -signal.SIGKILL
    assert read_meta(out / "checkpoints" / "last")["step"] == step
    assert not (out / "summary.json").exists()

    resumed = Trainer(tiny_config(out))
    summary = resumed.fit()

    assert summary["steps"] == STEPS
    # Every step after the interruption saw the same batch and the same model: the
    # logged losses of the two halves are those of the uninterrupted run, bit for bit.
    assert _losses(out) == _losses(ref_dir)
    ref, got = _weights(ref_dir), _weights(out)
    assert sorted(got) == sorted(ref)
    for name in ref:
        assert torch.equal(got[name], ref[name]), name
    for name, tensor in resumed.model.trainable_state_dict().items():
        assert torch.equal(tensor, ref[name]), name
    assert summary["test"] == ref_summary["test"]


def test_resume_with_a_different_config_is_refused(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(out), on_step=_interrupt_at(1)).fit()
    other = TrainConfig.from_dict({**tiny_config(out).to_dict(), "optim": {"batch_size": 8, "lr": 5e-3}})
    with pytest.raises(ValueError, match="different config"):
        Trainer(other).fit()


class _NaNOnCalls(torch.nn.Module):
    """The real loss, but NaN on the given (1-based) calls."""

    def __init__(self, loss, bad_calls):
        super().__init__()
        self.loss, self.bad, self.calls = loss, set(bad_calls), 0

    def forward(self, video, text, scale):
        self.calls += 1
        value = self.loss(video, text, scale)
        return value * float("nan") if self.calls in self.bad else value


def test_non_finite_losses_are_skipped_with_a_warning_and_counted(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", max_bad_steps=3))
    trainer.loss_fn = _NaNOnCalls(trainer.loss_fn, bad_calls={2, 5, 6})
    with pytest.warns(UserWarning, match="non-finite loss") as record:
        summary = trainer.fit()
    assert len([w for w in record if "non-finite loss" in str(w.message)]) == 3
    assert summary["non_finite_steps"] == 3
    assert summary["steps"] == STEPS - 3  # the batches are consumed, their steps skipped
    losses = _losses(tmp_path / "run")
    assert len(losses) == STEPS - 3 and all(v == v for v in losses.values())  # no NaN logged
    for name, tensor in trainer.model.trainable_state_dict().items():
        assert torch.isfinite(tensor).all(), name
    assert "test" in summary


def test_persistent_non_finite_losses_stop_the_run_and_keep_last(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, max_bad_steps=3))
    trainer.loss_fn = _NaNOnCalls(trainer.loss_fn, bad_calls={3, 4, 5})  # steps 1, 2 are good
    with pytest.warns(UserWarning, match="non-finite loss"):
        with pytest.raises(TrainingDiverged, match="3 consecutive non-finite losses") as err:
            trainer.fit()
    assert str(out / "checkpoints" / "last") in str(err.value)
    model, meta = load_checkpoint(out / "checkpoints" / "last")
    assert meta["step"] == 2
    for name, tensor in model.trainable_state_dict().items():
        assert torch.equal(tensor, trainer.model.trainable_state_dict()[name]), name
        assert torch.isfinite(tensor).all(), name


def test_a_non_finite_micro_batch_skips_its_whole_accumulated_step(tmp_path):
    # batch 4, two micro-batches per step: 8 batches, 4 steps per epoch. Only the first
    # micro-batch of step 1 is NaN; the step must not go ahead on the other half alone.
    trainer = Trainer(tiny_config(tmp_path / "run", optim={"batch_size": 4, "grad_accum": 2}))
    trainer.loss_fn = _NaNOnCalls(trainer.loss_fn, bad_calls={1})
    with pytest.warns(UserWarning, match="non-finite loss"):
        summary = trainer.fit()
    assert summary["non_finite_steps"] == 1 and summary["steps"] == STEPS - 1


def test_accumulation_carries_no_gradient_across_epochs(tmp_path):
    # batch 4, three micro-batches per step: 8 batches per epoch make 2 steps and leave 2
    # micro-batches over, whose gradients must not leak into the next epoch's first step.
    trainer = Trainer(tiny_config(tmp_path / "run", optim={"batch_size": 4, "grad_accum": 3}))
    starts = []
    real = trainer._forward_backward

    def forward_backward(batch, accum):
        if trainer.state.batch % accum == 0:  # the first micro-batch of an optimiser step
            starts.append(all(p.grad is None for p in trainer.model.trainable_parameters().values()))
        return real(batch, accum)

    trainer._forward_backward = forward_backward
    summary = trainer.fit()
    assert summary["steps"] == 4
    assert starts == [True] * 5  # windows begin at batches 0, 3, 6 of epoch 1 and 0, 3 of epoch 2


def test_time_spent_waiting_for_input_is_measured_and_logged(tmp_path, uninterrupted):
    out, summary = uninterrupted
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    waits = [r["input_wait"] for r in logged if r["kind"] == "train"]
    assert len(waits) == STEPS and all(0.0 <= w <= 1.0 for w in waits)
    assert 0.0 <= summary["input_wait"] <= 1.0

    # A source that takes 50 ms per clip (a slow disk, say) against a tiny model's step of
    # a few ms: most of the training time is spent waiting, and the meter says so.
    trainer = Trainer(tiny_config(tmp_path / "slow", optim={"epochs": 1}))
    source = trainer.split(trainer.config.data.train_split).split.source
    load = source.load

    def slow_load(*args, **kwargs):
        import time

        time.sleep(0.05)
        return load(*args, **kwargs)

    source.load = slow_load
    assert trainer.fit()["input_wait"] > 0.5
