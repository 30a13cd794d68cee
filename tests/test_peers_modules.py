"""The peer methods' building blocks (CLIP4Clip's heads, X-Pool's pooling, DGL's prompts
and towers) against independent transcriptions of each peer's forward pass, written here
in plain torch after the peers' code structure (``nn.MultiheadAttention`` on ``[L, N, D]``,
X-Pool's matmul pooling, DGL's two attention calls), fed with checkpoints written in each
peer's key layout and imported through :mod:`vop.methods.peer_keys`."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import vop.backbone as backbone
from vop.backbone.config import named_config
from vop.methods import peer_keys
from vop.methods.dgl import DGLPrompts, dgl_sequence, encode_text, encode_video, global_local_layer
from vop.methods.heads import SeqLSTM, SeqTransf
from vop.methods.xpool import XPoolHead

D64 = torch.float64


def assert_parity(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """The acceptance bar: cosine >= 0.9999 per row and max relative error < 1e-4."""
    assert ours.shape == ref.shape
    a, b = ours.reshape(-1, ours.shape[-1]), ref.reshape(-1, ref.shape[-1])
    assert F.cosine_similarity(a, b, dim=-1).min() >= 0.9999
    assert ((a - b).abs().max() / b.abs().max()) < 1e-4


def randomize(module: nn.Module, std: float = 0.2) -> nn.Module:
    """Random weights everywhere (identity and zero initialisations hide mistakes)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            centre = 1.0 if p.ndim == 1 and name.endswith("weight") else 0.0  # LayerNorm gains near 1
            p.copy_(centre + std * torch.randn_like(p))
    return module


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- counts
def test_parameter_counts_on_vit_b32_shapes():
    cfg = named_config("ViT-B-32")
    with torch.device("meta"):
        assert n_params(SeqLSTM(512)) == 2_101_248
        assert n_params(SeqTransf(512, 8)) == 12_648_960
        assert n_params(XPoolHead(512, heads=1)) == 1_316_352
        assert n_params(DGLPrompts(cfg, "linear")) == 827_392
        assert n_params(DGLPrompts(cfg, "transformer", frames=12)) == 9_575_168


