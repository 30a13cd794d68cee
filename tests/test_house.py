"""The house redesign's promises: files written by the previous format still load and give
the same numbers, a method can be registered from outside the package, and the one
factory (``vop.create`` / ``vop.load``) builds what the registry describes."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import vop
import vop.methods as methods
from vop.checkpoint import load_checkpoint, read_meta, save_checkpoint
from vop.methods.mechanism import Mechanism, Options, Part, check_at_least
from vop.methods.text_prompts import TEXT_PROMPTS

PRIOR = Path(__file__).resolve().parent / "fixtures" / "prior_format"


# -- files written by the code before the redesign ----------------------------------------
def test_a_prior_format_checkpoint_loads_and_gives_the_same_embeddings():
    meta = read_meta(PRIOR / "vop-fc-tiny")
    assert "adapter_width" in meta["method"]  # the old flat config: every option of every method
    model, _ = load_checkpoint(PRIOR / "vop-fc-tiny")
    assert model.config.method == "vop-fc" and model.config.context_hidden == 16 and model.config.num_frames == 4
    assert not hasattr(model.config, "adapter_width")  # inapplicable legacy defaults are dropped
    expected = torch.load(PRIOR / "vop-fc-tiny-expected.pt")
    model.eval()
    with torch.no_grad():
        video, text, _ = model(expected["frames"], model.tokenize(expected["texts"]))
    # The same function, not bitwise the same numbers: the fixture was written on another CPU,
    # and float32 kernels may round differently across instruction sets (1e-7 seen here). A
    # wrong load (a tensor missing, misnamed or in the wrong slot) is off by far more.
    torch.testing.assert_close(video, expected["video"], rtol=0, atol=1e-6)
    torch.testing.assert_close(text, expected["text"], rtol=0, atol=1e-6)


def test_a_prior_format_config_with_a_changed_inapplicable_option_is_refused():
    meta = read_meta(PRIOR / "vop-fc-tiny")
    with pytest.raises(ValueError, match=r"\['adapter_width'\] do not apply to method 'vop-fc'"):
        methods.config_from_dict({**meta["method"], "adapter_width": 3})


def test_a_prior_format_index_is_searched_with_the_same_scores(tmp_path, capsys):
    from vop.cli import main

    index = tmp_path / "index"
    shutil.copytree(PRIOR / "index", index)
    expected = json.loads((PRIOR / "index-search-expected.json").read_text())
    code = main(["search", str(index), "a red square", "-k", "3", "--json",
                 "--checkpoint", str(PRIOR / "vop-fc-tiny")])
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in got] == [r["path"] for r in expected]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-6)


# -- a method from outside the package (what a user's plugin does) ------------------------
@dataclass(frozen=True, kw_only=True)
class PluginOptions(Options):
    bias_scale: float = 1.0  # a plugin's own option

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "bias_scale")


class TextResiduals(Mechanism):
    """A toy plugin mechanism in the 'hooks' role: a learnable residual after every text
    block's MLP."""

    slot, role = "plugin", "hooks"

    def __init__(self, width: int, layers: int, scale: float):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(layers, width))
        self.scale = scale

    def hooks(self, tower: str, layer: int) -> dict:
        if tower != "text":
            return {}
        return {"post_mlp": lambda h: h + self.scale * self.delta[layer].to(h.dtype)}

    def lr_scales(self) -> dict[str, float]:
        return {"delta": 3.0}


PLUGIN = Part("plugin residuals", PluginOptions,
              lambda clip, cfg: TextResiduals(clip.config.transformer_width, clip.config.transformer_layers,
                                                  cfg.bias_scale))


@pytest.fixture
def plugin_method():
    spec = methods.register(methods.MethodSpec("plugin-vop", "text prompts + a plugin's residuals",
                                               (TEXT_PROMPTS, PLUGIN), recipe={"optim": {"lr": 2e-3}}))
    yield spec
    methods.unregister("plugin-vop")


