"""Checkpoints are never lost or half-written: a kill or a failure at every step of the write
protocol leaves the previous or the new checkpoint; a full disk is one clear error; files get
the user's umask; non-finite tensors are never written; every file read is validated and a
damaged one is one line naming the file and the fix."""

from __future__ import annotations

import errno
import json
import os

import stat

import pytest
import torch

import vop
import vop.backbone as backbone
from helpers_faults import STEPS, fail_at_step, kill_before_step, no_exchange, patch_steps, record_steps
from vop import atomic
from vop.checkpoint import (CheckpointFormatError, copy_checkpoint, load_checkpoint, load_state, read_meta, read_weights,
                            recover_checkpoint, save_checkpoint, validate_trainable)


@pytest.fixture(scope="module")
def models():
    """Two models of one method whose trainable tensors differ (the previous and the new)."""
    out = []
    for seed in (1, 2):
        model = vop.create("vop", backbone.load("tiny"), num_frames=4)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.trainable_parameters().values():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        out.append(model)
    return out


def _state(step: int) -> dict:
    return {"run": {"step": step}, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {},
            "rng": torch.random.get_rng_state(), "config": {"step": step}}


def _save(path, model, step):
    return save_checkpoint(path, model, backbone_source="tiny", extra={"step": step}, state=_state(step))


def _which(path, models) -> str:
    """'old' or 'new': the checkpoint at ``path`` is one of them, whole (weights, meta, state agree)."""
    meta = read_meta(path)
    weights = read_weights(path)
    step = meta["step"]
    assert step in (1, 2), "neither the previous nor the new checkpoint"
    model = models[step - 1]
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(weights[key], value), f"{key} is not the step-{step} checkpoint's"
    assert load_state(path)["run"] == {"step": step}
    return "old" if step == 1 else "new"


# Every call that changes the file system (or makes it durable) during a save is a step
# (all of helpers_faults.STEPS but os.unlink).
_STEPS = [step for step in STEPS if step != ("os", "unlink")]


@pytest.fixture(params=["save", "copy"])
def write_new(request, tmp_path_factory, models):
    """The write under test: save_checkpoint of the new model, or copy_checkpoint of a saved one
    (how `vop demo` publishes its prompts)."""
    if request.param == "save":
        return lambda path: _save(path, models[1], 2)
    source = _save(tmp_path_factory.mktemp("source") / "best", models[1], 2)
    return lambda path: copy_checkpoint(source, path)


def _count_steps(tmp_path, monkeypatch, models, exchange: bool, write_new) -> list[str]:
    path = tmp_path / "count" / "last"
    _save(path, models[0], 1)
    with monkeypatch.context() as m:
        if not exchange:
            no_exchange(m)
        return record_steps(m, lambda: write_new(path), steps=_STEPS)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_kill_at_every_step_of_a_checkpoint_write_leaves_the_old_or_the_new_one(tmp_path, monkeypatch, models,
                                                                                  exchange, write_new):
    steps = _count_steps(tmp_path, monkeypatch, models, exchange, write_new)
    assert {"os.fsync", "atomic._exchange"} <= set(steps) and {"os.write", "shutil.copy2"} & set(steps)
    seen_states = []
    for k in range(len(steps) + 1):
        path = tmp_path / f"kill{k}" / "checkpoints" / "last"
        _save(path, models[0], 1)
        status = kill_before_step(k, lambda: write_new(path), prepare=None if exchange else no_exchange,
                                  steps=_STEPS)
        assert status == (9 if k < len(steps) else 0)
        seen_states.append(_which(path, models))  # a reader recovers the leftovers if needed
        _save(path, models[0], 1)  # the next write cleans up and succeeds
        assert _which(path, models) == "old"
        assert atomic.leftovers(path) == []
        assert sorted(p.name for p in path.parent.iterdir()) == ["last"]
    # Early kills keep the previous checkpoint, late ones the new; it never flips back.
    assert seen_states[0] == "old" and seen_states[-1] == "new"
    assert seen_states == sorted(seen_states, key=["old", "new"].index)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_failure_at_every_step_of_a_checkpoint_write_leaves_the_old_or_the_new_one(tmp_path, monkeypatch, models,
                                                                                     exchange, write_new):
    steps = _count_steps(tmp_path, monkeypatch, models, exchange, write_new)
    for k in range(len(steps)):
        path = tmp_path / f"fail{k}" / "last"
        _save(path, models[0], 1)
        with monkeypatch.context() as m:
            if not exchange:
                no_exchange(m)
            patch_steps(m, fail_at_step(k), steps=_STEPS)
            try:
                write_new(path)
            except OSError as exc:
                assert "injected" in str(exc)
        _which(path, models)
        write_new(path)
        assert _which(path, models) == "new" and atomic.leftovers(path) == []


