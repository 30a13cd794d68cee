"""Shared fixtures: tiny backbones and inputs, built once per session where safe."""

from __future__ import annotations

import os

import pytest
import torch

import vop.backbone as backbone

# The tests run tiny models; one intra-op thread avoids thread hand-off costs that make
# them many times slower, especially when the two cores are shared.
torch.set_num_threads(1)


def pytest_configure(config):
    # Tests build random tiny towers on purpose; the warning that guards users against
    # random weights by accident would only add noise here (tests of it use pytest.warns).
    config.addinivalue_line("filterwarnings", r"ignore:vop\.backbone\.load\(.*built random weights:UserWarning")


@pytest.fixture(autouse=True, scope="session")
def _text_tower_cache(tmp_path_factory):
    # vop search / serve keep text towers in the user's cache; tests keep theirs apart.
    old = os.environ.get("VOP_TEXT_CACHE")
    os.environ["VOP_TEXT_CACHE"] = str(tmp_path_factory.mktemp("text-towers"))
    yield
    if old is None:
        os.environ.pop("VOP_TEXT_CACHE", None)
    else:
        os.environ["VOP_TEXT_CACHE"] = old


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def clip():
    """A fresh tiny CLIP (random weights, seed 0): 32 px images, 3 + 2 layers."""
    return backbone.load("tiny")


@pytest.fixture
def frames():
    """Two videos of 12 normalised 32 px frames: ``[2, 12, 3, 32, 32]``."""
    return torch.randn(2, 12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
