"""Real CLIP weight files are never loaded silently wrong: checkpoints written by the real
``transformers`` (GELU and QuickGELU, non-default heads, sharded, partial configs, every
path form) match its features; open_clip layouts (written from open_clip's documented
key names and config files) get the right activation and heads; bare state dicts say
what they assumed; and QuickGELU models keep the identity old checkpoints recorded."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

import vop.backbone as backbone
from vop.backbone.config import ARCHITECTURES, CLIPConfig, default_text_heads, default_vision_heads
from vop.backbone.convert import to_huggingface

transformers = pytest.importorskip("transformers")


def _hf_model(act: str, vision_heads: int, text_heads: int, vision_width: int = 96, text_width: int = 64):
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=text_width, intermediate_size=4 * text_width, num_hidden_layers=2,
                         num_attention_heads=text_heads, max_position_embeddings=16, hidden_act=act),
        vision_config=dict(hidden_size=vision_width, intermediate_size=4 * vision_width, num_hidden_layers=2,
                           num_attention_heads=vision_heads, image_size=32, patch_size=16, hidden_act=act),
        projection_dim=48)
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so every tensor matters
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _inputs():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.zeros(3, 16, dtype=torch.long)
    ids[:, 0] = 49406
    ids[0, 1:4], ids[0, 4] = torch.tensor([320, 1125, 539]), 49407
    ids[1, 1:3], ids[1, 3] = torch.tensor([320, 2368]), 49407
    ids[2, 1:10], ids[2, 10] = torch.arange(400, 409), 49407
    return images, ids


def _hf_features(model, images, ids):
    with torch.no_grad():
        img = model.get_image_features(pixel_values=images)
        txt = model.get_text_features(input_ids=ids)
    img = getattr(img, "pooler_output", img)  # transformers >= 5 returns the model output
    txt = getattr(txt, "pooler_output", txt)
    return img, txt


def _assert_matches(clip, hf_model, label):
    images, ids = _inputs()
    ref_img, ref_txt = _hf_features(hf_model, images, ids)
    with torch.no_grad():
        img, txt = clip.encode_image(images), clip.encode_text(ids)
    for got, ref, tower in ((img, ref_img, "image"), (txt, ref_txt, "text")):
        rel = ((got - ref).norm(dim=-1) / ref.norm(dim=-1)).max().item()
        assert rel < 1e-4, f"{label}: {tower} features differ from transformers by {rel:.2e} relative"


CASES = [  # (hidden_act, vision heads, text heads): defaults and non-default head widths
    ("quick_gelu", 3, 2),
    ("gelu", 3, 2),
    ("gelu", 6, 4),
]


@pytest.mark.parametrize("act,vh,th", CASES)
def test_save_pretrained_round_trip_every_path_form(tmp_path, monkeypatch, act, vh, th):
    model = _hf_model(act, vh, th)
    folder = tmp_path / "clip"
    model.save_pretrained(folder)
    forms = [folder, folder / "model.safetensors"]
    for form in forms:
        clip = backbone.load(form)
        assert (clip.config.activation, clip.config.vision_heads, clip.config.transformer_heads) == (act, vh, th)
        _assert_matches(clip, model, str(form))
    monkeypatch.chdir(folder)
    for form in ["model.safetensors", "./model.safetensors", "."]:
        _assert_matches(backbone.load(form), model, form)
    assert "config.json" in backbone.load(".").weights_source


def test_sharded_save_pretrained_loads(tmp_path, monkeypatch):
    model = _hf_model("gelu", 6, 4)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="1MB")
    files = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files, files
    _assert_matches(backbone.load(tmp_path / "sharded"), model, "sharded folder")
    _assert_matches(backbone.load(tmp_path / "sharded" / "model.safetensors.index.json"), model, "index file")
    monkeypatch.chdir(tmp_path / "sharded")
    _assert_matches(backbone.load("."), model, "sharded, relative")
    shard = next(p for p in (tmp_path / "sharded").iterdir() if p.name.startswith("model-0"))
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"{shard.name}.*missing"):
        backbone.load(".")


def test_partial_config_is_filled_with_transformers_defaults(tmp_path):
    # Older transformers leave out values equal to the defaults: here the text tower's 8
    # heads and QuickGELU; the image tower's non-default 6 heads and GELU are written.
    model = _hf_model("gelu", 6, 8, text_width=128)
    model.save_pretrained(tmp_path)
    full = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {
        k: full["vision_config"][k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "hidden_act")
    }, "text_config": {"hidden_size": 128, "intermediate_size": 512}}))
    with pytest.raises(ValueError, match="different activations"):
        backbone.load(tmp_path)  # vop runs one activation in both towers: refused, not wrong
    partial = {"vision_config": {"num_attention_heads": 6, "hidden_size": 96, "intermediate_size": 384},
               "text_config": {"hidden_size": 128, "intermediate_size": 512}}
    (tmp_path / "config.json").write_text(json.dumps(partial))
    model = _hf_model("quick_gelu", 6, 8, text_width=128)
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(partial))  # after save_pretrained rewrote it
    clip = backbone.load(tmp_path / "model.safetensors")
    assert (clip.config.activation, clip.config.vision_heads, clip.config.transformer_heads) == ("quick_gelu", 6, 8)
    _assert_matches(clip, model, "partial config")


@pytest.mark.parametrize("field,value,match", [
    ("hidden_act", "gelu_new", "hidden_act is 'gelu_new'"),
    ("layer_norm_eps", 1e-6, "layer_norm_eps"),
])
def test_what_vop_cannot_reproduce_is_refused(tmp_path, field, value, match):
    _hf_model("gelu", 3, 2).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vision_config"][field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        backbone.load(tmp_path)


def test_hf_weights_without_config_warn_and_take_overrides(tmp_path):
    model = _hf_model("gelu", 6, 4)
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.warns(UserWarning, match="assumed quick_gelu.*activation='gelu'"):
        backbone.load(tmp_path / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip = backbone.load(tmp_path / "model.safetensors", activation="gelu", vision_heads=6, text_heads=4)
    _assert_matches(clip, model, "overrides")


# -- open_clip layouts ----------------------------------------------------------------------
def _open_clip_h14_shaped(activation: str) -> tuple[backbone.CLIP, dict]:
    """A CLIP with open_clip's ViT-H-14 widths (image 1280 wide, 16 heads of 80; text 1024
    wide, 16 heads), one block per tower and a small vocabulary to stay light."""
    cfg = CLIPConfig(embed_dim=64, image_resolution=28, vision_layers=1, vision_width=1280, vision_patch_size=14,
                     context_length=16, vocab_size=1000, transformer_width=1024, transformer_heads=16,
                     transformer_layers=1, vision_heads=16, activation=activation, name="h14-shaped")
    torch.manual_seed(1)
    model = backbone.CLIP(cfg).eval()
    # open_clip's ViT CLIP state dict uses OpenAI's names (its attn_mask is not persistent)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _small_ids():
    """Token ids for the 1000-row vocabulary of the H/14-shaped model (end of text = 999)."""
    ids = torch.zeros(2, 16, dtype=torch.long)
    ids[:, 0] = 998
    ids[0, 1:4], ids[0, 4] = torch.tensor([320, 125, 539]), 999
    ids[1, 1] = 999
    return ids


def _features(model, images, ids):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(ids)


def test_open_clip_hub_folder_reads_its_config(tmp_path):
    ref, sd = _open_clip_h14_shaped("gelu")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"embed_dim": 64,
                      "vision_cfg": {"image_size": 28, "layers": 1, "width": 1280, "head_width": 80, "patch_size": 14},
                      "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 1024, "heads": 16, "layers": 1}},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    images, ids = torch.randn(2, 3, 28, 28), _small_ids()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the config says everything: no assumption to warn about
        clip = backbone.load(tmp_path)
    assert (clip.config.activation, clip.config.vision_heads, clip.config.transformer_heads) == ("gelu", 16, 16)
    assert "open_clip_config.json" in clip.weights_source
    for a, b in zip(_features(clip, images, ids), _features(ref, images, ids)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_open_clip_bare_state_dict_heads_from_widths_and_activation_reported(tmp_path):
    ref, sd = _open_clip_h14_shaped("gelu")
    torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "epoch_32.pt")
    with pytest.warns(UserWarning, match="assumed quick_gelu.*16 image / 16 text heads.*activation='gelu'"):
        assumed = backbone.load(tmp_path / "epoch_32.pt")
    assert assumed.config.vision_heads == 16  # 1280 wide: 16 heads of 80, not 20 of 64
    assert "assumed" in assumed.weights_source
    clip = backbone.load(tmp_path / "epoch_32.pt", activation="gelu")
    images, ids = torch.randn(2, 3, 28, 28), _small_ids()
    for a, b in zip(_features(clip, images, ids), _features(ref, images, ids)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the assumed QuickGELU gives other embeddings: the warning is not idle talk
    assert not torch.allclose(_features(assumed, images, ids)[0], _features(ref, images, ids)[0], atol=1e-3)


def test_open_clip_quickgelu_config_and_unsupported_options(tmp_path):
    ref, sd = _open_clip_h14_shaped("quick_gelu")
    torch.save(sd, tmp_path / "open_clip_pytorch_model.bin")
    model_cfg = {"embed_dim": 64, "quick_gelu": True,
                 "vision_cfg": {"image_size": 28, "layers": 1, "width": 1280, "head_width": 80, "patch_size": 14},
                 "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 1024, "heads": 16, "layers": 1}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    assert backbone.load(tmp_path).config.activation == "quick_gelu"
    model_cfg["vision_cfg"]["ls_init_value"] = 1e-5
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    with pytest.raises(ValueError, match="ls_init_value"):
        backbone.load(tmp_path)


@pytest.mark.parametrize("width,heads", [(768, 12), (1024, 16), (1280, 16), (1408, 16), (1664, 16), (192, 3)])
def test_known_image_widths_have_their_heads(width, heads):
    assert default_vision_heads(width) == heads


@pytest.mark.parametrize("width,heads", [(512, 8), (768, 12), (1024, 16), (1280, 20)])
def test_text_widths_use_64_wide_heads(width, heads):
    assert default_text_heads(width) == heads


# -- compatibility with what checkpoints recorded before the activation existed ----------------
def test_quickgelu_identity_is_unchanged_and_gelu_is_recorded(clip):
    arch = backbone.identity(clip)["architecture"]
    assert "activation" not in arch
    assert CLIPConfig.from_dict(arch).activation == "quick_gelu"
    gelu = CLIPConfig.from_dict({**arch, "activation": "gelu"})
    assert gelu.to_dict()["activation"] == "gelu" and CLIPConfig.from_dict(gelu.to_dict()) == gelu
    with pytest.raises(ValueError, match="activation must be one of"):
        CLIPConfig.from_dict({**arch, "activation": "relu"})
    # the same weights under another activation are another backbone
    g = backbone.CLIP(gelu)
    g.load_state_dict(clip.state_dict())
    assert backbone.identity(g)["architecture"] != backbone.identity(clip)["architecture"]
    assert backbone.fingerprint(g) == backbone.fingerprint(clip)  # the fingerprint hashes weights only


def test_named_architectures_added():
    assert ARCHITECTURES["ViT-L-14-336"].image_resolution == 336
    h = ARCHITECTURES["ViT-H-14"]
    assert (h.vision_width, h.vision_heads, h.transformer_width, h.transformer_heads, h.activation) == \
        (1280, 16, 1024, 16, "gelu")


def test_to_huggingface_round_trip_keeps_gelu(tmp_path):
    cfg = CLIPConfig.from_dict({**ARCHITECTURES["tiny"].to_dict(), "activation": "gelu"})
    model = backbone.CLIP(cfg)
    save_file(to_huggingface(model.state_dict()), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "clip",
        "vision_config": {"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 2, "hidden_act": "gelu"},
        "text_config": {"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 2, "hidden_act": "gelu"}}))
    assert backbone.load(tmp_path).config == cfg  # named "tiny" by its shape, GELU kept