def test_a_full_disk_is_one_clear_error_and_the_previous_checkpoint_stays(tmp_path, monkeypatch, models):
    path = tmp_path / "last"
    _save(path, models[0], 1)
    real = os.write

    def full(fd, data):
        if len(data) > 64:
            real(fd, bytes(data[:64]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as err:
        _save(path, models[1], 2)
    monkeypatch.setattr(os, "write", real)
    message = str(err.value)
    assert "no space left" in message and str(path) in message and "previous checkpoint there is intact" in message
    assert "\n" not in message
    assert _which(path, models) == "old" and atomic.leftovers(path) == []


def test_recovery_takes_the_complete_leftover_whatever_its_name(tmp_path, models):
    path = tmp_path / "last"
    _save(path, models[0], 1)
    # A crash of the two-rename fallback between its renames: `last` moved aside, complete;
    # beside it a half-written folder whose name sorts after it.
    os.rename(path, tmp_path / ".last.old-0000")
    (tmp_path / ".last.tmp-ffff").mkdir()
    (tmp_path / ".last.tmp-ffff" / "weights.safetensors").write_bytes(b"half")
    assert recover_checkpoint(path) == path
    assert _which(path, models) == "old" and atomic.leftovers(path) == []
    # Readers recover too.
    os.rename(path, tmp_path / ".last.old-1111")
    assert _which(path, models) == "old"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_get_the_users_umask(tmp_path, models, umask):
    old = os.umask(umask)
    try:
        path = _save(tmp_path / "last", models[0], 1)
    finally:
        os.umask(old)
    for name in ("weights.safetensors", "meta.json", "state.pt"):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o666 & ~umask, name


def test_non_finite_trainable_tensors_are_never_written(tmp_path, models):
    path = tmp_path / "last"
    _save(path, models[0], 1)
    bad = vop.create("vop", backbone.load("tiny"), num_frames=4)
    name = next(iter(bad.trainable_parameters()))
    with torch.no_grad():
        bad.trainable_parameters()[name].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite") as err:
        _save(path, bad, 2)
    assert name in str(err.value)
    assert _which(path, models) == "old" and atomic.leftovers(path) == []
    with pytest.raises(ValueError, match="inf"):
        validate_trainable({"x": torch.tensor([1.0, float("inf")])})


# -- reading: every file validated at the boundary ---------------------------------------------
def _meta_cases():
    def drop(key):
        return lambda m: {k: v for k, v in m.items() if k != key}

    def put(key, value):
        return lambda m: {**m, key: value}

    return {
        "a list": (lambda m: [m], "must be a JSON object"),
        "no backbone": (drop("backbone"), "'backbone' must be an object"),
        "no method": (drop("method"), "'method' must be an object"),
        "backbone a string": (put("backbone", "tiny"), "'backbone' must be an object"),
        "fingerprint a number": (lambda m: {**m, "backbone": {**m["backbone"], "fingerprint": 7}},
                                 "'backbone.fingerprint' must be a string"),
        "method name a number": (lambda m: {**m, "method": {**m["method"], "method": 3}}, "'method' must be"),
        "unknown method": (lambda m: {**m, "method": {**m["method"], "method": "nope"}}, "method config is not valid"),
        "data a list": (put("data", [1]), "'data' must be a JSON object"),
        "step a string": (put("step", "3"), "'step' must be an integer"),
        "other format": (put("format", "something"), "not a vop checkpoint"),
        "newer version": (put("version", 99), "newer vop"),
    }


@pytest.mark.parametrize("case", list(_meta_cases()))
def test_a_damaged_meta_json_is_one_line_naming_the_file(tmp_path, models, case):
    path = _save(tmp_path / "ckpt", models[0], 1)
    change, expected = _meta_cases()[case]
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(change(meta)))
    for read in (read_meta, load_checkpoint):
        with pytest.raises(CheckpointFormatError) as err:
            read(path)
        assert expected in str(err.value) and str(path / "meta.json") in str(err.value)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe not text", b'{"format": "vop-checkpoint"'])
def test_a_meta_json_that_is_not_json_is_one_line(tmp_path, models, content):
    path = _save(tmp_path / "ckpt", models[0], 1)
    (path / "meta.json").write_bytes(content)
    with pytest.raises(CheckpointFormatError, match="meta.json: is not") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def _nan_weights(file):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(file))
    first = sorted(tensors)[0]
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, str(file))


def _int_weights(file):
    from safetensors.torch import load_file, save_file

    save_file({k: v.to(torch.int32) for k, v in load_file(str(file)).items()}, str(file))


@pytest.mark.parametrize("damage,expected", [
    (lambda f: f.write_bytes(f.read_bytes()[:-40]), "not a readable safetensors file"),
    (lambda f: f.write_bytes(f.read_bytes()[:5]), "not a readable safetensors file"),
    (lambda f: f.write_bytes(b""), "not a readable safetensors file"),
    (lambda f: f.write_bytes(b"garbage" * 100), "not a readable safetensors file"),
    (lambda f: f.unlink(), "is missing"),
    (_nan_weights, "non-finite"),
    (_int_weights, "floating point"),
], ids=["truncated", "header-cut", "empty", "garbage", "missing", "nan", "int-dtype"])
def test_damaged_weights_are_one_line_naming_the_file(tmp_path, models, damage, expected):
    path = _save(tmp_path / "ckpt", models[0], 1)
    damage(path / "weights.safetensors")
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert expected in str(err.value) and str(path / "weights.safetensors") in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage,expected", [
    (lambda f: f.write_bytes(f.read_bytes()[:100]), "cannot be read"),
    (lambda f: f.write_bytes(b""), "cannot be read"),
    (lambda f: f.write_bytes(b"not a zip at all"), "cannot be read"),
    (lambda f: torch.save([1, 2], f), "must hold a dict"),
    (lambda f: torch.save({"run": {}}, f), "'optimizer' must be a dict"),
], ids=["truncated", "empty", "garbage", "a-list", "missing-keys"])
def test_a_damaged_state_pt_is_one_line_naming_the_file(tmp_path, models, damage, expected):
    path = _save(tmp_path / "ckpt", models[0], 1)
    damage(path / "state.pt")
    with pytest.raises(CheckpointFormatError) as err:
        load_state(path)
    assert expected in str(err.value) and str(path / "state.pt") in str(err.value) and "--restart" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_state_pt_that_would_run_code_is_refused(tmp_path, models):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = _save(tmp_path / "ckpt", models[0], 1)
    torch.save({**_state(1), "run": Evil()}, path / "state.pt")
    with pytest.raises(CheckpointFormatError, match="cannot be read"):
        load_state(path)
    assert not (tmp_path / "pwned").exists()
