"""The peers as registered methods and options (issue 15): the ``head`` axis on every
method, ``xpool``, ``dgl-linear`` / ``dgl``, the pairwise scorer every model has, and the
importers of the peers' checkpoints checked end to end (``vop.load(path, format=...)`` then
``model.score(ids, frames)``) against the independent transcriptions of each peer's forward
pass in test_peers_modules.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vop
import vop.backbone as backbone
from vop.backbone.config import CLIPConfig
from vop.checkpoint import load_checkpoint, read_meta, save_checkpoint
from vop.methods.temporal_heads import frame_feature_scale
from vop.model.accounting import count_parameters

from test_peers_modules import (D64, XPoolRef, _LargestTensor, assert_parity, c4c_pool, c4c_seqlstm,
                                c4c_seqtransf, clip4clip_checkpoint, dgl_checkpoint, dgl_text, dgl_visual,
                                randomize, seqtransf_state, xpool_checkpoint, xpool_sims)

CAPTIONS = ["a red circle moves and ends up on the right", "an empty scene", "two squares swap places"]


# --------------------------------------------------------------------------- counts
def test_vop_params_lists_the_peers_exactly_on_vit_b32():
    counts = {r.method: r.trainable for r in count_parameters("ViT-B-32")}
    assert counts["dgl-linear"] == 827_392
    assert counts["dgl"] == 9_575_168
    assert counts["xpool"] - counts["full"] == 1_316_352  # full fine-tuning + the pooling
    heads = {h: {r.method: r.trainable for r in count_parameters("ViT-B-32", head=h)} for h in ("seqlstm", "seqtransf")}
    for method in ("full", "vop", "vop-fc"):
        assert heads["seqlstm"][method] - counts[method] == 2_101_248
        assert heads["seqtransf"][method] - counts[method] == 12_648_960
    assert heads["seqtransf"]["dgl"] == counts["dgl"]  # DGL has no pooled frames: no head option


# --------------------------------------------------------------------------- heads
def test_mean_head_changes_nothing_and_heads_draw_after_the_method(clip, frames):
    torch.manual_seed(3)
    plain = vop.create("vop", clip)
    torch.manual_seed(3)
    mean = vop.create("vop", backbone.load("tiny"), head="mean")
    torch.manual_seed(3)
    lstm = vop.create("vop", backbone.load("tiny"), head="seqlstm")
    assert mean.head is None and list(mean.trainable_state_dict()) == list(plain.trainable_state_dict())
    for name, t in plain.trainable_state_dict().items():
        assert torch.equal(mean.trainable_state_dict()[name], t) and torch.equal(lstm.trainable_state_dict()[name], t)
    assert {n for n in lstm.trainable_state_dict() if n.startswith("head.")} == {
        f"head.lstm_visual.{k}_l0" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    with torch.no_grad():
        assert torch.equal(mean.encode_video(frames), plain.encode_video(frames))


@pytest.mark.parametrize("head", ["seqlstm", "seqtransf"])
def test_heads_make_mean_pooling_order_aware(head, clip, frames):
    for method in ("zero-shot", "vop"):
        plain, headed = vop.create(method, clip), vop.create(method, backbone.load("tiny"), head=head)
        assert not plain.sees_frame_order and headed.sees_frame_order
        with torch.no_grad():
            assert torch.equal(plain.encode_video(frames.flip(1)), plain.encode_video(frames))
            assert (headed.encode_video(frames.flip(1)) - headed.encode_video(frames)).abs().max() > 1e-6
    model = vop.create("vop", clip, head=head)
    head_params = {n: p for n, p in model.named_parameters() if n.startswith("head.")}
    optimiser = torch.optim.SGD(head_params.values(), lr=0.1)
    for _ in range(2):  # a seqtransf head starts as the identity: its inner layers get gradients from step 2
        optimiser.zero_grad()
        _, text, _ = model(frames, model.tokenize(CAPTIONS[:2]))
        (text @ model.encode_video(frames).T).sum().backward()
        optimiser.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head_params.values())


def _square_backbone() -> backbone.CLIP:
    """A tiny CLIP whose text width equals its embedding width (as in every OpenAI CLIP)."""
    cfg = CLIPConfig(64, 32, 2, 64, 16, context_length=24, vocab_size=49408, transformer_width=64,
                     transformer_heads=2, transformer_layers=3, name="square")
    torch.manual_seed(0)
    return backbone.CLIP(cfg)


def test_seqtransf_starts_from_the_text_tower_as_clip4clip(clip):
    square = _square_backbone()
    model = vop.create("full", square, head="seqtransf")
    assert len(model.head.blocks) == 3  # CLIP4Clip's 4, capped by the text tower's 3
    assert torch.equal(model.head.frame_position_embeddings.weight, square.positional_embedding)
    for mine, theirs in zip(model.head.blocks, square.text_blocks):
        for (n, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), n
        assert mine.ln_1.eps == 1e-12  # CLIP4Clip's TF LayerNorm, not CLIP's 1e-5
    assert vop.create("full", square, head="seqtransf", head_layers=2).head.blocks.__len__() == 2
    with pytest.raises(ValueError, match="use head_init='identity'"):
        vop.create("full", clip, head="seqtransf", head_init="text")  # tiny: text width 128, embeddings 64
    auto = vop.create("full", clip, head="seqtransf")  # auto: the identity start where widths differ
    assert auto.head.width == 64
    feats = torch.randn(3, 5, 64)
    positions = auto.head.frame_position_embeddings.weight
    with torch.no_grad():
        torch.testing.assert_close(auto.head(feats), 2 * feats + positions[:5], rtol=1e-6, atol=1e-6)  # identity blocks
    assert positions.std().item() == pytest.approx(frame_feature_scale(clip), rel=0.1)  # the features' scale
    torch.manual_seed(0)
    random = vop.create("full", clip, head="seqtransf", head_init="random")  # CLIP4Clip's fresh init, kept
    assert random.head.frame_position_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert all(b.attn.out_proj.weight.abs().sum() > 0 for b in random.head.blocks)
    with pytest.raises(ValueError, match="head must be one of"):
        vop.create("vop", clip, head="tight")
    with pytest.raises(ValueError, match="do not apply to method 'dgl'"):
        vop.create("dgl", clip, head="seqlstm")


def test_head_checkpoint_round_trip_records_the_head(clip, frames, tmp_path):
    model = vop.create("vop", clip, head="seqtransf", head_lr_scale=10.0)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(tmp_path / "ck", model, backbone_source="tiny")
    meta = read_meta(tmp_path / "ck")
    assert meta["method"]["head"] == "seqtransf" and meta["method"]["head_lr_scale"] == 10.0
    loaded, _ = load_checkpoint(tmp_path / "ck", backbone.load("tiny"))
    ids = model.tokenize(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(loaded.score(ids, frames), model.score(ids, frames))
    scales = {g["lr_scale"]: len(g["params"]) for g in model.parameter_groups()}
    assert scales[10.0] == len([n for n in model.trainable_parameters() if n.startswith("head.")])


# --------------------------------------------------------------------------- score
@pytest.mark.parametrize("method,options", [("zero-shot", {}), ("vop-fc", {}), ("vop", {"head": "seqlstm"}),
                                            ("dgl-linear", {}), ("dgl", {})])
def test_score_is_the_dot_product_for_independent_methods(method, options, clip, frames):
    model = vop.create(method, clip, **options).eval()
    ids = model.tokenize(CAPTIONS)
    with torch.no_grad():
        video, text, _ = model(frames, ids)
        scores = model.score(ids, frames)
    assert not model.text_conditioned and scores.shape == (3, 2)
    torch.testing.assert_close(scores, text @ video.T, rtol=0, atol=1e-6)
    feats = model.frame_features(frames)
    assert feats.shape[:1] == (2,) and feats.shape[-1] == 64
    torch.testing.assert_close(model.score_features(model.text_features(ids), feats, chunk=1), scores, rtol=0, atol=1e-6)


def test_xpool_scores_pairwise_as_xpool(clip, frames):
    model = vop.create("xpool", clip).eval()
    assert model.text_conditioned and not model.sees_frame_order
    randomize(model.pool)
    ids = model.tokenize(CAPTIONS)
    ref = XPoolRef(64, 1).eval()
    ref.load_state_dict(model.pool.state_dict())
    with torch.no_grad():
        text, frame_feats = clip.encode_text(ids), clip.encode_image(frames.flatten(0, 1)).view(2, 12, -1)
        expected = xpool_sims(text, ref(text, frame_feats))
        scores = model.score(ids, frames)
        assert_parity(scores, expected)
        video, text_emb, _ = model(frames, ids)  # the text-independent mean, for recall
        assert (scores - text_emb @ video.T).abs().max() > 1e-3
        many_text = model.text_features(ids).repeat(17, 1)  # 51 captions x 40 videos
        many_feats = model.frame_features(frames).repeat(20, 1, 1)
        with _LargestTensor() as spy:
            many = model.score_features(many_text, many_feats, chunk=5)
        chunked = many[:3, :2]
    # keys / values of every video, or one chunk's pooled features: never [N_v, N_t, D]
    assert spy.largest <= max(40 * 12 * 64, 5 * 51 * 64, 51 * 40) < 40 * 51 * 64
    assert_parity(chunked, expected)
    model.train()
    (model.clip.logit_scale.exp() * model.score(ids, frames)).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("pool_frames.cross_attn.q"))


def test_xpool_lr_scale_and_dgl_frame_count(clip):
    model = vop.create("xpool", clip)
    groups = {g["lr_scale"]: len(g["params"]) for g in model.parameter_groups()}
    assert groups[30.0] == len(list(model.pool.parameters()))
    dgl = vop.create("dgl", clip, num_frames=4)
    assert dgl.num_frames == 4 and vop.create("dgl-linear", clip).num_frames is None
    with pytest.raises(ValueError, match="built for 4 frames"):
        dgl.encode_video(torch.zeros(1, 6, 3, 32, 32))
    with pytest.raises(ValueError, match="no per-frame embeddings"):
        dgl.encode_frames(torch.zeros(1, 4, 3, 32, 32))
    with pytest.raises(ValueError, match="dgl_text_prompts must be 6"):
        vop.create("dgl-linear", clip, dgl_local_prompts=3)


# --------------------------------------------------------------------------- importers
@pytest.fixture
def clip64():
    return backbone.load("tiny").double().eval().requires_grad_(False)


def _inputs(model, n_videos=3):
    frames = torch.randn(n_videos, 12, 3, 32, 32, dtype=D64, generator=torch.Generator().manual_seed(7))
    return model.tokenize(CAPTIONS), frames


def _plain_towers(clip, ids, frames):
    text = clip.encode_text(ids)
    return text, clip.encode_image(frames.flatten(0, 1)).view(frames.shape[0], frames.shape[1], -1)


@pytest.mark.parametrize("head", ["mean", "seqlstm", "seqtransf"])
def test_clip4clip_import_scores_as_clip4clip(head, clip64, tmp_path):
    width = clip64.config.embed_dim
    torch.manual_seed(4)
    lstm = torch.nn.LSTM(width, width, batch_first=True).double()
    state = {}
    if head == "seqlstm":
        state = {f"lstm_visual.{k}": v.clone() for k, v in lstm.state_dict().items()}
        state["frame_position_embeddings.weight"] = torch.randn(32, width, dtype=D64)  # created, never read
    elif head == "seqtransf":
        state = seqtransf_state(width, 2, clip64.config.context_length)
    torch.save(clip4clip_checkpoint(clip64, state), tmp_path / "pytorch_model.bin.4")
    model = vop.load(tmp_path / "pytorch_model.bin.4", format="clip4clip", dtype=D64)
    assert model.config.method == "full" and model.config.head == head
    ids, frames = _inputs(model)
    with torch.no_grad():
        scores = model.score(ids, frames)
        text, frame_feats = _plain_towers(clip64, ids, frames)
        mask = torch.ones(frames.shape[:2], dtype=D64)
        if head == "seqlstm":
            frame_feats = c4c_seqlstm(lstm, frame_feats, mask)
        elif head == "seqtransf":
            frame_feats = c4c_seqtransf(state, width, 2, 2, frame_feats, mask)
        expected = F.normalize(text, dim=-1) @ c4c_pool(frame_feats, mask).T
    assert_parity(scores, expected)


def test_xpool_import_scores_as_xpool(clip64, tmp_path):
    ref = randomize(XPoolRef(clip64.config.embed_dim, 1)).double().eval()
    torch.save(xpool_checkpoint(clip64, ref), tmp_path / "model_best.pth")
    model = vop.load(tmp_path / "model_best.pth", format="xpool", dtype=D64)
    assert model.config.method == "xpool" and model.text_conditioned
    ids, frames = _inputs(model)
    with torch.no_grad():
        text, frame_feats = _plain_towers(clip64, ids, frames)
        assert_parity(model.score(ids, frames, chunk=2), xpool_sims(text, ref(text, frame_feats)))


@pytest.mark.parametrize("variant", ["linear", "transformer"])
def test_dgl_import_scores_as_dgl(variant, clip64, tmp_path):
    cfg = clip64.config
    ck = dgl_checkpoint(clip64, variant, 12)
    torch.save(ck, tmp_path / "dgl.pth")
    model = vop.load(tmp_path / "dgl.pth", format="dgl", dtype=D64)
    assert model.config.method == ("dgl-linear" if variant == "linear" else "dgl")
    assert model.model.num_frames == (12 if variant == "transformer" else None)  # the Retriever defaults to 12
    ids, frames = _inputs(model, 2)
    theirs = {k[len("module.clip."):]: v for k, v in ck["state_dict"].items()}
    with torch.no_grad():
        video, _ = dgl_visual(clip64, theirs, variant, frames.flatten(0, 1), 12, cfg.vision_layers, 8, 4)
        text = dgl_text(clip64, theirs, variant, ids, cfg.vision_layers, 8, 4, cfg.vision_width)
        assert_parity(model.score(ids, frames), F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).T)
    other = "transformer" if variant == "linear" else "linear"
    with pytest.raises(ValueError, match=f"variant={variant!r}"):
        vop.load(tmp_path / "dgl.pth", format="dgl", variant=other)


def test_importers_name_bad_requests(clip64, tmp_path):
    torch.save(clip4clip_checkpoint(clip64, {}), tmp_path / "c4c.bin")
    with pytest.raises(ValueError, match="unknown checkpoint format 'clip'"):
        vop.load(tmp_path / "c4c.bin", format="clip")
    with pytest.raises(ValueError, match="head= applies to format='clip4clip' only"):
        vop.load(tmp_path / "c4c.bin", format="xpool", head="seqtransf")
    with pytest.raises(ValueError, match="meanP checkpoint"):
        vop.load(tmp_path / "c4c.bin", format="clip4clip", head="seqlstm")
    with pytest.raises(ValueError, match="Hugging Face CLIPModel"):
        vop.load(tmp_path / "c4c.bin", format="xpool")
    torch.save({**clip4clip_checkpoint(clip64, {}), "similarity_dense.weight": torch.zeros(1, 64)}, tmp_path / "t.bin")
    with pytest.raises(ValueError, match="tightTransf"):
        vop.load(tmp_path / "t.bin", format="clip4clip")
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        vop.load(tmp_path / "missing.bin", format="dgl")



def test_vop_params_lists_the_peers_and_heads_with_their_exact_counts(capsys):
    from vop.cli import main

    assert main(["params", "--backbone", "ViT-B-32"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line and line.split()[0] != "(%"}
    assert rows["dgl-linear"] == "827,392" and rows["dgl"] == "9,575,168"
    assert rows["seqlstm"] == "2,101,248" and rows["seqtransf"] == "12,648,960"
    xpool_head = next(line for line in out.splitlines() if line.startswith("xpool head"))
    assert xpool_head.split()[2] == "1,316,352"


def test_frame_feature_scale_is_the_embedding_scale_from_the_weights():
    clip = _square_backbone()
    with torch.no_grad():
        clip.visual.ln_post.weight.fill_(2.0)
        width, dim = clip.visual.proj.shape
        q, _ = torch.linalg.qr(torch.randn(width, width))
        clip.visual.proj.copy_(0.5 * q[:, :dim])  # orthonormal columns of norm 0.5
    assert frame_feature_scale(clip) == pytest.approx(1.0, rel=1e-5)  # 2.0 x 0.5


def test_vop_params_on_a_backbone_whose_seqtransf_starts_as_the_identity(capsys):
    from vop.cli import main

    assert main(["params", "--backbone", "tiny"]) == 0  # counted on the meta device: no values to scale by
    assert "seqtransf" in capsys.readouterr().out


@pytest.mark.slow
def test_the_head_probe_benchmark_trains_a_seqtransf_head_to_see_order():
    """benchmarks/head_probe.py on a few synthetic videos: the identity-start head fits the
    training pairs' order (an order-blind head scores exactly 50 %)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "head_probe.py"
    run = subprocess.run([sys.executable, str(script), "--train-videos", "16", "--val-videos", "8", "--steps", "100",
                          "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"encoded 16 train and 8 val videos .*; [1-9]\d* val pairs", run.stdout)
    train_pair = float(re.search(r"step 100: loss [\d.]+, val pair [\d.]+ %, train pair ([\d.]+) %", run.stdout)[1])
    assert train_pair > 75.0, run.stdout
