"""Configs refuse what would train silently wrong or hang: non-finite numbers anywhere, out of
range counts, unknown devices, malformed YAML, unknown or list-valued synthetic options,
alias bombs, and a frame cache that is named but missing."""

from __future__ import annotations

import time

import pytest
import torch

from vop import runtime
from vop.configio import MAX_NODES, ConfigError, parse_yaml
from vop.data.config import DataConfig
from vop.data.datasets import open_split
from vop.train.config import load_train_config


def _load(*overrides, path=None):
    return load_train_config(path, list(overrides), data="synthetic", method="vop")


@pytest.mark.parametrize("override,key", [
    ("optim.lr=.inf", "optim.lr"), ("optim.lr=.nan", "optim.lr"), ("optim.lr=-.inf", "optim.lr"),
    ("optim.lr=inf", "optim.lr"), ("optim.weight_decay=.nan", "optim.weight_decay"),
    ("optim.betas=[0.9, .nan]", "optim.betas[1]"), ("data.synthetic.jitter=.inf", "data.synthetic.jitter"),
    ("method.options.prompt_init_std=.nan", "method.options.prompt_init_std"),
])
def test_non_finite_numbers_are_refused_anywhere(override, key):
    with pytest.raises(ConfigError, match="finite") as err:
        _load(override)
    assert key in str(err.value)


@pytest.mark.parametrize("override,message", [
    ("optim.max_steps=0", "max_steps must be >= 1"), ("optim.max_steps=-5", "max_steps must be >= 1"),
    ("optim.epochs=0", "epochs must be >= 1"), ("optim.lr=0", "lr and eps must be > 0"),
    ("optim.eps=-1e-8", "lr and eps must be > 0"), ("optim.grad_clip=-1", "grad_clip must be >= 0"),
    ("optim.weight_decay=-0.1", "weight_decay and grad_clip"), ("optim.betas=[0.9, 1.0]", "betas"),
    ("runtime.log_every=0", "log_every must be >= 1"), ("runtime.eval_every=0", "eval_every must be >= 1"),
    ("runtime.max_bad_steps=0", "max_bad_steps must be >= 1"), ("runtime.save_every=-1", "save_every must be >= 0"),
    ("runtime.val_every_steps=-1", "val_every_steps must be >= 0"), ("runtime.threads=-1", "threads must be >= 1"),
    ("runtime.threads=0", "threads must be >= 1"), ("runtime.seed=-1", "seed must be >= 0"),
    ("runtime.device=tpu9", "unknown device 'tpu9'"), ("runtime.device=meta", "not supported"),
    ("runtime.device=3", "expected a string"),
])
def test_every_count_and_rate_has_a_sane_bound(override, message):
    with pytest.raises(ConfigError, match="^(optim|runtime)") as err:
        _load(override)
    assert message in str(err.value)


def test_the_bounds_keep_the_meaningful_edges():
    config = _load("optim.max_steps=null", "runtime.save_every=0", "runtime.val_every_steps=0", "runtime.threads=null",
                   "runtime.device=cuda:1")  # a config may name a GPU of another machine
    assert config.optim.max_steps is None and config.runtime.save_every == 0 and config.runtime.device == "cuda:1"
    assert _load("optim.max_steps=1").optim.max_steps == 1


def test_a_device_this_machine_lacks_is_refused_when_the_run_starts(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        runtime.setup("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        runtime.setup("tpu9")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        runtime.setup("cpu", threads=-1)


@pytest.mark.parametrize("override", ["optim.lr=[1", "data.synthetic={a: 1", "optim.lr='x", "runtime.out_dir=@x",
                                      "optim.lr=\t1"])
def test_malformed_yaml_in_an_override_is_one_line_naming_it(override):
    with pytest.raises(ConfigError) as err:
        _load(override)
    message = str(err.value)
    assert message.startswith(f"override {override!r}: not valid YAML") and "\n" not in message


def test_malformed_yaml_in_a_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  batch_size: [32\n")
    with pytest.raises(ConfigError, match=r"run.yaml: not valid YAML at line \d") as err:
        _load(path=path)
    assert "\n" not in str(err.value)
    path.write_bytes(b"optim: {lr: \xff}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        _load(path=path)
    path.write_text("defaults: {a: 1}\n")
    with pytest.raises(ConfigError, match="'defaults' must be a list"):
        _load(path=path)


@pytest.mark.parametrize("override,message", [
    ("data.synthetic.trian_pairs=10", "unknown config key data.synthetic.trian_pairs"),
    ("data.synthetic.seed=[1, 2]", "data.synthetic.seed: expected an integer"),
    ("data.synthetic.jitter=[0.1]", "data.synthetic.jitter: expected a number"),
    ("data.synthetic.families=[nope]", "data.synthetic"),
    ("data.synthetic=[1]", "data.synthetic"),
])
def test_synthetic_options_are_checked_against_the_world(override, message):
    with pytest.raises(ConfigError) as err:
        _load(override)
    assert message in str(err.value)


def test_list_valued_synthetic_options_that_are_valid_open_a_world():
    config = _load("data.synthetic.held_out=[[circle, red]]", "data.synthetic.train_pairs=4",
                   "data.synthetic.val_pairs=2", "data.synthetic.test_pairs=2", "data.synthetic.image_size=16")
    assert config.data.synthetic["held_out"] == (("circle", "red"),)
    opened = open_split(config.data, "val")  # the options are hashable: the world is built and cached
    assert len(opened.split.caption_to_video) > 0


_BOMB = """data:
  synthetic:
    a: &a [x, x, x, x, x, x, x, x, x]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_fails_fast(tmp_path, capsys):
    from vop.cli import main

    assert len(_BOMB) < 1024
    path = tmp_path / "bomb.yaml"
    path.write_text(_BOMB)
    start = time.perf_counter()
    assert main(["train", str(path), "--data", "synthetic", "--method", "vop", "--print-config"]) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "alias" in err and str(path) in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="alias"):
        _load("data.synthetic={a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1], b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], "
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b], d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c], "
              "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]}")  # 9**5 values, in an override


def test_small_aliases_are_still_fine_and_recursive_ones_are_refused():
    assert parse_yaml("a: &a [1, 2]\nb: *a\n", "x") == {"a": [1, 2], "b": [1, 2]}
    assert parse_yaml("[" + ", ".join(["1"] * (MAX_NODES - 2)) + "]", "x")[-1] == 1
    with pytest.raises(ConfigError, match="recursive"):
        parse_yaml("a: &a [1, *a]\n", "x")


def test_a_frame_cache_named_but_missing_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "cahce"
    data = DataConfig(benchmark="msrvtt-9k", root=str(tmp_path), cache_dir=str(missing))
    with pytest.raises(FileNotFoundError, match="data.cache_dir") as err:
        open_split(data, "test")
    assert str(missing) in str(err.value) and "vop cache" in str(err.value)
    with pytest.raises(ValueError, match="synthetic world renders its frames"):
        open_split(DataConfig(benchmark="synthetic", cache_dir=str(tmp_path)), "val")
