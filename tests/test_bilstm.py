"""vop.methods.bilstm.BiLSTM against torch.nn.LSTM (one layer, bidirectional, batch-first):
the same parameters, initialisation, outputs and gradients, eagerly and written out step
by step; and the models that use it trace into one torch.compile graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vop
import vop.methods as methods
from vop.methods.bilstm import BiLSTM


def pair(input_size: int = 16, hidden: int = 8, seed: int = 3) -> tuple[nn.LSTM, BiLSTM]:
    torch.manual_seed(seed)
    reference = nn.LSTM(input_size, hidden, num_layers=1, batch_first=True, bidirectional=True)
    torch.manual_seed(seed)
    return reference, BiLSTM(input_size, hidden)


def test_parameters_and_initialisation_are_nn_lstms():
    reference, mine = pair()
    ref_state, state = reference.state_dict(), mine.state_dict()
    assert list(state) == list(ref_state)  # names and order: checkpoints load either way
    for name in ref_state:
        assert torch.equal(state[name], ref_state[name]), name  # the same random draws
    torch.manual_seed(9)
    other = nn.LSTM(16, 8, batch_first=True, bidirectional=True)
    mine.load_state_dict(other.state_dict())  # strict: an nn.LSTM checkpoint loads as is
    assert torch.equal(mine.weight_hh_l0_reverse, other.weight_hh_l0_reverse)


@pytest.mark.parametrize("train", [False, True])
def test_eager_outputs_and_gradients_equal_nn_lstm(train):
    reference, mine = pair()
    reference.train(train), mine.train(train)
    x = torch.randn(3, 5, 16)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out = reference(xa)[0], mine(xb)
    assert out.shape == (3, 5, 16) and torch.equal(out, out_ref)
    grad = torch.randn_like(out)
    g_ref = torch.autograd.grad(out_ref, [xa, *reference.parameters()], grad)
    g = torch.autograd.grad(out, [xb, *mine.parameters()], grad)
    for a, b in zip(g, g_ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_unrolled_is_the_same_function_in_float64(steps):
    reference, mine = pair(hidden=6)
    reference.double(), mine.double()
    x = torch.randn(4, steps, 16, dtype=torch.float64, requires_grad=True)
    expected = reference(x)[0]
    out = mine.unrolled(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)
    grad = torch.randn_like(out)
    g_ref = torch.autograd.grad(expected, [x, *reference.parameters()], grad)
    g = torch.autograd.grad(out, [x, *mine.parameters()], grad)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_unrolled_bf16_keeps_fp32_state_and_agrees_with_fp32():
    reference, mine = pair(input_size=64, hidden=64)
    x = torch.randn(8, 12, 64)
    with torch.no_grad():
        expected = reference(x)[0]
        low = mine.to(torch.bfloat16).unrolled(x.bfloat16())
        fused_low = reference.to(torch.bfloat16)(x.bfloat16())[0]
    assert low.dtype == torch.bfloat16
    # No worse than PyTorch's own bf16 kernel: the cell state does not drift over the steps.
    error, fused_error = (low.float() - expected).abs().max(), (fused_low.float() - expected).abs().max()
    assert error <= 1.5 * fused_error + 1e-3, (error, fused_error)
    cos = torch.nn.functional.cosine_similarity(low.float().flatten(1), expected.flatten(1), dim=-1)
    assert cos.min() > 0.999


def test_refuses_inputs_of_the_wrong_width():
    _, mine = pair()
    with pytest.raises(ValueError, match=r"expected \[batch, steps, 16\], got shape \(3, 5, 12\)"):
        mine(torch.randn(3, 5, 12))


@pytest.mark.parametrize("grad", [False, True])
def test_compiled_module_traces_to_one_graph_and_matches(grad):
    """Compiled, with or without gradients, the module traces its unrolled form (plain
    operations, no LSTM kernel) into one graph, with nn.LSTM's outputs and gradients."""
    reference, mine = pair()
    graphs = []

    def backend(gm, example_inputs):  # Dynamo only, recording what it traced
        graphs.append({str(node.target) for node in gm.graph.nodes})
        return gm.forward

    x = torch.randn(2, 6, 16, requires_grad=grad)
    compiled = torch.compile(mine, fullgraph=True, backend=backend)  # raises on a graph break
    with torch.set_grad_enabled(grad):
        out, expected = compiled(x), reference(x)[0]
    assert len(graphs) == 1
    assert not any("lstm" in target.lower() for target in graphs[0])  # the unrolled form, not the kernel
    assert any("sigmoid" in target for target in graphs[0])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    if grad:
        g = torch.autograd.grad(out.sum(), [x, *mine.parameters()])
        g_ref = torch.autograd.grad(expected.sum(), [x, *reference.parameters()])
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", methods.names())
def test_every_methods_video_encoder_traces_to_one_graph(name, clip, frames):
    """A graph break inside the image tower's layer loop makes torch.compile skip the
    whole tower (nn.LSTM did that to vop-c / vop-fc); fullgraph=True turns one into an error."""
    torch._dynamo.reset()
    model = vop.create(name, clip).eval()
    with torch.inference_mode():
        expected = model.encode_video(frames)
        out = torch.compile(model.encode_video, fullgraph=True, backend="eager")(frames)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
