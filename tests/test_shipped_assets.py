"""The assets shipped inside the package are read-only to every command: `vop pretrain`
without --out writes to the user's cache, a path inside the assets folder is refused before
any work (unless the developer flag --overwrite-shipped is given), and no checkpoint is
written there."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

import vop
import vop.backbone as backbone
from vop.backbone.packaged import asset_path, assets_dir, is_shipped, read_metadata, save_checkpoint
from vop.checkpoint import save_checkpoint as save_method_checkpoint
from vop.cli import main
from vop.train.pretrain import PretrainConfig, default_out

TINY = PretrainConfig(steps=2, batch=16, lr=3e-4, warmup=1, architecture="tiny", threads=1, eval_pairs=20)
ASSET = asset_path("tiny-synthetic")


def _digest() -> str:
    return hashlib.sha256(ASSET.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def asset_unchanged():
    before = _digest()
    yield
    assert _digest() == before, "a test changed the shipped asset"


def test_pretrain_without_out_writes_the_users_cache_not_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOP_CACHE", str(tmp_path / "cache"))
    assert default_out() == tmp_path / "cache" / "pretrain" / "tiny-synthetic.safetensors"
    import vop.train.pretrain as pretrain_module

    # The CLI's arguments shape the config; a two-step run keeps the test fast.
    class Tiny:
        warmup = PretrainConfig.warmup

        def __new__(cls, **kw):
            return PretrainConfig(**{**TINY.to_dict(), "seed": kw["seed"]})

    monkeypatch.setattr(pretrain_module, "PretrainConfig", Tiny)
    assert main(["pretrain", "--steps", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    written = default_out()
    assert written.is_file() and str(written) in out and f"backbone={written}" in out
    assert read_metadata(written)["steps"] == 2
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("how", ["asset", "beside", "symlink"])
def test_a_path_inside_the_assets_is_refused_before_any_work(tmp_path, capsys, how):
    target = {"asset": ASSET, "beside": assets_dir() / "mine.safetensors"}.get(how)
    if how == "symlink":
        link = tmp_path / "assets-link"
        link.symlink_to(assets_dir(), target_is_directory=True)
        target = link / "tiny-synthetic.safetensors"
    assert is_shipped(target)
    assert main(["pretrain", "--steps", "100000", "--out", str(target), "--no-progress"]) == 2  # fails at once
    err = capsys.readouterr().err.strip()
    assert "read-only" in err and "--overwrite-shipped" in err and len(err.splitlines()) == 1
    assert not (assets_dir() / "mine.safetensors").exists()


def test_no_writer_puts_a_file_into_the_assets(tmp_path):
    clip = backbone.load("tiny")
    with pytest.raises(ValueError, match="read-only"):
        save_checkpoint(clip, ASSET)
    model = vop.create("vop", clip, num_frames=4)
    with pytest.raises(ValueError, match="read-only"):
        save_method_checkpoint(assets_dir() / "ckpt", model, backbone_source="tiny")
    assert not (assets_dir() / "ckpt").exists()
    assert not is_shipped(tmp_path / "x.safetensors")


def test_the_developer_flag_is_the_only_way_in(tmp_path, monkeypatch):
    # A stand-in assets folder: the flag really writes there, and only with it.
    import vop.backbone.packaged as packaged

    fake = tmp_path / "assets"
    fake.mkdir()
    monkeypatch.setattr(packaged, "assets_dir", lambda: fake)
    clip = backbone.load("tiny")
    with pytest.raises(ValueError, match="read-only"):
        save_checkpoint(clip, fake / "tiny-synthetic.safetensors")
    save_checkpoint(clip, fake / "tiny-synthetic.safetensors", overwrite_shipped=True)
    assert (fake / "tiny-synthetic.safetensors").is_file()
