"""Every fast path against the plain fp32 (or plain-expression) path it replaces: the
QuickGELU autograd function and in-place inference path, the native 16-bit LayerNorm,
and bf16 encoding (weights cast, or autocast) for every registered method. No timings."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vop
import vop.methods as methods
from vop.backbone import layers
from vop.backbone.reference import ReferenceLayerNorm, ReferenceQuickGELU, to_reference

ALL = methods.names()


def saved_bytes(fn, exclude) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    held = {t.untyped_storage().data_ptr() for t in exclude}
    return sum(n for p, n in seen.items() if p not in held)


# -- QuickGELU ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference"])
def test_quick_gelu_forward_is_bitwise_the_plain_expression(dtype, mode):
    x = (torch.randn(4, 7, 96) * 3).to(dtype).requires_grad_(mode == "grad")
    expected = ReferenceQuickGELU()(x.detach())
    ctx = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference": torch.inference_mode}[mode]
    with ctx():
        out = layers.QuickGELU()(x)
    assert out.dtype == dtype and torch.equal(out.detach(), expected)
    assert out.requires_grad == (mode == "grad")


def test_quick_gelu_inference_leaves_its_input_alone():
    x = torch.randn(3, 50)
    before = x.clone()
    with torch.no_grad():
        layers.QuickGELU()(x)
    assert torch.equal(x, before)


def test_quick_gelu_gradient():
    x = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layers.QuickGELU(), (x,))
    x32 = torch.randn(6, 300) * 4
    a, b = x32.clone().requires_grad_(), x32.clone().requires_grad_()
    grad = torch.randn(6, 300)
    layers.QuickGELU()(a).backward(grad)
    ReferenceQuickGELU()(b).backward(grad)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_quick_gelu_traces_to_plain_operations():
    x = torch.randn(2, 8, requires_grad=True)
    traced = torch.jit.trace(layers.QuickGELU(), (x,))
    torch.testing.assert_close(traced(x), ReferenceQuickGELU()(x))


# -- LayerNorm ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_layernorm_native_16bit_matches_the_fp32_round_trip(dtype):
    g = torch.Generator().manual_seed(0)
    ln = layers.LayerNorm(96)
    with torch.no_grad():
        ln.weight.copy_(1 + 0.1 * torch.randn(96, generator=g))
        ln.bias.copy_(0.1 * torch.randn(96, generator=g))
    ref = to_reference(ln).to(dtype)
    ln = ln.to(dtype)
    x = (torch.randn(64, 20, 96, generator=g) * 3 + 1).to(dtype)
    out, expected = ln(x), ref(x)
    assert out.dtype == dtype
    # Same fp32 arithmetic, one rounding at the end: at most one rounding step apart.
    step = torch.finfo(dtype).eps * expected.float().abs().clamp_min(1)
    assert ((out.float() - expected.float()).abs() <= step).all()
    assert (out == expected).float().mean() > 0.99


def test_layernorm_mixed_dtypes_keep_the_fp32_path():
    ln = layers.LayerNorm(16)  # fp32 weights, bf16 input (e.g. a bf16 activation into an fp32 model)
    x = torch.randn(4, 16).to(torch.bfloat16)
    assert torch.equal(ln(x), to_reference(ln)(x))


# -- whole blocks ------------------------------------------------------------------------
@pytest.mark.parametrize("frozen", [True, False])
def test_block_matches_reference_and_saves_less(clip, frozen):
    block = clip.visual.blocks[0].requires_grad_(not frozen)
    ref = to_reference(block)
    x = torch.randn(3, 9, block.ln_1.normalized_shape[0], requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    out, expected = block(x), ref(xr)
    assert torch.equal(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(block.named_parameters(), ref.parameters()):
        if not frozen:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    params = list(block.parameters()) + list(ref.parameters())
    x2 = x.detach().requires_grad_()
    assert saved_bytes(lambda: block(x2), params) < saved_bytes(lambda: ref(x2), params)


@pytest.mark.parametrize("name", ["vop", "vop-fc", "full"])
def test_model_gradients_match_reference_with_and_without_checkpointing(name, clip, frames):
    model = vop.create(name, clip)
    ref = to_reference(model)
    ids = model.tokenize(["a red circle", "an empty scene"])

    def grads(m, checkpointing):
        m.gradient_checkpointing = checkpointing
        video, text, scale = m(frames, ids)
        loss = F.cross_entropy(scale * video @ text.t(), torch.arange(2))
        loss.backward()
        out = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        m.zero_grad(set_to_none=True)
        return out

    expected = grads(ref, False)
    for checkpointing in (False, True):
        got = grads(model, checkpointing)
        assert got.keys() == expected.keys()
        for n in got:  # fp32 rounding differs (shorter sequences): tolerance relative to the tensor's scale
            scale = expected[n].abs().max().item()
            torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-6 + 1e-5 * scale, msg=n)


# -- skipping rows nobody reads ------------------------------------------------------------
def test_attention_query_subset_equals_those_rows_of_full_attention(clip):
    attn = clip.visual.blocks[0].attn
    x = torch.randn(3, 9, attn.out_proj.in_features)
    rows = [0, 4, 5, 6, 7, 8]
    torch.testing.assert_close(attn(x, queries=x[:, rows]), attn(x)[:, rows], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="causal"):
        attn(x, causal=True, queries=x[:, rows])


def test_block_drop_refuses_slices_that_are_not_contiguous_and_forward(clip):
    block = clip.visual.blocks[0]
    x = torch.randn(1, 5, block.ln_1.normalized_shape[0])
    for rows in (slice(3, 2), slice(1, None, 2)):
        with pytest.raises(ValueError, match="contiguous forward slice"):
            block(x, drop=rows)


@pytest.mark.parametrize("drop", [slice(1, 4), slice(1, None), slice(0, 2)])
def test_block_drop_equals_the_full_block_without_those_rows(clip, drop):
    block = clip.visual.blocks[0]
    x = torch.randn(2, 9, block.ln_1.normalized_shape[0])
    full = block(x)
    kept = torch.cat([full[:, : drop.start], full[:, drop.stop:]], 1) if drop.stop else full[:, : drop.start]
    out = block(x, drop=drop)
    assert out.shape == kept.shape
    torch.testing.assert_close(out, kept, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_skipping_unread_rows_keeps_every_methods_embeddings(name, clip, frames):
    model = vop.create(name, clip)
    ids = model.tokenize(["a red circle moves to the right", "an empty scene", "two squares"])
    plain = copy.deepcopy(model)
    plain.skip_unread_tokens = False
    with torch.no_grad():
        for got, expected in ((model.encode_video(frames), plain.encode_video(frames)),
                              (model.encode_text(ids), plain.encode_text(ids))):
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vop", "vop-f", "visual-prompt"])
def test_skipping_unread_rows_saves_activations(name, clip, frames):
    model = vop.create(name, clip)
    plain = copy.deepcopy(model)
    plain.skip_unread_tokens = False
    params = list(model.parameters()) + list(plain.parameters())
    assert saved_bytes(lambda: model.encode_video(frames), params) < saved_bytes(lambda: plain.encode_video(frames), params)


# -- checkpointing part of the image tower -------------------------------------------------
def test_checkpointing_the_first_image_blocks_keeps_gradients_and_saves_in_between(clip, frames):
    model = vop.create("vop", clip)
    ids = model.tokenize(["a red circle", "an empty scene"])

    def run(m):
        video, text, scale = m(frames, ids)
        F.cross_entropy(scale * video @ text.t(), torch.arange(2)).backward()
        out = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        m.zero_grad(set_to_none=True)
        return out

    params = list(model.parameters())
    saved, expected = {}, run(model)
    for limit in (0, 1, 2, None):  # the tiny image tower has 3 blocks; None: every block of both towers
        model.gradient_checkpointing, model.checkpoint_image_blocks = True, limit
        got = run(model)
        for n in expected:
            torch.testing.assert_close(got[n], expected[n], rtol=1e-5, atol=1e-7, msg=n)
        saved[limit] = saved_bytes(lambda: model(frames, ids), params)
    assert saved[0] > saved[1] > saved[2] > saved[None]


# -- bf16 encoding -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_bf16_encoding_agrees_with_fp32(name, clip, frames):
    model = vop.create(name, clip).eval()
    ids = model.tokenize(["a red circle moves to the right", "an empty scene"])
    low = copy.deepcopy(model).to(torch.bfloat16)
    with torch.inference_mode():
        video, text = model.encode_video(frames), model.encode_text(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto_video, auto_text = model.encode_video(frames), model.encode_text(ids)
        cast_video, cast_text = low.encode_video(frames), low.encode_text(ids)
    assert cast_video.dtype == torch.bfloat16
    for a, b in ((auto_video, video), (auto_text, text), (cast_video, video), (cast_text, text)):
        assert F.cosine_similarity(a.float(), b, dim=-1).min() >= 0.99


@pytest.mark.parametrize("name", ["vop", "vop-c", "vop-fc", "adapter-ffn"])
def test_bf16_autocast_training_step_touches_only_trainable(name, clip, frames):
    model = vop.create(name, clip)
    ids = model.tokenize(["a red circle", "an empty scene"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        video, text, scale = model(frames, ids)
        loss = F.cross_entropy(scale * video.float() @ text.float().t(), torch.arange(2))
    loss.backward()
    trainable = model.trainable_parameters()
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        else:
            assert p.grad is None, n
