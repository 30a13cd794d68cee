"""Regressions for defects a review of the redesign found: shared backbones, method options
named only in a YAML file or --set, typed method options, pickling configs, hub ids only
with their prefix, and what `vop push` publishes."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import vop
import vop.backbone
import vop.methods as methods
from vop.checkpoint import save_checkpoint
from vop.train.config import load_train_config


def test_a_second_model_on_the_same_clip_does_not_untrain_the_first():
    clip = vop.backbone.load("tiny")
    bias = vop.create("bias", clip)
    trained = bias.num_trainable()
    vop.create("zero-shot", clip)  # resets requires_grad on the shared tensors
    assert bias.num_trainable() == trained > 0
    bias.train()  # claims its tensors again before training
    assert sum(p.numel() for p in clip.parameters() if p.requires_grad) == trained


def test_loading_a_backbone_training_checkpoint_onto_a_given_clip_leaves_that_clip_alone(tmp_path):
    clip = vop.backbone.load("tiny")
    model = vop.create("bias", vop.backbone.load("tiny"))
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.5)
    save_checkpoint(tmp_path / "ckpt", model, backbone_source="tiny",
                    backbone_identity=vop.backbone.identity(clip))
    before = vop.backbone.identity(clip)["fingerprint"]
    first = vop.load(tmp_path / "ckpt", backbone=clip, device="cpu")
    again = vop.load(tmp_path / "ckpt", backbone=clip, device="cpu")  # still the recorded weights
    assert vop.backbone.identity(clip)["fingerprint"] == before
    assert torch.equal(first.encode_texts(["a cat"]), again.encode_texts(["a cat"]))


def test_a_method_named_in_set_or_yaml_gets_its_recipe_preset_entry_and_folder(tmp_path):
    config = load_train_config(None, ["method.name=full"], data="synthetic")
    assert (config.method.name, config.optim.lr, config.runtime.out_dir) == ("full", 2e-5, "runs/synthetic/full")
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("method: {name: xpool}\n")
    config = load_train_config(yaml_file, data="msrvtt-9k")
    assert config.optim.lr == methods.get("xpool").recipe["optim"]["lr"]
    assert config.runtime.out_dir == "runs/msrvtt-9k/xpool"
    with pytest.raises(ValueError, match="--method vop but the config names method full"):
        load_train_config(None, ["method.name=full"], data="synthetic", method="vop")


@pytest.mark.parametrize("option,value", [("prompt_depth", True), ("text_prompt_length", 8.5),
                                          ("text_prompt_length", "8")])
def test_method_options_of_the_wrong_type_are_refused_naming_the_option(option, value):
    with pytest.raises(ValueError, match=rf"method\.options\.{option}: expected an integer"):
        methods.make_config("vop", **{option: value})


def test_configs_pickle_and_only_old_flat_configs_may_carry_inapplicable_options():
    config = methods.make_config("vop-fc", intra_layers=4)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(ValueError, match=r"\['adapter_width'\] do not apply to method 'zero-shot'"):
        methods.config_from_dict({"method": "zero-shot", "adapter_width": 64})


def test_a_missing_local_path_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        vop.load("runs/best")
    assert "Hugging Face cache" not in str(info.value)


def test_push_publishes_no_local_paths(tmp_path):
    from vop.hub import prepare_upload

    model = vop.create("vop", "tiny-synthetic")
    meta_extra = {"train_config": {"runtime": {"out_dir": "/home/me/secret-run"}}}
    path = save_checkpoint(tmp_path / "best", model, backbone_source="tiny-synthetic",
                           data={"benchmark": "msrvtt-9k", "root": "/home/me/data/msrvtt"}, extra=meta_extra)
    published = prepare_upload(path, tmp_path / "stage")
    text = (tmp_path / "stage" / "meta.json").read_text()
    assert "/home/me" not in text and published["data"] == {"benchmark": "msrvtt-9k"}
    assert json.loads(text)["method"]["method"] == "vop"