def test_a_method_registered_from_outside_the_package_builds_trains_and_round_trips(plugin_method, tmp_path):
    assert "plugin-vop" in methods.names()
    # Its parts' options, plus the temporal-head option every method takes.
    assert plugin_method.options == {"bias_scale", "text_prompt_length", "text_prompt_layout", "prompt_depth",
                                     "prompt_init_std", "head", "head_layers", "head_init", "head_lr_scale"}
    model = vop.create("plugin-vop", "tiny", bias_scale=0.5, text_prompt_length=4)
    assert set(model.trainable_parameters()) == {"text_prompts.prompts", "plugin.delta"}
    scales = {tuple(p.shape): g["lr_scale"] for g in model.parameter_groups() for p in g["params"]}
    assert scales[tuple(model.plugin.delta.shape)] == 3.0
    # Gradients reach exactly the trainable tensors, and the plugin's tensor changes the text.
    frames = torch.randn(2, 12, 3, 32, 32)
    ids = model.tokenize(["a cat", "a dog"])
    video, text, scale = model(frames, ids)
    (scale * text @ video.T).logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.trainable_parameters().values())
    assert all(p.grad is None for n, p in model.clip.named_parameters())
    before = model.encode_text(ids).detach()
    with torch.no_grad():
        model.plugin.delta.add_(1.0)
    assert not torch.allclose(model.encode_text(ids), before)
    # Save and load through the checkpoint format.
    save_checkpoint(tmp_path / "ckpt", model, backbone_source="tiny")
    loaded = vop.load(tmp_path / "ckpt")
    assert loaded.config == model.config and loaded.config.bias_scale == 0.5
    assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))


def test_a_plugin_option_is_validated_and_inapplicable_options_refused(plugin_method):
    with pytest.raises(ValueError, match="bias_scale must be >= 0"):
        vop.create("plugin-vop", "tiny", bias_scale=-1.0)
    with pytest.raises(ValueError, match=r"\['adapter_width'\] do not apply to method 'plugin-vop'"):
        vop.create("plugin-vop", "tiny", adapter_width=3)


def test_the_recipe_of_a_plugin_sets_its_training_defaults(plugin_method):
    from vop.train.config import load_train_config

    config = load_train_config(method="plugin-vop", data="msrvtt-9k")
    assert config.optim.lr == 2e-3 and config.runtime.out_dir == "runs/msrvtt-9k/plugin-vop"


# -- the factory ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", methods.names())
def test_create_takes_a_backbone_name_or_module_and_every_method_its_own_options(name):
    clip = vop.backbone.load("tiny")
    by_module = vop.create(name, clip)
    by_name = vop.create(name, "tiny")
    assert by_module.config == by_name.config and type(by_module.config).__name__.endswith("Config")
    assert set(by_module.trainable_parameters()) == set(by_name.trainable_parameters())
    assert set(methods.get(name).config_class.option_names()) == set(by_module.config.to_dict()) - {"method"}
    assert methods.config_from_dict(by_module.config.to_dict()) == by_module.config


def test_a_config_for_another_method_is_refused():
    config = methods.make_config("vop")
    with pytest.raises(ValueError, match="config is for method 'vop', not 'vop-p'"):
        vop.create("vop-p", "tiny", config=config)


def test_the_method_added_in_docs_architecture_builds_from_existing_mechanisms():
    # The diff shown in docs/architecture.md, as written there.
    from vop.methods.adapters import MLP_ADAPTERS
    from vop.methods.frame_prompts import SHARED_PROMPTS
    from vop.methods.function_prompts import JOINT_FRAMES
    from vop.methods.registry import _PROMPT_LR

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert '(TEXT_PROMPTS, SHARED_PROMPTS, JOINT_FRAMES, MLP_ADAPTERS), recipe=_PROMPT_LR))' in doc
    methods.register(methods.MethodSpec("vop-fa", "VoP^F with adapters after every MLP",
                                        (TEXT_PROMPTS, SHARED_PROMPTS, JOINT_FRAMES, MLP_ADAPTERS), recipe=_PROMPT_LR))
    try:
        model = vop.create("vop-fa", "tiny", adapter_width=4)
        assert {n.split(".")[0] for n in model.trainable_parameters()} == {"text_prompts", "frame_prompts", "joint",
                                                                         "adapters"}
        assert model.sees_frame_order
        video, text, _ = model(torch.randn(1, 12, 3, 32, 32), model.tokenize(["a cat"]))
        assert video.shape == (1, 64) and text.shape == (1, 64)
    finally:
        methods.unregister("vop-fa")
