"""Training configs: strict typed loading that names the bad key before any work starts,
``defaults:`` composition, ``--set`` overrides, and every shipped YAML file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import vop
import vop.methods as methods
from vop.configio import ConfigError, apply_overrides, data_presets, load_preset, load_yaml
from vop.train.config import TrainConfig, load_train_config


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
        code = main(["train", "--data", "msrvtt-9k", "--method", "vop-fc", "--set", f"runtime.out_dir={out}",
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

    assert main(["train", "--data", "didemo", "--method", "vop-p", "--set", "optim.lr=0.01", "--print-config"]) == 0
    printed = TrainConfig.from_dict(yaml.safe_load(capsys.readouterr().out))
    assert printed == load_train_config(None, ["optim.lr=0.01"], data="didemo", method="vop-p")
    assert printed.optim.lr == 0.01 and printed.method.name == "vop-p" and printed.data.benchmark == "didemo"
    assert not Path(printed.runtime.out_dir).exists()


# -- configs composed from the registry ----------------------------------------------------
PRESETS = data_presets()


def test_the_data_presets_are_the_benchmarks_and_the_synthetic_world():
    from vop.data.benchmarks import READERS

    assert sorted(PRESETS) == sorted([*READERS, "synthetic"])


@pytest.mark.parametrize("data", PRESETS)
@pytest.mark.parametrize("method", methods.names())
def test_every_preset_composes_with_every_method(data, method):
    config = load_train_config(data=data, method=method)
    config.method_config()
    assert config.method.name == method and config.data.benchmark == data
    assert config.runtime.out_dir == f"runs/{data}/{method}"
    assert config.optim.weight_decay == 0.2 and config.optim.epochs == 5  # from base.yaml
    real = data != "synthetic"  # the built-in world needs no files and sets its own recipe
    assert (config.data.root is not None) == real
    recipe_lr = methods.get(method).recipe.get("optim", {}).get("lr")
    if real:
        assert config.optim.lr == recipe_lr and config.backbone == "ViT-B-32:openai"
    else:
        table = load_preset("synthetic")[1]
        assert config.optim.lr == table.get(method, {}).get("optim", {}).get("lr", 5e-3)
        recipe_options = methods.get(method).recipe.get("method", {}).get("options", {})
        assert config.method.options == {**recipe_options, **table.get(method, {}).get("method", {}).get("options", {})}


def test_composition_order_recipe_then_preset_then_yaml_then_overrides(tmp_path):
    # full's recipe says lr 1e-6; the synthetic preset's table says 2e-5 for full.
    assert load_train_config(method="full").optim.lr == 1e-6
    assert load_train_config(data="synthetic", method="full").optim.lr == 2e-5
    custom = _write(tmp_path / "c.yaml", {"optim": {"lr": 3e-3}, "runtime": {"out_dir": "mine"}})
    config = load_train_config(custom, data="synthetic", method="full")
    assert config.optim.lr == 3e-3 and config.runtime.out_dir == "mine" and config.optim.max_steps == 150
    config = load_train_config(custom, ["optim.lr=4e-3"], data="synthetic", method="full")
    assert config.optim.lr == 4e-3
    # A YAML file alone keeps working for custom runs (no preset, no recipe).
    assert load_train_config(custom).optim.lr == 3e-3


def test_composition_does_not_leak_between_runs():
    first = load_train_config(None, ["optim.lr=0.5", "method.options={context_hidden: 3}"], data="synthetic",
                              method="vop-fc")
    again = load_train_config(data="synthetic", method="vop-fc")
    assert first.optim.lr == 0.5 and again.optim.lr == 5e-3 and again.method.options["context_hidden"] == 64
    assert methods.get("vop").recipe == {"optim": {"lr": 1e-3}}


def test_unknown_preset_and_method_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"unknown data preset 'msrvt'; known: activitynet, didemo"):
        load_train_config(data="msrvt", method="vop")
    with pytest.raises(ValueError, match=r"unknown method 'vop-x'"):
        load_train_config(data="synthetic", method="vop-x")


@pytest.mark.parametrize("method", ["full", "xpool"])
def test_a_temporal_head_on_full_fine_tuning_trains_at_clip4clips_head_rate(method):
    config = load_train_config(data="msrvtt-9k", method=method, overrides=["method.options.head=seqtransf"])
    model = vop.create(method, "tiny", config=config.method_config())
    scales = {id(p): g["lr_scale"] for g in model.parameter_groups() for p in g["params"]}
    head = [scales[id(p)] for p in model.head.parameters()]
    clip = [scales[id(p)] for n, p in model.named_parameters() if n.startswith("clip.") and p.requires_grad]
    assert head and all(config.optim.lr * s == pytest.approx(1e-4) for s in head)  # CLIP4Clip's head rate
    assert clip and all(config.optim.lr * s == pytest.approx(1e-6) for s in clip)  # CLIP at full fine-tuning's
    plain = load_train_config(data="msrvtt-9k", method=method)
    assert vop.create(method, "tiny", config=plain.method_config()).head is None  # the scale adds no head
