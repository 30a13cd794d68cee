"""Pretraining the tiny CLIP and the packaged ``tiny-synthetic`` checkpoint it ships as."""

from __future__ import annotations

import math

import pytest
import torch

import vop
import vop.backbone as backbone
from vop.backbone import packaged
from vop.backbone.packaged import UNKNOWN_ROW, asset_path, load_checkpoint, read_metadata, reduced_token_map
from vop.train.pretrain import PretrainConfig, build_model, evaluate_zero_shot, pretrain, train

# A pretraining run small enough for a test: the 32 px "tiny" shape, 64 pairs a step.
SMALL = PretrainConfig(steps=60, batch=64, lr=3e-4, warmup=10, architecture="tiny", threads=1, eval_pairs=50)


@pytest.fixture(scope="module")
def shipped():
    return backbone.load("tiny-synthetic")


# -- the pretraining loop ----------------------------------------------------------------
@pytest.mark.slow
def test_a_few_steps_reduce_the_contrastive_loss():
    clip = build_model(SMALL)
    losses = train(clip, SMALL, progress=False)
    assert len(losses) == SMALL.steps
    # Contrastive training first settles at the uniform guess, ln(batch), below the random
    # start; learning means leaving that plateau.
    assert sum(losses[-5:]) / 5 < math.log(SMALL.batch) - 0.5 < sum(losses[:5]) / 5
    assert clip.logit_scale.exp().item() <= SMALL.max_logit_scale + 1e-4


def test_pretraining_is_deterministic_by_seed():
    cfg = PretrainConfig(**{**SMALL.to_dict(), "steps": 3, "warmup": 1})
    a, b = build_model(cfg), build_model(cfg)
    assert train(a, cfg, progress=False) == train(b, cfg, progress=False)
    assert backbone.fingerprint(a) == backbone.fingerprint(b)
    c = build_model(PretrainConfig(**{**cfg.to_dict(), "seed": 1}))
    assert backbone.fingerprint(c) != backbone.fingerprint(build_model(cfg))


def test_pretrain_writes_a_checkpoint_whose_figures_reload(tmp_path):
    cfg = PretrainConfig(**{**SMALL.to_dict(), "steps": 2, "warmup": 1})
    out = pretrain(cfg, tmp_path / "small.safetensors", progress=False, command="test")
    meta = read_metadata(out["path"])
    assert meta["command"] == "test" and meta["steps"] == 2 and meta["seed"] == 0
    assert meta["pretrain_config"] == cfg.to_dict()
    assert meta["zero_shot"]["i2t_r1_attributes"] == out["i2t_r1_attributes"]
    clip = load_checkpoint(out["path"])
    assert backbone.fingerprint(clip) == out["fingerprint"]
    # The figures were measured on the fp16-rounded weights, so the reloaded model repeats them.
    again = evaluate_zero_shot(clip, n=cfg.eval_pairs)
    assert again["i2t_r1_exact"] == out["i2t_r1_exact"]
    assert again["i2t_r1_attributes"] == out["i2t_r1_attributes"]


def test_pretrain_config_validates_and_round_trips():
    assert PretrainConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="warmup"):
        PretrainConfig(steps=10, warmup=10)
    with pytest.raises(ValueError, match="unknown architecture"):
        PretrainConfig(architecture="ViT-X")
    with pytest.raises(ValueError, match="unknown PretrainConfig fields"):
        PretrainConfig.from_dict({"stepz": 3})


def test_cli_parses_pretrain():
    from vop.cli import build_parser

    args = build_parser().parse_args(["pretrain", "--steps", "5", "--seed", "3", "--out", "x.safetensors"])
    assert (args.steps, args.seed, args.out, args.threads) == (5, 3, "x.safetensors", 2)


