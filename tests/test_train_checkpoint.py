"""Method checkpoints: exact round trips, refusal of the wrong backbone or shapes with
messages that say what differs, and writes that never leave a half-written checkpoint."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import vop.backbone as backbone
import vop
import vop.methods as methods
import vop.checkpoint as ckpt
from vop.backbone.clip import CLIP
from vop.checkpoint import CheckpointMismatch, load_checkpoint, load_state, read_meta, save_checkpoint

CAPTIONS = ["a red circle moves to the right", "a blue square grows"]


def _trained(name: str = "vop-fc", seed: int = 1):
    """A method on the tiny backbone whose trainable tensors are far from their init."""
    model = vop.create(name, backbone.load("tiny"), num_frames=4)
    model.start_identity = backbone.identity(model.clip)  # before "training" (subset baselines change it)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _frames() -> torch.Tensor:
    return torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # [B, F, 3, S, S]


@pytest.mark.parametrize("name", ["vop-fc", "bias", "adapter-ffn"])
def test_round_trip_gives_identical_embeddings(tmp_path, name):
    model = _trained(name)
    path = save_checkpoint(tmp_path / "ckpt", model, backbone_source="tiny", data={"benchmark": "synthetic"},
                           metrics={"t2v_r1": 12.5}, extra={"step": 7}, backbone_identity=model.start_identity)
    # The backbone comes back from the source the checkpoint names ("tiny", seed 0).
    loaded, meta = load_checkpoint(path)
    loaded.eval()
    assert meta["step"] == 7 and meta["metrics"] == {"t2v_r1": 12.5} and meta["data"] == {"benchmark": "synthetic"}
    assert meta["method"] == model.config.to_dict()
    assert sorted(load_file(str(path / "weights.safetensors"))) == sorted(model.trainable_parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(_frames()), model.encode_video(_frames()), rtol=0, atol=0)
        ids = model.tokenize(CAPTIONS)
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids), rtol=0, atol=0)
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value), key
    assert load_state(path) is None  # no resume state unless given


def test_a_method_training_backbone_tensors_needs_the_starting_identity(tmp_path):
    # Its trained biases change the backbone's fingerprint: recording that one would make
    # the checkpoint unloadable onto the backbone it was trained from.
    with pytest.raises(ValueError, match="backbone_identity"):
        save_checkpoint(tmp_path / "ckpt", _trained("bias"), backbone_source="tiny")
    assert not (tmp_path / "ckpt").exists()


def test_resume_state_travels_with_the_checkpoint(tmp_path):
    model = _trained()
    state = _state(model)
    path = save_checkpoint(tmp_path / "last", model, backbone_source="tiny", state=state)
    saved = load_state(path)
    assert saved["run"] == {"step": 3} and torch.equal(saved["rng"], state["rng"])
    assert saved["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]


def _state(model) -> dict:
    """A resume state shaped like the trainer's (AdamW after one step, LambdaLR)."""
    params = list(model.trainable_parameters().values())
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return {"run": {"step": 3}, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": None, "rng": torch.random.get_rng_state(), "cuda_rng": None, "config": {"seed": 0}}


def test_a_different_architecture_is_refused_naming_both(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", _trained(), backbone_source="tiny")
    deeper = dataclasses.replace(backbone.ARCHITECTURES["tiny"], vision_layers=4, name="tiny-deeper")
    with pytest.raises(CheckpointMismatch) as err:
        load_checkpoint(path, CLIP(deeper))
    message = str(err.value)
    assert "tiny-deeper" in message and "backbone tiny " in message
    assert "vision_layers" in message and "(3, 4)" in message  # the differing field, (checkpoint, given)


def test_same_architecture_with_other_weights_is_refused_by_fingerprint(tmp_path):
    model = _trained()
    path = save_checkpoint(tmp_path / "ckpt", model, backbone_source="tiny")
    other = backbone.load("tiny", seed=1)
    with pytest.raises(CheckpointMismatch, match="fingerprint") as err:
        load_checkpoint(path, other)
    meta = read_meta(path)
    assert meta["backbone"]["fingerprint"] in str(err.value)
    assert backbone.fingerprint(other) in str(err.value)
    # The same weights under another object are accepted.
    load_checkpoint(path, backbone.load("tiny", seed=0))


def test_wrong_tensor_shapes_name_both_shapes(tmp_path):
    model = _trained("vop")
    path = save_checkpoint(tmp_path / "ckpt", model, backbone_source="tiny")
    tensors = load_file(str(path / "weights.safetensors"))
    name = next(k for k in tensors if tensors[k].dim() >= 2)
    right = tuple(tensors[name].shape)
    tensors[name] = tensors[name][..., :1, :].contiguous()  # one prompt token fewer
    wrong = tuple(tensors[name].shape)
    save_file(tensors, str(path / "weights.safetensors"))
    with pytest.raises(CheckpointMismatch) as err:
        load_checkpoint(path)
    assert name in str(err.value) and str(wrong) in str(err.value) and str(right) in str(err.value)


def test_missing_tensors_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", _trained("vop"), backbone_source="tiny")
    meta = json.loads((path / "meta.json").read_text())
    meta["method"]["method"] = "vop-fc"  # a method with more trainable tensors than were saved
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointMismatch, match="missing"):
        load_checkpoint(path)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a vop checkpoint"):
        load_checkpoint(tmp_path)


def test_a_failure_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    first, second = _trained(seed=1), _trained(seed=2)
    path = tmp_path / "checkpoints" / "last"
    save_checkpoint(path, first, backbone_source="tiny", extra={"step": 1})

    real = ckpt.os.write
    calls = []

    def fail_second_call(fd, data):
        calls.append(len(data))
        if len(calls) == 2:
            real(fd, bytes(data[: len(data) // 2]))  # part of the file is on disk ...
            raise OSError(5, "Input/output error")  # ... when the write fails
        return real(fd, data)

    monkeypatch.setattr(ckpt.os, "write", fail_second_call)
    with pytest.raises(OSError, match="Input/output"):
        save_checkpoint(path, second, backbone_source="tiny", extra={"step": 2})  # call 2 (meta.json) fails
    monkeypatch.setattr(ckpt.os, "write", real)

    loaded, meta = load_checkpoint(path)
    assert meta["step"] == 1
    for key, value in first.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value), key
    # The next save succeeds; nothing of the failed attempt is left.
    save_checkpoint(path, second, backbone_source="tiny", extra={"step": 2})
    assert read_meta(path)["step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last"]
