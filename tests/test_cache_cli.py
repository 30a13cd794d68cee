"""`vop cache` from the command line, and evaluation reading the cache automatically."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from test_train_cli import make_msrvtt
from vop.cli import main
from vop.data.cache import FrameCache


def _eval(root, cache_dir=None) -> dict:
    args = ["eval", "--checkpoint", "zero-shot", "--backbone", "tiny", "--json", "--split", "test",
            "--set", "data.benchmark=msrvtt-9k", "--set", f"data.root={root}", "--set", "runtime.progress=false",
            "--set", "runtime.device=cpu"]
    if cache_dir:
        args += ["--set", f"data.cache_dir={cache_dir}"]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(args) == 0
    return json.loads(out.getvalue())


def test_cache_command_and_cached_evaluation(tmp_path):
    root = tmp_path / "msrvtt"
    make_msrvtt(root)
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["cache", "msrvtt-9k", str(root), "--out", str(tmp_path / "cache"), "--size", "32",
                     "--workers", "0"])
    assert code == 0
    assert "cached 11 videos" in out.getvalue() and "1 unreadable" in out.getvalue()
    cache = FrameCache.open(tmp_path / "cache")
    assert len(cache) == 11 and "video3" in cache.failed
    plain = _eval(root)
    cached = _eval(root, tmp_path / "cache")
    # The cache holds exactly what evaluation would decode: middle frames, resized and cropped.
    assert cached == plain


def test_cache_refuses_to_overwrite(tmp_path):
    root = tmp_path / "msrvtt"
    make_msrvtt(root)
    args = ["cache", "msrvtt-9k", str(root), "--out", str(tmp_path / "c"), "--size", "32", "--workers", "0",
            "--splits", "test"]
    with redirect_stdout(io.StringIO()):
        assert main(args) == 0
        assert main(args) == 2  # a finished cache is not overwritten without --overwrite
        assert main(args + ["--overwrite"]) == 0


def test_vop_cache_stores_frames_at_the_backbones_resolution(tmp_path):
    from vop.cli.training import _backbone_resolution

    assert _backbone_resolution("ViT-L-14-336:openai") == 336 and _backbone_resolution("ViT-B-32") == 224
    assert _backbone_resolution("tiny") == 32 and _backbone_resolution("tiny-synthetic") == 64
    root = tmp_path / "msrvtt"
    make_msrvtt(root)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["cache", "msrvtt-9k", str(root), "--out", str(tmp_path / "c"), "--backbone", "tiny-synthetic",
                     "--workers", "0", "--splits", "test"]) == 0
        assert main(["cache", "msrvtt-9k", str(root), "--out", str(tmp_path / "d"), "--backbone", "tiny",
                     "--size", "64", "--splits", "test"]) == 2  # one or the other
    assert FrameCache.open(tmp_path / "c").size == 64 and "64 px, the input resolution of tiny-synthetic" in out.getvalue()


def test_training_warns_when_the_cache_is_not_at_the_backbones_resolution(tmp_path):
    from vop.train.config import TrainConfig
    from vop.train.trainer import Trainer

    root = tmp_path / "msrvtt"
    make_msrvtt(root)
    with redirect_stdout(io.StringIO()):
        assert main(["cache", "msrvtt-9k", str(root), "--out", str(tmp_path / "c"), "--size", "16", "--workers", "0",
                     "--splits", "train", "--num-frames", "4"]) == 0
    config = TrainConfig.from_dict({"backbone": "tiny", "method": {"name": "vop"},
                                    "data": {"benchmark": "msrvtt-9k", "root": str(root), "num_frames": 4,
                                             "cache_dir": str(tmp_path / "c"), "workers": 0},
                                    "runtime": {"device": "cpu", "out_dir": str(tmp_path / "run"), "progress": False}})
    with pytest.warns(UserWarning, match=r"holds 16 px frames but the backbone takes 32 px: .*upscaled"):
        Trainer(config).split("train")