# --------------------------------------------------------------------------- CLIP4Clip
def c4c_seqlstm(lstm: nn.LSTM, visual_output: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """CLIP4Clip modeling.py, _loose_similarity, sim_header == 'seqLSTM'."""
    visual_output_original = visual_output
    visual_output = pack_padded_sequence(visual_output, torch.sum(video_mask, dim=-1).cpu(),
                                         batch_first=True, enforce_sorted=False)
    visual_output, _ = lstm(visual_output)
    visual_output, _ = pad_packed_sequence(visual_output, batch_first=True)
    visual_output = torch.cat((visual_output, visual_output_original[:, visual_output.size(1):, ...].contiguous()), dim=1)
    return visual_output + visual_output_original


class TFLayerNorm(nn.Module):
    """CLIP4Clip until_module.LayerNorm (TF style, eps 1e-12)."""

    def __init__(self, hidden_size, eps=1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.variance_epsilon)
        return self.weight * x + self.bias


class C4CBlock(nn.Module):
    """CLIP4Clip module_cross.ResidualAttentionBlock."""

    def __init__(self, d_model: int, n_head: int, tile: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = TFLayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELURef()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = TFLayerNorm(d_model)
        self.n_head, self.tile = n_head, tile

    def attention(self, x, attn_mask):
        # CLIP4Clip: repeat(n_head, 1, 1); ``tile=False`` is the per-video layout MHA expects.
        attn_mask_ = attn_mask.repeat(self.n_head, 1, 1) if self.tile else attn_mask.repeat_interleave(self.n_head, 0)
        return self.attn(x, x, x, need_weights=False, attn_mask=attn_mask_)[0]

    def forward(self, x, attn_mask):
        x = x + self.attention(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class QuickGELURef(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def c4c_seqtransf(state: dict, width: int, heads: int, layers: int, visual_output, video_mask, tile=True):
    """CLIP4Clip modeling.py, _loose_similarity, sim_header == 'seqTransf', from a CLIP4Clip
    state dict (frame_position_embeddings.weight, transformerClip.resblocks.*)."""
    pos = nn.Embedding(*state["frame_position_embeddings.weight"].shape).to(visual_output.dtype)
    pos.weight.data.copy_(state["frame_position_embeddings.weight"])
    blocks = [C4CBlock(width, heads, tile).to(visual_output.dtype) for _ in range(layers)]
    for i, block in enumerate(blocks):
        block.load_state_dict({k[len(f"transformerClip.resblocks.{i}."):]: v for k, v in state.items()
                               if k.startswith(f"transformerClip.resblocks.{i}.")})
    visual_output_original = visual_output
    seq_length = visual_output.size(1)
    position_ids = torch.arange(seq_length, dtype=torch.long).unsqueeze(0).expand(visual_output.size(0), -1)
    visual_output = visual_output + pos(position_ids)
    extended_video_mask = (1.0 - video_mask.unsqueeze(1)) * -1000000.0
    extended_video_mask = extended_video_mask.expand(-1, video_mask.size(1), -1)
    x = visual_output.permute(1, 0, 2)  # NLD -> LND
    for block in blocks:
        x = block(x, extended_video_mask)
    return x.permute(1, 0, 2) + visual_output_original


def c4c_pool(visual_output, video_mask):
    """CLIP4Clip's loose score, video side: per-frame norm, masked mean, norm."""
    visual_output = visual_output / visual_output.norm(dim=-1, keepdim=True)
    m = video_mask.to(visual_output.dtype).unsqueeze(-1)
    out = (visual_output * m).sum(1) / m.sum(1).clamp(min=1.0)
    return out / out.norm(dim=-1, keepdim=True)


def ragged_mask(b: int, f: int, lengths: list[int]) -> torch.Tensor:
    return (torch.arange(f)[None] < torch.tensor(lengths)[:, None]).to(D64)


def clip4clip_checkpoint(clip, head_state: dict) -> dict:
    """A CLIP4Clip pytorch_model.bin: the model's state_dict, no wrapper, no 'module.'."""
    sd = {f"clip.{k}": v.clone() for k, v in clip.state_dict().items()}
    sd.update(head_state)
    return sd


def test_seqlstm_equals_clip4clip_with_ragged_frames():
    torch.manual_seed(1)
    width = 16
    lstm = nn.LSTM(width, width, batch_first=True).double()
    ckpt = clip4clip_checkpoint(backbone.load("tiny"), {
        f"lstm_visual.{k}": v.clone() for k, v in lstm.state_dict().items()})
    ckpt["frame_position_embeddings.weight"] = torch.randn(77, width, dtype=D64)  # created, never used
    head = SeqLSTM(width).double()
    head.load_state_dict(peer_keys.clip4clip_head_state(ckpt, "seqlstm"))  # strict
    x = torch.randn(3, 6, width, dtype=D64)
    mask = ragged_mask(3, 6, [6, 3, 1])
    ours, ref = head(x, mask), c4c_seqlstm(lstm, x, mask)
    valid = mask.bool()
    assert_parity(ours[valid], ref[valid])
    assert torch.equal(ours[~valid], x[~valid])  # padding copied through
    assert_parity(c4c_pool(ours, mask), c4c_pool(ref, mask))
    assert not torch.allclose(ours[valid], x[valid])  # the LSTM did something
    # without a mask every frame is real
    assert_parity(head(x), c4c_seqlstm(lstm, x, torch.ones(3, 6, dtype=D64)))


def seqtransf_state(width: int, layers: int, positions: int) -> dict:
    """Random CLIP4Clip seqTransf tensors under CLIP4Clip's names (PEERS.md)."""
    sd = {"frame_position_embeddings.weight": torch.randn(positions, width, dtype=D64) * 0.3}
    for i in range(layers):
        p = f"transformerClip.resblocks.{i}."
        sd.update({
            p + "attn.in_proj_weight": torch.randn(3 * width, width, dtype=D64) / math.sqrt(width),
            p + "attn.in_proj_bias": torch.randn(3 * width, dtype=D64) * 0.1,
            p + "attn.out_proj.weight": torch.randn(width, width, dtype=D64) / math.sqrt(width),
            p + "attn.out_proj.bias": torch.randn(width, dtype=D64) * 0.1,
            p + "ln_1.weight": 1 + 0.1 * torch.randn(width, dtype=D64), p + "ln_1.bias": 0.1 * torch.randn(width, dtype=D64),
            p + "mlp.c_fc.weight": torch.randn(4 * width, width, dtype=D64) / math.sqrt(width),
            p + "mlp.c_fc.bias": torch.randn(4 * width, dtype=D64) * 0.1,
            p + "mlp.c_proj.weight": torch.randn(width, 4 * width, dtype=D64) / math.sqrt(4 * width),
            p + "mlp.c_proj.bias": torch.randn(width, dtype=D64) * 0.1,
            p + "ln_2.weight": 1 + 0.1 * torch.randn(width, dtype=D64), p + "ln_2.bias": 0.1 * torch.randn(width, dtype=D64),
        })
    return sd


@pytest.mark.parametrize("tiling", [False, True])
def test_seqtransf_equals_clip4clip(tiling):
    torch.manual_seed(2)
    width, heads, layers, positions = 32, 4, 2, 20
    state = seqtransf_state(width, layers, positions)
    ckpt = clip4clip_checkpoint(backbone.load("tiny"), state)
    head = SeqTransf(width, heads, layers=layers, positions=positions, clip4clip_mask_tiling=tiling).double()
    head.load_state_dict(peer_keys.clip4clip_head_state(ckpt, "seqtransf"))
    x = torch.randn(3, 7, width, dtype=D64)
    full = torch.ones(3, 7, dtype=D64)
    assert_parity(head(x, full), c4c_seqtransf(state, width, heads, layers, x, full, tile=True))
    assert_parity(head(x), c4c_seqtransf(state, width, heads, layers, x, full, tile=True))
    mask = ragged_mask(3, 7, [7, 4, 2])
    valid = mask.bool()
    ours = head(x, mask)
    ref = c4c_seqtransf(state, width, heads, layers, x, mask, tile=tiling)
    assert_parity(ours[valid], ref[valid])
    other = c4c_seqtransf(state, width, heads, layers, x, mask, tile=not tiling)
    assert (ours[valid] - other[valid]).abs().max() > 1e-3  # the two mask layouts differ on ragged videos
    assert torch.equal(ours[~valid], x[~valid])
    # tiny activations, where the LayerNorm epsilon (1e-12, not CLIP's 1e-5) matters
    quiet = dict(state, **{"frame_position_embeddings.weight": state["frame_position_embeddings.weight"] * 1e-4})
    head.load_state_dict(peer_keys.clip4clip_head_state(clip4clip_checkpoint(backbone.load("tiny"), quiet), "seqtransf"))
    assert_parity(head(x * 1e-4), c4c_seqtransf(quiet, width, heads, layers, x * 1e-4, full))


def test_seqtransf_eps_is_the_tf_layernorms():
    head = SeqTransf(16, 2, layers=1, positions=8)
    assert head.blocks[0].ln_1.eps == 1e-12 and head.blocks[0].ln_2.eps == 1e-12
    assert SeqTransf(16, 2, layers=1, positions=8, ln_eps=1e-5).blocks[0].ln_1.eps == 1e-5


def test_seqtransf_init_from_clip_text_copies_positions_and_blocks(clip):
    cfg = clip.config
    head = SeqTransf(cfg.transformer_width, cfg.transformer_heads, layers=2,
                     positions=cfg.context_length, ln_eps=1e-5)
    head.init_from_clip_text(clip)
    assert torch.equal(head.frame_position_embeddings.weight, clip.positional_embedding)
    x = torch.randn(2, 5, cfg.transformer_width)
    for mine, theirs in zip(head.blocks, clip.text_blocks):
        torch.testing.assert_close(mine(x), theirs(x))  # the same function (eps set to CLIP's here)
    with pytest.raises(ValueError, match="positions=32"):
        SeqTransf(cfg.transformer_width, cfg.transformer_heads, positions=77).init_from_clip_text(clip)
    with pytest.raises(ValueError, match="cannot be initialised"):
        SeqTransf(cfg.transformer_width, cfg.transformer_heads, layers=4,
                  positions=cfg.context_length).init_from_clip_text(clip)


@pytest.mark.parametrize("make", [lambda: SeqLSTM(16), lambda: SeqTransf(16, 2, layers=2, positions=8)])
def test_heads_gradients_and_order_awareness(make):
    head = make()
    x = torch.randn(2, 6, 16, requires_grad=True)
    out = head(x)
    assert out.shape == (2, 6, 16)
    out.pow(2).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    with torch.no_grad():
        perm = torch.tensor([5, 0, 3, 1, 4, 2])
        pooled = c4c_pool(head(x), torch.ones(2, 6))
        pooled_perm = c4c_pool(head(x[:, perm]), torch.ones(2, 6))
    assert (pooled - pooled_perm).abs().max() > 1e-4  # order-aware, unlike mean pooling


def test_heads_refuse_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, F, 16\)"):
        SeqLSTM(16)(torch.randn(2, 16))
    with pytest.raises(ValueError, match="frame mask"):
        SeqTransf(16, 2, positions=8)(torch.randn(2, 3, 16), torch.ones(2, 4))
    with pytest.raises(ValueError, match="exceed"):
        SeqTransf(16, 2, positions=8)(torch.randn(2, 9, 16))


# --------------------------------------------------------------------------- X-Pool
class XPoolMHARef(nn.Module):
    """X-Pool modules/transformer.py MultiHeadedAttention."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, text_embeds, video_embeds):
        num_texts, _ = text_embeds.shape
        q = self.q_proj(text_embeds)
        q = q.reshape(num_texts, self.num_heads, self.head_dim)
        q = q.permute(1, 2, 0)
        num_vids, num_frames, _ = video_embeds.shape
        k = self.k_proj(video_embeds)
        k = k.reshape(num_vids, num_frames, self.num_heads, self.head_dim)
        k = k.permute(0, 2, 1, 3)
        v = self.v_proj(video_embeds)
        v = v.reshape(num_vids, num_frames, self.num_heads, self.head_dim)
        v = v.permute(0, 2, 3, 1)
        attention_logits = k @ q
        attention_logits = attention_logits / math.sqrt(self.head_dim)
        attention_weights = F.softmax(attention_logits, dim=2)
        attention = v @ attention_weights
        attention = attention.permute(0, 3, 1, 2)
        attention = attention.reshape(num_vids, num_texts, self.embed_dim)
        return self.out_proj(attention)


class XPoolRef(nn.Module):
    """X-Pool modules/transformer.py Transformer (pool_frames)."""

    def __init__(self, embed_dim, num_heads, dropout=0.3):
        super().__init__()
        self.cross_attn = XPoolMHARef(embed_dim, num_heads)
        self.linear_proj = nn.Linear(embed_dim, embed_dim)
        self.layer_norm1 = nn.LayerNorm(embed_dim)
        self.layer_norm2 = nn.LayerNorm(embed_dim)
        self.layer_norm3 = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text_embeds, video_embeds):
        text_embeds = self.layer_norm1(text_embeds)
        video_embeds = self.layer_norm1(video_embeds)
        attn_out = self.cross_attn(text_embeds, video_embeds)
        attn_out = self.layer_norm2(attn_out)
        linear_out = self.linear_proj(attn_out)
        out = attn_out + self.dropout(linear_out)
        return self.layer_norm3(out)


def xpool_sims(text_embeds, vid_embeds_pooled):
    """X-Pool modules/metrics.py sim_matrix_training, pooling_type 'transformer'."""
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    vid_embeds_pooled = vid_embeds_pooled / vid_embeds_pooled.norm(dim=-1, keepdim=True)
    vid_embeds_pooled = vid_embeds_pooled.permute(1, 2, 0)
    text_embeds = text_embeds.unsqueeze(1)
    return torch.bmm(text_embeds, vid_embeds_pooled).squeeze(1)


def xpool_checkpoint(clip, ref: XPoolRef) -> dict:
    """X-Pool's {epoch, state_dict, optimizer}: HF CLIPModel under clip., head under pool_frames."""
    from vop.backbone.convert import to_huggingface

    sd = {f"clip.{k}": v.clone() for k, v in to_huggingface(clip.state_dict()).items()}
    sd.update({f"pool_frames.{k}": v.clone() for k, v in ref.state_dict().items()})
    return {"epoch": 3, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}


@pytest.mark.parametrize("heads", [1, 4])
def test_xpool_equals_reference(heads, clip):
    width = 32
    ref = randomize(XPoolRef(width, heads)).double().eval()
    ckpt = xpool_checkpoint(clip, ref)
    head = XPoolHead(width, heads).double().eval()
    head.load_state_dict(peer_keys.xpool_head_state(ckpt))  # strict
    text, frames = torch.randn(5, width, dtype=D64), torch.randn(7, 6, width, dtype=D64)
    pooled = head(text, frames)
    assert pooled.shape == (7, 5, width)
    with torch.no_grad():
        expected = ref(text, frames)
    assert_parity(pooled, expected)
    sims = xpool_sims(text, expected)  # [N_t, N_v]
    assert_parity(head.score(text, frames, chunk=3), sims)
    assert_parity(head.score(text, frames, chunk=100), sims)


def test_xpool_initialisation_is_xpools():
    head = XPoolHead(8)
    for name, p in head.named_parameters():
        if ("proj" in name or "linear" in name) and name.endswith("weight"):
            assert torch.equal(p, torch.eye(8)), name
        elif "proj" in name or "linear" in name:
            assert torch.equal(p, torch.zeros(8)), name


def test_xpool_gradients_order_blindness_and_mask():
    head = randomize(XPoolHead(16, heads=2)).eval()
    text, frames = torch.randn(3, 16), torch.randn(4, 5, 16, requires_grad=True)
    head.score(text, frames, chunk=2).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert frames.grad.abs().sum() > 0
    with torch.no_grad():
        perm = torch.tensor([3, 1, 4, 0, 2])
        torch.testing.assert_close(head(text, frames[:, perm]), head(text, frames))  # order-blind
        mask = torch.ones(4, 5)
        mask[1, 3:] = 0
        masked = head(text, frames, mask)
        torch.testing.assert_close(masked[1], head(text, frames[1:2, :3])[0])  # padding ignored
        torch.testing.assert_close(masked[[0, 2, 3]], head(text, frames[[0, 2, 3]]))


class _LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_xpool_score_memory_is_bounded_by_the_chunk():
    head = XPoolHead(16).eval()
    n_t, n_v, f, chunk = 40, 60, 4, 5
    text, frames = torch.randn(n_t, 16), torch.randn(n_v, f, 16)
    with torch.no_grad(), _LargestTensor() as spy:
        scores = head.score(text, frames, chunk=chunk)
    assert scores.shape == (n_t, n_v)
    # the chunk's pooled features, the per-video keys / values and the score matrix:
    # never a [N_v, N_t, D] tensor
    bound = max(chunk * n_t * 16, n_v * f * 16, n_t * n_v)
    assert bound < n_v * n_t * 16
    assert spy.largest <= bound
    with torch.no_grad(), _LargestTensor() as spy_full:
        head(text, frames)
    assert spy_full.largest >= n_v * n_t * 16  # the unchunked pooling does hold one
    with pytest.raises(ValueError, match="chunk"):
        head.score(text, frames, chunk=0)


# --------------------------------------------------------------------------- DGL
def mha(block, dtype=D64) -> nn.MultiheadAttention:
    """nn.MultiheadAttention carrying a CLIP block's attention weights (DGL uses MHA)."""
    width = block.attn.out_proj.weight.shape[0]
    m = nn.MultiheadAttention(width, block.attn.heads).to(dtype)
    m.load_state_dict({k: v for k, v in block.attn.state_dict().items()})
    return m.eval()


def ln(x, mod):
    return F.layer_norm(x, x.shape[-1:], mod.weight, mod.bias, 1e-5)


def dgl_generate(ck: dict, variant: str, batch: int, depth: int, width: int, n_text: int, n_local: int,
                 heads: int):
    """DGL clip.py CLIP.encode_prompt, from the checkpoint's tensors (names after 'module.clip.')."""
    if variant == "transformer":
        n_tok = ck["unified_prompt_embedding.weight"].shape[0]
        tokens = torch.arange(n_tok).long().unsqueeze(0).expand(batch, -1)
        emb = F.embedding(tokens, ck["unified_prompt_embedding.weight"])
        emb = emb.view(batch, n_tok, depth, width).permute(2, 0, 1, 3)
        emb = emb.reshape(depth * batch, n_tok, width).permute(1, 0, 2)
        # PromptTransformer: one PromptResidualAttentionBlock, no mask
        block = nn.Module()
        p = "PromptTransformer.resblocks.0."
        attn = nn.MultiheadAttention(width, heads).to(D64)
        attn.load_state_dict({k[len(p + "attn."):]: v for k, v in ck.items() if k.startswith(p + "attn.")})
        x = emb
        h = F.layer_norm(x, (width,), ck[p + "ln_1.weight"], ck[p + "ln_1.bias"], 1e-5)
        x = x + attn(h, h, h, need_weights=False)[0]
        h = F.layer_norm(x, (width,), ck[p + "ln_2.weight"], ck[p + "ln_2.bias"], 1e-5)
        h = F.linear(h, ck[p + "mlp.c_fc.weight"], ck[p + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)
        x = x + F.linear(h, ck[p + "mlp.c_proj.weight"], ck[p + "mlp.c_proj.bias"])
        out = x.permute(1, 0, 2).view(depth, batch, n_tok, width)
        t = F.linear(out[:, :, :n_text], ck["unified_prompt_mlp.c_fc.weight"], ck["unified_prompt_mlp.c_fc.bias"])
        t = t * torch.sigmoid(1.702 * t)
        text = F.linear(t, ck["unified_prompt_mlp.c_proj.weight"], ck["unified_prompt_mlp.c_proj.bias"])
        return text, out[:, :, n_text:]
    vpe = ck["visual_prompt_embedding"].expand(batch, -1, -1)
    visual = vpe.view(batch, n_local, depth, width).permute(2, 0, 1, 3)
    pre = F.linear(visual, ck["prefix_text_prompt_proj_layer.weight"], ck["prefix_text_prompt_proj_layer.bias"])
    post = F.linear(visual, ck["postfix_text_prompt_proj_layer.weight"], ck["postfix_text_prompt_proj_layer.bias"])
    return torch.cat((pre, post), dim=2), visual


def dgl_block(block, x, video_frame, G):
    """DGL clip.py ResidualAttentionBlock.forward, visual=True, in [L, B, D]."""
    attn = mha(block)
    B = x.size(1)
    BT = B * video_frame
    dim = x.size(-1)
    visual_prompt, frame_token = x[:G, :, :], x[G:, :, :].reshape(-1, BT, dim)
    frame_token = ln(frame_token, block.ln_1)
    visual_prompt = ln(visual_prompt, block.ln_1)
    query1 = frame_token
    key1 = torch.zeros(G + query1.size(0), BT, dim, dtype=x.dtype)
    for i in range(0, BT, B):
        key1[:, i:i + B, :] = torch.cat((visual_prompt, query1[:, i:i + B, :]), dim=0)
    attention_output_frames = attn(query1, key1, key1, need_weights=False)[0].reshape(-1, B, dim)
    query2 = visual_prompt
    key2 = torch.cat((visual_prompt, frame_token.reshape(-1, B, dim)), dim=0)
    attention_output_prompt = attn(query2, key2, key2, need_weights=False)[0]
    x = x + torch.cat((attention_output_prompt, attention_output_frames), dim=0)
    return x + block.mlp(ln(x, block.ln_2))


def dgl_visual(clip, ck, variant, video, T, depth, n_text, n_local):
    """DGL clip.py VisualTransformer.forward + CLIP.encode_image (global_prompt0)."""
    v = clip.visual
    width = v.conv1.weight.shape[0]
    BT = video.shape[0]
    B = BT // T
    _, unified_visual_prompt = dgl_generate(ck, variant, B, depth, width, n_text, n_local, max(1, width // 64))
    x = v.conv1(video).reshape(BT, width, -1).permute(0, 2, 1)
    x = torch.cat([v.class_embedding + torch.zeros(BT, 1, width, dtype=x.dtype), x], dim=1)
    x = ln(x + v.positional_embedding, v.ln_pre)
    G = ck["visual.prompt_embeddings"].shape[1]

    def frame_prompt(layer):
        if variant == "transformer":
            return unified_visual_prompt[layer].reshape(B, T, n_local, width)
        return unified_visual_prompt[layer].view(B, n_local, width).unsqueeze(1).expand(-1, T, -1, -1)

    # incorporate_prompt
    x = x.view(B, T, x.size(-2), width)
    glob = ck["visual.prompt_embeddings"].expand(B, -1, -1)
    x_local = torch.cat((x[:, :, 0:1, :], frame_prompt(0), x[:, :, 1:, :]), dim=2).permute(0, 2, 1, 3).reshape(B, -1, width)
    x = torch.cat((glob, x_local), dim=1).permute(1, 0, 2)  # LND
    # forward_deep_prompt
    hidden = None
    for i, block in enumerate(v.blocks):
        if i == 0:
            hidden = dgl_block(block, x, T, G)
        else:
            if i < depth:
                p = frame_prompt(i).permute(2, 1, 0, 3)
                hg = hidden[:G]
                hl = hidden[G:].reshape(-1, T, B, width)
                hl = torch.cat((hl[:1], p, hl[1 + n_local:]), dim=0).reshape(-1, B, width)
                hidden = torch.cat((hg, hl), dim=0)
            hidden = dgl_block(block, hidden, T, G)
    hidden = hidden.permute(1, 0, 2)
    return (ln(hidden, v.ln_post) @ v.proj)[:, 0, :], hidden


def dgl_text(clip, ck, variant, text, depth, n_text, n_local, vision_width):
    """DGL clip.py CLIP.encode_text (incorporate_text_prompt, forward_deep_text_prompt)."""
    unified_text_prompt, _ = dgl_generate(ck, variant, text.shape[0], depth, vision_width, n_text, n_local,
                                          max(1, vision_width // 64))
    pre = n_text // 2
    L = text.shape[1]
    x = clip.token_embedding(text) + clip.positional_embedding[:L]
    prompt_token = torch.zeros(x.size(0), n_text + L)
    prompt_token[:, 0:1] = text[:, 0:1]
    prompt_token[:, pre + 1: pre + L] = text[:, 1:L]
    p0 = unified_text_prompt[0]
    x = torch.cat((x[:, 0:1], p0[:, :pre], x[:, 1:L], p0[:, pre:]), dim=1).permute(1, 0, 2)
    n = x.shape[0]
    mask = torch.zeros(n, n, dtype=x.dtype).fill_(float("-inf")).triu_(1)
    for i, block in enumerate(clip.text_blocks):  # DGL loops over its prompted layers = all of them
        if i > 0 and i < depth:
            p = unified_text_prompt[i].permute(1, 0, 2)
            x = torch.cat((x[:1], p[:pre], x[pre + 1: pre + L], p[pre:]), dim=0)
        h = ln(x, block.ln_1)
        x = x + mha(block)(h, h, h, need_weights=False, attn_mask=mask)[0]
        x = x + block.mlp(ln(x, block.ln_2))
    hidden = ln(x.permute(1, 0, 2), clip.ln_final) @ clip.text_projection
    return hidden[torch.arange(hidden.shape[0]), prompt_token.argmax(dim=-1)]


def dgl_checkpoint(clip, variant: str, frames: int, n_local=4, n_global=4, n_text=8) -> dict:
    """DGL's saved DDP model: {'state_dict': {'module.clip.*': ...}, 'optimizer', 'epoch'},
    with random prompt tensors under DGL's names (PEERS.md, section 3)."""
    cfg = clip.config
    wv, wt, depth = cfg.vision_width, cfg.transformer_width, cfg.vision_layers
    r = lambda *s, std=0.3: torch.randn(*s, dtype=D64) * std  # noqa: E731
    sd = {f"clip.{k}": v.clone() for k, v in clip.state_dict().items()}
    sd["clip.visual.prompt_embeddings"] = r(1, n_global, wv)
    sd["clip.visual.position_ids"] = torch.arange(cfg.num_patches + 1)[None]  # a buffer DGL saves
    if variant == "transformer":
        sd["clip.unified_prompt_embedding.weight"] = r(n_text + frames * n_local, depth * wv, std=1.0)
        p = "clip.PromptTransformer.resblocks.0."
        sd.update({p + "attn.in_proj_weight": r(3 * wv, wv, std=wv ** -0.5), p + "attn.in_proj_bias": r(3 * wv, std=0.1),
                   p + "attn.out_proj.weight": r(wv, wv, std=wv ** -0.5), p + "attn.out_proj.bias": r(wv, std=0.1),
                   p + "ln_1.weight": 1 + r(wv, std=0.1), p + "ln_1.bias": r(wv, std=0.1),
                   p + "mlp.c_fc.weight": r(4 * wv, wv, std=wv ** -0.5), p + "mlp.c_fc.bias": r(4 * wv, std=0.1),
                   p + "mlp.c_proj.weight": r(wv, 4 * wv, std=(4 * wv) ** -0.5), p + "mlp.c_proj.bias": r(wv, std=0.1),
                   p + "ln_2.weight": 1 + r(wv, std=0.1), p + "ln_2.bias": r(wv, std=0.1),
                   "clip.unified_prompt_mlp.c_fc.weight": r(2 * wv, wv, std=wv ** -0.5),
                   "clip.unified_prompt_mlp.c_fc.bias": r(2 * wv, std=0.1),
                   "clip.unified_prompt_mlp.c_proj.weight": r(wt, 2 * wv, std=(2 * wv) ** -0.5),
                   "clip.unified_prompt_mlp.c_proj.bias": r(wt, std=0.1)})
    else:
        sd["clip.visual_prompt_embedding"] = r(1, n_local, depth * wv)
        for side in ("prefix", "postfix"):
            sd[f"clip.{side}_text_prompt_proj_layer.weight"] = r(wt, wv, std=wv ** -0.5)
            sd[f"clip.{side}_text_prompt_proj_layer.bias"] = r(wt, std=0.1)
    return {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}, "epoch": 4}


def caption_ids(n: int, length: int, seed: int = 5) -> torch.Tensor:
    """SOT, random words, EOT at varying places, zero padding (CLIP's tokenizer layout)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        words = 2 + (i * 5) % (length - 3)
        ids[i, 0] = 49406
        ids[i, 1:1 + words] = torch.randint(300, 40000, (words,), generator=g)
        ids[i, 1 + words] = 49407
    return ids


@pytest.fixture
def clip64():
    return backbone.load("tiny").double().eval().requires_grad_(False)


@pytest.mark.parametrize("variant", ["linear", "transformer"])
def test_dgl_import_and_towers_equal_dgl(variant, clip64):
    clip, T, B = clip64, 12, 2
    cfg = clip.config
    ck = dgl_checkpoint(clip, variant, T)
    assert peer_keys.dgl_variant(ck) == variant
    prompts = DGLPrompts(cfg, variant, frames=T).double()
    prompts.load_state_dict(peer_keys.dgl_prompts_state(ck, variant))  # strict
    rebuilt = backbone.from_state_dict(peer_keys.backbone_state(ck, "dgl"), dtype=D64)
    for (k, a), b in zip(clip.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), k
    theirs = {k[len("module.clip."):]: v for k, v in ck["state_dict"].items()}
    video = torch.randn(B, T, 3, 32, 32, dtype=D64)
    with torch.no_grad():
        ours = encode_video(clip, prompts, video)
        ref, _ = dgl_visual(clip, theirs, variant, video.flatten(0, 1), T, cfg.vision_layers, 8, 4)
        assert ours.shape == (B, cfg.embed_dim)
        assert_parity(ours, ref)
        ids = caption_ids(5, 16)
        ours_t = encode_text(clip, prompts, ids)
        ref_t = dgl_text(clip, theirs, variant, ids, cfg.vision_layers, 8, 4, cfg.vision_width)
        assert_parity(ours_t, ref_t)
        # scores as DGL computes them: cosine x exp(logit_scale)
        s = F.normalize(ours_t, dim=-1) @ F.normalize(ours, dim=-1).T
        s_ref = F.normalize(ref_t, dim=-1) @ F.normalize(ref, dim=-1).T
        assert_parity(s, s_ref)


def test_dgl_layer_keeps_dgls_token_order(clip64):
    """One global-local layer on random tokens equals DGL's block on DGL's sequence."""
    b, f, s, g, w = 2, 3, 9, 4, clip64.config.vision_width
    block = clip64.visual.blocks[1]
    glob, frames = torch.randn(b, g, w, dtype=D64), torch.randn(b, f, s, w, dtype=D64)
    with torch.no_grad():
        new_glob, new_frames = global_local_layer(block, glob, frames)
        ref = dgl_block(block, dgl_sequence(glob, frames).transpose(0, 1), f, g).transpose(0, 1)
    assert_parity(dgl_sequence(new_glob, new_frames), ref)


def test_dgl_gradients_reach_exactly_the_prompts():
    clip = backbone.load("tiny").requires_grad_(False)
    for variant in ("linear", "transformer"):
        prompts = DGLPrompts(clip.config, variant, frames=4)
        video, ids = torch.randn(2, 4, 3, 32, 32), caption_ids(3, 16)
        generated = prompts()
        v = encode_video(clip, prompts, video, generated)
        t = encode_text(clip, prompts, ids, generated)
        (F.normalize(t, dim=-1) @ F.normalize(v, dim=-1).T).sum().backward()
        for name, p in prompts.named_parameters():
            if name.startswith("generator.postfix_proj."):
                # DGL's quirk: the postfix text prompts follow the end-of-text token and the
                # causal mask hides them from the feature, so this projection never learns.
                assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
            else:
                assert p.grad is not None and p.grad.abs().sum() > 0, (variant, name)
        assert all(p.grad is None for p in clip.parameters())


def test_dgl_linear_is_order_blind_and_transformer_is_not(clip64):
    video = torch.randn(2, 5, 3, 32, 32, dtype=D64)
    perm = torch.tensor([4, 2, 0, 3, 1])
    with torch.no_grad():
        linear = DGLPrompts(clip64.config, "linear").double()
        torch.testing.assert_close(encode_video(clip64, linear, video[:, perm]), encode_video(clip64, linear, video))
        transf = DGLPrompts(clip64.config, "transformer", frames=5).double()
        diff = encode_video(clip64, transf, video[:, perm]) - encode_video(clip64, transf, video)
    assert diff.abs().max() > 1e-6  # per-frame prompts tell frames apart


def test_dgl_text_postfix_prompts_are_invisible(clip64):
    prompts = DGLPrompts(clip64.config, "linear").double()
    ids = caption_ids(3, 16)
    with torch.no_grad():
        before = encode_text(clip64, prompts, ids)
        prompts.generator.postfix_proj.weight.normal_()
        after = encode_text(clip64, prompts, ids)
        prompts.generator.prefix_proj.weight.normal_()
        changed = encode_text(clip64, prompts, ids)
    torch.testing.assert_close(after, before)
    assert (changed - before).abs().max() > 1e-6


def test_dgl_refuses_bad_configs(clip64):
    cfg = clip64.config
    with pytest.raises(ValueError, match="frames="):
        DGLPrompts(cfg, "transformer", frames=None)
    with pytest.raises(ValueError, match="n_text must be 8"):
        DGLPrompts(cfg, "linear", n_text=6)
    with pytest.raises(ValueError, match="unknown DGL variant"):
        DGLPrompts(cfg, "mlp")
    with pytest.raises(ValueError, match="depth"):
        DGLPrompts(cfg, "linear", depth=cfg.vision_layers + 1)
    prompts = DGLPrompts(cfg, "transformer", frames=12).double()
    with pytest.raises(ValueError, match="12 frames"):
        encode_video(clip64, prompts, torch.randn(1, 8, 3, 32, 32, dtype=D64))


# --------------------------------------------------------------------------- key maps
def test_clip4clip_keys_round_trip(clip):
    head = randomize(SeqTransf(clip.config.transformer_width, clip.config.transformer_heads, positions=77))
    state = {k: v.clone() for k, v in head.state_dict().items()}
    ckpt = clip4clip_checkpoint(clip, state)
    assert set(state) == {"frame_position_embeddings.weight"} | {
        f"transformerClip.resblocks.{i}.{n}" for i in range(4) for n in (
            "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
            "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
            "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias")}  # CLIP4Clip's names, PEERS.md
    fresh = SeqTransf(clip.config.transformer_width, clip.config.transformer_heads, positions=77)
    fresh.load_state_dict(peer_keys.clip4clip_head_state(ckpt, "seqtransf"))
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    rebuilt = backbone.from_state_dict(peer_keys.backbone_state(ckpt, "clip4clip"))
    for (k, a), b in zip(clip.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="head='seqtransf'"):
        peer_keys.clip4clip_head_state(ckpt, "seqlstm")
    with pytest.raises(ValueError, match="head='mean'"):
        peer_keys.clip4clip_head_state(clip4clip_checkpoint(clip, {}), "seqtransf")
    with pytest.raises(ValueError, match="unknown CLIP4Clip head"):
        peer_keys.clip4clip_head_state(ckpt, "tightTransf")


def test_xpool_keys_round_trip(clip):
    ref = randomize(XPoolRef(clip.config.embed_dim, 1))
    ckpt = xpool_checkpoint(clip, ref)
    assert "pool_frames.cross_attn.q_proj.weight" in ckpt["state_dict"]
    head = XPoolHead(clip.config.embed_dim)
    head.load_state_dict(peer_keys.xpool_head_state(ckpt))
    for k, v in ref.state_dict().items():
        assert torch.equal(head.state_dict()[k], v), k
    rebuilt = backbone.from_state_dict(peer_keys.backbone_state(ckpt, "xpool"))
    for (k, a), b in zip(clip.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="Hugging Face"):
        peer_keys.backbone_state(clip4clip_checkpoint(clip, {}), "xpool")
    with pytest.raises(ValueError, match="pool_frames"):
        peer_keys.xpool_head_state(clip4clip_checkpoint(clip, {}))


def test_dgl_keys_refuse_the_wrong_variant(clip64):
    ck = dgl_checkpoint(clip64, "linear", 12)
    with pytest.raises(ValueError, match="variant='linear'"):
        peer_keys.dgl_prompts_state(ck, "transformer")
    with pytest.raises(ValueError, match="neither DGL generator"):
        peer_keys.dgl_variant(clip4clip_checkpoint(clip64, {}))
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        peer_keys.backbone_state(ck, "vop")
