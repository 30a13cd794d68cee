"""Acceptance of the synthetic benchmark's construction: every method that mean-pools
independently encoded frames scores exactly 50 % pair accuracy, trained or not; the video
prompt methods are not bound to it (their order sensitivity is tested in test_methods)."""

from __future__ import annotations

import pytest
import torch

import vop.backbone as backbone
import vop
import vop.methods as methods
from vop.data.datasets import open_split
from vop.data.config import DataConfig
from vop.eval.evaluate import evaluate

WORLD = {"train_pairs": 2, "val_pairs": 2, "test_pairs": 12}


@pytest.fixture(scope="module")
def test_split():
    return open_split(DataConfig(benchmark="synthetic", num_frames=12, synthetic=WORLD), "test")


def _perturbed(name):
    torch.manual_seed(0)
    model = vop.create(name, backbone.load("tiny-synthetic-arch"))
    with torch.no_grad():  # stands in for training: any values of the trainable tensors
        for p in model.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("name", [n for n in methods.names()])
def test_order_blind_methods_score_exactly_half(name, test_split):
    model = _perturbed(name)
    metrics = evaluate(model, test_split, progress=False)
    if model.sees_frame_order:
        # Order comes from a mechanism that knows frame positions or neighbours (VoP's video
        # prompts, DGL's per-position prompts, a temporal head).
        assert any(m.role in ("joint", "tower", "head") or getattr(m, "sees_frame_order", False)
                   for m in model.mechanisms), name
    else:
        assert metrics["pair_accuracy"] == 50.0, name

