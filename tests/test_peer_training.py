"""The peer methods and the temporal heads train and evaluate through the same trainer as
every VoP method: on the synthetic world (with its pair accuracy) and on benchmark-layout
data through the command line; X-Pool trains on its text-conditioned scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from vop.train.config import TrainConfig
from vop.train.trainer import Trainer

ROWS = [("xpool", {}), ("dgl-linear", {}), ("dgl", {}), ("vop", {"head": "seqlstm"}), ("vop", {"head": "seqtransf"}),
        ("full", {"head": "seqtransf"})]


def _config(out: Path, method: str, options: dict, frames: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "backbone": "tiny",
        "method": {"name": method, "options": options},
        "data": {"benchmark": "synthetic", "num_frames": frames, "workers": 0, "pair_batches": True,
                 "random_crop": False, "flip": False,
                 "synthetic": {"train_pairs": 8, "val_pairs": 4, "test_pairs": 4}},
        "optim": {"batch_size": 8, "max_steps": 2, "lr": 1e-2, "warmup_ratio": 0.0},
        "runtime": {"device": "cpu", "out_dir": str(out), "save_every": 0, "log_every": 1, "progress": False,
                    "tensorboard": False},
    })


@pytest.mark.parametrize("method,options", ROWS, ids=[m + ("+" + o["head"] if o else "") for m, o in ROWS])
def test_every_peer_and_head_trains_and_evaluates_on_the_synthetic_world(method, options, tmp_path):
    frames = 12 if method == "dgl" else 4  # DGL's transformer generator is tied to its frame count
    trainer = Trainer(_config(tmp_path / "run", method, options, frames))
    before = {n: p.detach().clone() for n, p in trainer.model.trainable_parameters().items()}
    summary = trainer.fit()
    assert summary["steps"] == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if r["kind"] == "train")
    test = summary["test"]
    assert 0 <= test["pair_accuracy"] <= 100 and test["num_videos"] == 8
    changed = {n for n, p in trainer.model.trainable_parameters().items() if not torch.equal(p, before[n])}
    own = {"xpool": "pool_frames.", "dgl-linear": "dgl.", "dgl": "dgl."}.get(method, "head.")
    assert any(n.startswith(own) for n in changed), sorted(changed)[:5]  # the peer's own tensors trained


def test_xpool_trains_on_its_text_conditioned_scores(tmp_path, monkeypatch):
    """The loss is built from model.score_features (every caption pools every video), so
    the pooling head gets gradients; the mean-pooled forward is not what trains."""
    trainer = Trainer(_config(tmp_path / "run", "xpool", {}, 4))
    calls = []
    original = type(trainer.model).score_features

    def spy(self, text, frames, chunk=256):
        calls.append((tuple(text.shape), tuple(frames.shape), torch.is_grad_enabled()))
        return original(self, text, frames, chunk=chunk)

    monkeypatch.setattr(type(trainer.model), "score_features", spy)
    trainer.fit()
    train_calls = [c for c in calls if c[2]]
    assert len(train_calls) == 2 and train_calls[0][0] == (8, 64) and train_calls[0][1][:2] == (8, 4)


@pytest.mark.parametrize("method,head", [("xpool", None), ("dgl-linear", None), ("vop", "seqtransf")])
def test_peers_train_and_evaluate_on_benchmark_layout_data_from_the_cli(method, head, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_cli import _run, train_on_fake_msrvtt

    out = train_on_fake_msrvtt(tmp_path, method, **({"method.options.head": head} if head else {}))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and "t2v_r1" in summary["test"]
    evaluated = _run([sys.executable, "-m", "vop.cli", "eval", "--checkpoint", str(out / "checkpoints" / "best"),
                      "--set", f"data.root={tmp_path / 'msrvtt'}", "--device", "cpu", "--json", "--quiet"], tmp_path)
    metrics = json.loads(evaluated.stdout)
    assert metrics["t2v_r1"] == pytest.approx(summary["test"]["t2v_r1"])
