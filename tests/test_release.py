"""The ModelScope VoP release layout: import, and its documented quirks."""

from __future__ import annotations

import pytest
import torch

import vop
import vop.methods as methods
from vop.model.modelscope import import_modelscope
from vop.model.modelscope import export_modelscope


def _reference_text(clip, prompts, ids, n_pre=4):
    """The release's text loop transcribed independently: prefix after SOT, suffix before
    the last slot, positions added after insertion, readout at argmax + all prompts."""
    pre, suf = prompts[:, :n_pre], prompts[:, n_pre:]
    x = clip.token_embedding(ids)
    n = ids.shape[0]
    for i, block in enumerate(clip.text_blocks):
        x = torch.cat([x[:, :1], pre[i].expand(n, -1, -1), x[:, 1:]], dim=1)
        x = torch.cat([x[:, :-1], suf[i].expand(n, -1, -1), x[:, -1:]], dim=1)
        if i == 0:
            x = x + clip.positional_embedding
        x = block(x, causal=True)
        if i + 1 < len(clip.text_blocks):  # the release drops prompt outputs before the next layer only
            x = torch.cat([x[:, :1], x[:, 1 + n_pre:-1 - suf.shape[1]], x[:, -1:]], dim=1)
    x = clip.ln_final(x)
    return x[torch.arange(n), ids.argmax(-1) + prompts.shape[1]] @ clip.text_projection


@pytest.fixture
def release(clip, tmp_path):
    model = vop.create("vop", clip, text_prompt_layout="reference")
    with torch.no_grad():
        model.text_prompts.prompts.normal_(std=0.5)
    path = tmp_path / "VoP_msrvtt9k.pth"
    export_modelscope(model, path)
    return model, path


def test_release_checkpoint_loads_and_matches(release, frames):
    model, path = release
    sd = torch.load(path, weights_only=True)
    assert sd["visual_prompt_learner.visual_prompts"].shape == (3, 1, 8, 128)
    assert sd["text_prompt_learner.text_prompts"].shape == (2, 8, 128)
    loaded = import_modelscope(path)
    assert loaded.config.text_prompt_layout == "reference" and loaded.caption_length == 24
    ids = loaded.tokenize(["a dog catches a frisbee", "a cat"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(frames), model.encode_video(frames), rtol=0, atol=0)
        expected = torch.nn.functional.normalize(_reference_text(loaded.clip, loaded.text_prompts.prompts, ids), dim=-1)
        torch.testing.assert_close(loaded.encode_text(ids), expected, rtol=1e-6, atol=1e-6)


def test_reference_slots_and_readout(release):
    model, _ = release
    tp = model.text_prompts
    ids = model.tokenize(["a cat"])  # [SOT, a, cat, EOT, 0...] in 24 ids
    tokens = model.clip.embed_tokens(ids)
    x = tp.insert(tokens)  # 32 slots
    p = tp.prompts[0]
    assert x.shape[1] == 32
    assert torch.equal(x[0, 0], tokens[0, 0])
    assert torch.equal(x[0, 1:5], p[:4])  # prefix right after SOT
    assert torch.equal(x[0, 5:8], tokens[0, 1:4])  # words, end-of-text now at slot 7
    assert torch.equal(x[0, 27:31], p[4:])  # suffix before the last slot of the window
    assert torch.equal(x[0, 31], tokens[0, 23])  # the last slot keeps the last id
    assert int(tp.readout(ids)[0]) == 3 + 8  # end-of-text index + prefix + suffix
    y = tp.replace(torch.zeros_like(x), 1)
    assert torch.equal(y[0, 1:5], tp.prompts[1, :4]) and torch.equal(y[0, 27:31], tp.prompts[1, 4:])


def test_prefix_layout_is_the_default(clip):
    model = vop.create("vop", clip)
    ids = model.tokenize(["a cat"])
    x = model.text_prompts.insert(model.clip.embed_tokens(ids))
    assert torch.equal(x[0, 1:9], model.text_prompts.prompts[0])
    assert int(model.text_prompts.readout(ids)[0]) == 3 + 8


def test_wrong_file_is_refused(tmp_path, clip):
    torch.save(clip.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not the ModelScope VoP release"):
        import_modelscope(tmp_path / "plain.pt")
