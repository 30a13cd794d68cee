"""The backbone: CLIP formulation, loading every supported checkpoint layout, refusals."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import vop.backbone as backbone
from vop.backbone.convert import to_huggingface
from vop.backbone.config import ARCHITECTURES, infer_config


def _embeddings(model, images, ids):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(ids)


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.zeros(3, 32, dtype=torch.long)
    ids[:, 0] = 49406
    ids[0, 1:4], ids[0, 4] = torch.tensor([320, 1125, 539]), 49407
    ids[1, 1:3], ids[1, 3] = torch.tensor([320, 2368]), 49407
    ids[2, 1] = 49407
    return images, ids


@pytest.fixture(scope="module")
def vit_b32():
    return backbone.load("ViT-B-32")


def test_named_architectures_have_clip_shapes(vit_b32):
    cfg = ARCHITECTURES["ViT-B-32"]
    assert (cfg.vision_heads, cfg.grid_size, cfg.embed_dim) == (12, 7, 512)
    assert ARCHITECTURES["ViT-L-14"].vision_heads == 16
    model = vit_b32
    assert model.num_parameters() == 151_277_313
    with torch.no_grad():
        assert model.encode_image(torch.randn(1, 3, 224, 224)).shape == (1, 512)


def test_encode_text_reads_end_of_text_and_is_causal(clip, inputs):
    _, ids = inputs
    base = clip.encode_text(ids)
    # Tokens after end-of-text (padding) cannot influence the feature (causal mask).
    changed = ids.clone()
    changed[0, 10:] = 500
    torch.testing.assert_close(clip.encode_text(changed)[0], base[0], rtol=0, atol=0)
    # A word before end-of-text does.
    changed[0, 2] = 501
    assert not torch.allclose(clip.encode_text(changed)[0], base[0])


def test_attention_matches_reference_formulation(clip):
    """Our SDPA attention equals nn.MultiheadAttention with the same weights (OpenAI's module)."""
    block = clip.visual.blocks[0]
    mha = torch.nn.MultiheadAttention(128, 2, batch_first=True)
    mha.load_state_dict(block.attn.state_dict())
    x = torch.randn(4, 5, 128)
    expected, _ = mha(x, x, x, need_weights=False)
    torch.testing.assert_close(block.attn(x), expected, rtol=1e-5, atol=1e-5)
    mask = torch.full((5, 5), float("-inf")).triu(1)
    expected, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(block.attn(x, causal=True), expected, rtol=1e-5, atol=1e-5)


def test_all_layouts_load_to_identical_embeddings(clip, inputs, tmp_path):
    images, ids = inputs
    ref = _embeddings(clip, images, ids)
    sd = clip.state_dict()
    # OpenAI plain state dict
    torch.save(sd, tmp_path / "openai.pt")
    # open_clip training checkpoint: wrapped and DDP-prefixed
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "openclip.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "openclip.safetensors")
    # Hugging Face CLIPModel folder
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file(to_huggingface(sd), hf / "model.safetensors")
    (hf / "config.json").write_text(json.dumps({"vision_config": {"num_attention_heads": 2},
                                                "text_config": {"num_attention_heads": 2}}))
    # OpenAI's TorchScript release format
    traced = torch.jit.trace(clip, (images, ids), check_trace=False)
    torch.jit.save(traced, str(tmp_path / "ViT-tiny.pt"))

    for source in ["openai.pt", "openclip.pt", "openclip.safetensors", "hf", "hf/model.safetensors", "ViT-tiny.pt"]:
        loaded = backbone.load(tmp_path / source)
        got = _embeddings(loaded, images, ids)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=source)


def test_fp16_weights_are_cast_on_load(clip, tmp_path, inputs):
    torch.save({k: v.half() for k, v in clip.state_dict().items()}, tmp_path / "half.pt")
    loaded = backbone.load(tmp_path / "half.pt")
    assert loaded.visual.proj.dtype == torch.float32
    images, ids = inputs
    a = F.normalize(_embeddings(loaded, images, ids)[0], dim=-1)
    b = F.normalize(_embeddings(clip, images, ids)[0], dim=-1)
    assert (a * b).sum(-1).min() > 0.999


def test_resnet_checkpoint_is_refused(tmp_path):
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
                "token_embedding.weight": torch.zeros(10, 8)}, tmp_path / "RN50.pt")
    with pytest.raises(ValueError, match="ResNet.*only ViT"):
        backbone.load(tmp_path / "RN50.pt")


def test_wrong_shape_names_expected_and_found(clip, tmp_path):
    sd = clip.state_dict()
    sd["visual.ln_post.weight"] = torch.ones(99)
    with pytest.raises(ValueError, match=r"visual.ln_post.weight: expected shape \(128,\), found \(99,\)"):
        backbone.from_state_dict(sd)


def test_not_a_clip_checkpoint(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a CLIP ViT state dict"):
        backbone.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        backbone.load(tmp_path / "junk.pt")


def test_unknown_name_lists_known_ones():
    with pytest.raises(FileNotFoundError, match="ViT-B-32.*never downloads"):
        backbone.load("ViT-H-99")


def test_infer_config_from_vit_b32_shapes(vit_b32):
    sd = vit_b32.state_dict()
    cfg = infer_config(sd)
    ref = ARCHITECTURES["ViT-B-32"]
    assert cfg.to_dict() | {"name": ""} == ref.to_dict() | {"name": ""}
    assert backbone.from_state_dict(sd).config.name == "ViT-B-32"


def test_images_of_wrong_size_are_refused(clip):
    with pytest.raises(ValueError, match=r"expected images \(N, 3, 32, 32\)"):
        clip.encode_image(torch.zeros(1, 3, 64, 64))


def test_fingerprint_tracks_weights(clip):
    fp = backbone.fingerprint(clip)
    assert fp == backbone.fingerprint(backbone.load("tiny"))
    with torch.no_grad():
        clip.visual.proj[0, 0] += 1.0
    assert backbone.fingerprint(clip) != fp