# -- the reduced vocabulary --------------------------------------------------------------
def test_reduced_vocabulary_covers_every_synthetic_caption():
    from vop.data.synthetic import vocabulary_texts

    token_map, kept = reduced_token_map(vocabulary_texts())
    assert token_map.shape == (49408,) and len(kept) < 100
    assert 49406 in kept and 49407 in kept
    ids = vop.tokenize(vocabulary_texts(), context_length=32, truncate=False)
    rows = token_map[ids]
    assert (rows[ids != 0] != UNKNOWN_ROW).all()
    assert sorted(set(token_map.tolist())) == list(range(len(kept) + 1))


# -- the shipped checkpoint --------------------------------------------------------------
def test_shipped_model_loads_by_name_with_its_token_map(shipped):
    cfg = shipped.config
    assert cfg.name == "tiny-synthetic"
    assert (cfg.image_resolution, cfg.vision_patch_size, cfg.vision_width, cfg.vision_layers) == (64, 16, 192, 6)
    assert (cfg.transformer_width, cfg.transformer_layers, cfg.context_length, cfg.embed_dim) == (192, 4, 32, 256)
    from vop.data.synthetic import vocabulary_texts

    token_map, kept = reduced_token_map(vocabulary_texts())
    assert shipped.token_map.dtype == torch.long
    assert torch.equal(shipped.token_map, token_map)
    assert cfg.vocab_size == len(kept) + 1
    assert shipped.visual.conv1.weight.dtype == torch.float32


def test_shipped_model_encodes_images_and_texts(shipped):
    images = torch.randn(3, 3, 64, 64)
    ids = vop.tokenize(["a small red circle on the left", "the scene is empty"], context_length=32)
    with torch.no_grad():
        assert shipped.encode_image(images).shape == (3, 256)
        assert shipped.encode_text(ids).shape == (2, 256)
        # Eight text prompts fit after the longest caption (22 tokens with start and end).
        assert shipped.encode_text(ids[:, :30]).shape == (2, 256)


def test_unknown_words_share_one_row(shipped):
    ids = vop.tokenize(["an orange hexagon"], context_length=32)[0]
    body = ids[2 : int(ids.argmax())]  # after <sot> and "an": the unknown words' tokens
    assert body.numel() >= 2
    assert (shipped.token_map[body] == UNKNOWN_ROW).all()
    assert shipped.token_map[ids[1]] != UNKNOWN_ROW  # "an" is known
    emb = shipped.embed_tokens(body[None])[0]  # [tokens, width]
    assert torch.equal(emb, shipped.token_embedding.weight[UNKNOWN_ROW].expand_as(emb))


def test_shipped_asset_is_small():
    assert asset_path("tiny-synthetic").stat().st_size <= 10_000_000


def test_loading_twice_gives_identical_weights(shipped):
    again = backbone.load("tiny-synthetic")
    a, b = shipped.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert backbone.fingerprint(shipped) == backbone.fingerprint(again)


def test_shipped_model_loads_in_fp16():
    clip = backbone.load("tiny-synthetic", dtype=torch.float16)
    assert clip.visual.conv1.weight.dtype == torch.float16
    assert clip.token_map.dtype == torch.long


def test_shipped_metadata_records_how_it_was_made():
    meta = packaged.packaged_metadata("tiny-synthetic")
    assert meta["architecture"]["name"] == "tiny-synthetic"
    assert meta["command"].startswith("vop pretrain")
    assert meta["steps"] > 0 and meta["train_seconds"] > 0 and "seed" in meta
    assert meta["zero_shot"]["pairs"] == 1000
    assert meta["zero_shot"]["i2t_r1_attributes"] >= 90.0


@pytest.mark.slow
def test_shipped_zero_shot_figures_reproduce(shipped):
    meta = packaged.packaged_metadata("tiny-synthetic")["zero_shot"]
    got = evaluate_zero_shot(shipped, n=1000)
    assert abs(got["i2t_r1_attributes"] - meta["i2t_r1_attributes"]) <= 0.5
    assert abs(got["i2t_r1_exact"] - meta["i2t_r1_exact"]) <= 0.5


def test_missing_asset_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(packaged, "asset_path", lambda name: tmp_path / "absent.safetensors")
    with pytest.raises(FileNotFoundError, match="vop pretrain"):
        backbone.load("tiny-synthetic")
