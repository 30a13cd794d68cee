"""Training configs: strict typed loading that names the bad key before any work starts,
``defaults:`` composition, ``--set`` overrides, and every shipped YAML file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import vop
import vop.methods as methods
from vop.configio import ConfigError, apply_overrides, load_yaml
from vop.train.config import TrainConfig, load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BENCHMARKS = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "methods")


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# -- strictness ---------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, match", [
    (["optimm.lr=1"], r"unknown config key optimm; allowed in the top level: \['backbone', 'method'"),
    (["optim.lrr=1e-3"], r"unknown config key optim\.lrr; allowed in optim: \['lr', "),
    (["data.synthetic_pairs=3"], r"unknown config key data\.synthetic_pairs"),
    (["optim.lr=fast"], r"optim\.lr: expected a number, got 'fast'"),
    (["data.workers=two"], r"data\.workers: expected an integer, got 'two'"),
    (["data.workers=2.5"], r"data\.workers: expected an integer"),
    (["data.flip=maybe"], r"data\.flip: expected true/false, got 'maybe'"),
    (["data.crop_scale=[0.5]"], r"data\.crop_scale: expected 2 values, got 1"),
    (["optim=3"], r"optim: expected a section \(mapping\)"),
    (["backbone=3"], r"backbone: expected a string"),
    (["data.train_sampling=sideways"], r"train_sampling must be 'random' or 'middle', got 'sideways'"),
    (["runtime.precision=fp8"], r"precision must be one of"),
    (["runtime.checkpoint_image_blocks=4"], r"checkpoint_image_blocks only applies with runtime\.gradient_checkpointing"),
    (["runtime.gradient_checkpointing=true", "runtime.checkpoint_image_blocks=-1"], r"checkpoint_image_blocks must be >= 0"),
    (["optim.warmup_ratio=1.5"], r"warmup_ratio must be in \[0, 1\)"),
    (["method.name=vop-x"], r"method: unknown method 'vop-x'"),
    (["method.options={prompt_lenght: 4}"], r"method: option\(s\) \['prompt_lenght'\] do not apply to method 'vop'"),
    (["method.name=bias", "method.options={intra_layers: 2}"], r"\['intra_layers'\] do not apply to method 'bias'"),
    (["method.name=vop-fc", "method.options={context_hidden: 0}"], r"method: context_hidden must be >= 1"),
    (["optim.lr"], r"override 'optim.lr' must look like key.sub=value"),
    (["optim.lr.peak=1"], r"'lr' is not a section"),
])
def test_bad_keys_types_and_values_are_named(tmp_path, overrides, match):
    config = _write(tmp_path / "run.yaml", {"optim": {"lr": 1e-3}})
    with pytest.raises(ConfigError, match=match):
        load_train_config(config, overrides)


def test_a_bad_key_in_a_file_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key runtime\.outdir"):
        TrainConfig.from_dict({"runtime": {"outdir": "x"}})


def test_vop_train_refuses_a_bad_config_before_any_work(tmp_path, monkeypatch, capsys):
    import vop.train.trainer as trainer

    def no_work(*args, **kwargs):
        raise AssertionError("the trainer must not be built for an invalid config")

    monkeypatch.setattr(trainer, "Trainer", no_work)
    from vop.cli import main

    out = tmp_path / "run"
    for bad, named in [("optim.lrr=1", "optim.lrr"), ("data.num_frames=many", "data.num_frames"),
                       ("method.options={bogus: 1}", "bogus")]:
        code = main(["train", str(CONFIGS / "msrvtt-9k" / "vop-fc.yaml"), "--set", f"runtime.out_dir={out}",
                     "--set", bad])
        assert code == 2
        assert named in capsys.readouterr().err
    assert not out.exists()


def test_configs_are_read_only():
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.optim.lr = 1.0  # type: ignore[misc]


# -- composition and overrides ------------------------------------------------------------
def test_defaults_compose_in_order_and_the_file_wins(tmp_path):
    _write(tmp_path / "base.yaml", {"optim": {"lr": 1.0, "epochs": 3}, "data": {"num_frames": 8, "flip": False}})
    _write(tmp_path / "methods" / "m.yaml", {"method": {"name": "vop"}, "optim": {"lr": 0.5}})
    run = _write(tmp_path / "bench" / "run.yaml", "defaults: [../base.yaml, ../methods/m.yaml]\n"
                                                  "optim: {batch_size: 4}\ndata: {flip: true}\n")
    config = load_train_config(run)
    assert config.method.name == "vop"
    assert (config.optim.lr, config.optim.epochs, config.optim.batch_size) == (0.5, 3, 4)  # merged, not replaced
    assert (config.data.num_frames, config.data.flip) == (8, True)
    assert config.optim.weight_decay == 0.2  # untouched keys keep the dataclass default


def test_defaults_may_be_one_string_and_nest(tmp_path):
    _write(tmp_path / "a.yaml", {"optim": {"epochs": 2}})
    _write(tmp_path / "b.yaml", "defaults: a.yaml\noptim: {lr: 0.25}\n")
    config = load_train_config(_write(tmp_path / "c.yaml", "defaults: [b.yaml]\n"))
    assert (config.optim.epochs, config.optim.lr) == (2, 0.25)


def test_defaults_cycles_and_missing_files_are_errors(tmp_path):
    _write(tmp_path / "a.yaml", "defaults: [b.yaml]\n")
    _write(tmp_path / "b.yaml", "defaults: [a.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_yaml(tmp_path / "a.yaml")
    _write(tmp_path / "c.yaml", "defaults: [nowhere.yaml]\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml does not exist"):
        load_yaml(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_yaml(_write(tmp_path / "d.yaml", "- a list\n"))


def test_overrides_beat_files_and_parse_values_as_yaml(tmp_path):
    run = _write(tmp_path / "run.yaml", {"optim": {"lr": 1.0}, "runtime": {"threads": 2}})
    config = load_train_config(run, [
        "optim.lr=1e-3",  # YAML 1.1 reads this as a string; it still becomes a float
        "data.crop_scale=[0.25, 1]",
        "runtime.threads=null",
        "method.name=vop-fc",
        "method.options={intra_layers: 2, context_hidden: 16}",
        "data.synthetic={train_pairs: 16}",
        "backbone=tiny",
        "optim.epochs=7",
        "optim.epochs=9",  # the last one wins
    ])
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.data.crop_scale == (0.25, 1.0)
    assert config.runtime.threads is None
    assert config.method.options == {"intra_layers": 2, "context_hidden": 16}
    assert config.method_config().intra_layers == 2
    assert config.data.synthetic == {"train_pairs": 16} and config.backbone == "tiny"
    assert config.optim.epochs == 9


def test_apply_overrides_builds_missing_sections():
    assert apply_overrides({}, ["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_round_trips_through_dict_and_yaml():
    config = load_train_config(None, ["method.name=vop-fc", "method.options={intra_layers: 2}",
                                      "data.crop_scale=[0.3, 0.9]", "runtime.threads=1"])
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


def test_print_config_prints_the_resolved_config(tmp_path, capsys):
    from vop.cli import main

    path = CONFIGS / "didemo" / "vop-p.yaml"
    assert main(["train", str(path), "--set", "optim.lr=0.01", "--print-config"]) == 0
    printed = TrainConfig.from_dict(yaml.safe_load(capsys.readouterr().out))
    assert printed == load_train_config(path, ["optim.lr=0.01"])
    assert not Path(printed.runtime.out_dir).exists()


# -- the shipped configs ------------------------------------------------------------------
def test_every_benchmark_has_a_config_per_method():
    for bench in BENCHMARKS:
        assert sorted(p.stem for p in (CONFIGS / bench).glob("*.yaml")) == sorted([*methods.names(), "data"]), bench
    assert sorted(p.stem for p in (CONFIGS / "methods").glob("*.yaml")) == sorted(methods.names())


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_yaml_loads(path):
    config = load_train_config(path)
    assert isinstance(config, TrainConfig)
    config.method_config()
    folder, stem = path.parent.name, path.stem
    if folder == "methods":
        assert config.method.name == stem
    elif folder in BENCHMARKS:
        assert config.data.benchmark == folder
        real = folder != "synthetic"  # the built-in world needs no files and sets its own recipe
        assert (config.data.root is not None) == real
        if stem != "data":
            assert config.method.name == stem
            assert config.runtime.out_dir == f"runs/{folder}/{stem}"
            assert config.optim.weight_decay == 0.2 and config.optim.epochs == 5  # from base.yaml
            if real:
                assert config.optim.lr == load_train_config(CONFIGS / "methods" / f"{stem}.yaml").optim.lr
