"""Every registered method on the tiny backbone: shapes, what trains, frozen tensors stay
bitwise unchanged, state round trips; the mechanisms' defining properties."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import vop.backbone as backbone
import vop
import vop.methods as methods

ALL = methods.names()
# VoP's prompt methods and ablations (zero-length prompts reduce them to plain CLIP; the
# peers cannot: DGL needs at least one prompt of each kind, X-Pool is a baseline-like
# full fine-tuning with a head).
PROMPTED = [n for n in ALL if methods.get(n).family in ("prompt", "ablation")]
JOINT = [n for n in ALL if any(p.name == "joint frames" for p in methods.get(n).parts)]
CAPTIONS = ["a red circle moves and ends up on the right", "an empty scene"]


def _loss(model, frames):
    video, text, scale = model(frames, model.tokenize(CAPTIONS))
    logits = scale * text @ video.t()
    if model.text_conditioned:  # the trainer's contract: pairwise scores (X-Pool)
        logits = scale * model.score(model.tokenize(CAPTIONS), frames)
    target = torch.arange(2)
    return torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.t(), target)


@pytest.mark.parametrize("name", ALL)
def test_shapes(name, clip, frames):
    model = vop.create(name, clip)
    video, text, scale = model(frames, model.tokenize(CAPTIONS))
    assert video.shape == (2, 64) and text.shape == (2, 64) and scale.ndim == 0
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_exactly_the_trainable_parameters(name, clip, frames):
    model = vop.create(name, clip)
    trainable = model.trainable_parameters()
    if name == "zero-shot":
        assert not trainable
        return
    assert trainable
    _loss(model, frames).backward()
    for pname, param in model.named_parameters():
        if pname in trainable:
            assert param.grad is not None, f"{pname} is trainable but got no gradient"
        else:
            assert param.grad is None, f"frozen {pname} got a gradient"
    assert sum(p.grad.abs().sum() for p in trainable.values()) > 0


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("zero-shot", "full")])
def test_optimizer_step_leaves_frozen_backbone_bitwise_unchanged(name, clip, frames):
    model = vop.create(name, clip)
    trainable = model.trainable_parameters()
    frozen = {n: t.clone() for n, t in model.state_dict().items() if n not in trainable}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2, weight_decay=0.2)
    _loss(model, frames).backward()
    opt.step()
    for n, t in model.state_dict().items():
        if n in frozen:
            assert torch.equal(t, frozen[n]), f"frozen {n} changed"
    assert any(not torch.equal(p, before[n]) for n, p in trainable.items())
    # AdamW holds state only for what trains.
    assert len(opt.state) == len(trainable)


@pytest.mark.parametrize("name", [n for n in ALL if n != "zero-shot"])
def test_state_round_trip(name, clip, frames, tmp_path):
    model = vop.create(name, clip)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.05)
    save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, tmp_path / "m.safetensors")
    fresh = vop.create(name, backbone.load("tiny"))
    fresh.load_trainable_state_dict(load_file(tmp_path / "m.safetensors"))
    ids = model.tokenize(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_video(frames), model.encode_video(frames), rtol=0, atol=0)
        torch.testing.assert_close(fresh.encode_text(ids), model.encode_text(ids), rtol=0, atol=0)


def _zero_prompt_options(name: str, layers: int) -> dict:
    spec = methods.get(name).options
    opts = {k: 0 for k in ("text_prompt_length", "visual_prompt_length", "specific_prompt_length",
                          "video_prompt_length") if k in spec}
    if "intra_layers" in spec:
        opts["intra_layers"] = layers
    return opts


@pytest.mark.parametrize("name", PROMPTED)
def test_zero_length_prompts_reproduce_plain_clip(name, clip, frames):
    model = vop.create(name, clip, **_zero_prompt_options(name, clip.config.vision_layers))
    ids = model.tokenize(CAPTIONS)
    with torch.no_grad():
        plain_frames = clip.encode_image(frames.flatten(0, 1)).view(2, 12, -1)
        frame_emb = torch.nn.functional.normalize(plain_frames, dim=-1)
        expected_video = torch.nn.functional.normalize(frame_emb.mean(1), dim=-1)
        expected_text = torch.nn.functional.normalize(clip.encode_text(ids), dim=-1)
        # Skipping unread rows only changes float rounding (shorter sequences, split
        # projections); with every row computed the result is bitwise plain CLIP.
        torch.testing.assert_close(model.encode_frames(frames), plain_frames, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.encode_text(ids), expected_text, rtol=0, atol=1e-6)
        model.skip_unread_tokens = False
        torch.testing.assert_close(model.encode_frames(frames), plain_frames, rtol=0, atol=0)
        # Pooling sums frames in a reversal-symmetric order: equal up to float rounding.
        torch.testing.assert_close(model.encode_video(frames), expected_video, rtol=0, atol=1e-6)
        torch.testing.assert_close(model.encode_text(ids), expected_text, rtol=0, atol=0)


def test_vop_f_with_all_layers_intra_frame_equals_vop(clip, frames):
    plain = vop.create("vop", clip)
    vop_f = vop.create("vop-f", clip, intra_layers=clip.config.vision_layers)
    with torch.no_grad():
        vop_f.frame_prompts.prompts_table.copy_(plain.frame_prompts.prompts_table)
        vop_f.text_prompts.prompts.copy_(plain.text_prompts.prompts)
        torch.testing.assert_close(vop_f.encode_video(frames), plain.encode_video(frames), rtol=0, atol=0)


@pytest.mark.parametrize("name", JOINT)
def test_joint_layers_mix_frames_and_intra_layers_do_not(name, clip, frames):
    model = vop.create(name, clip)  # K_s = 2 of 3 layers on the tiny backbone
    intra = model.joint.intra_layers
    seen = []
    hook = clip.visual.blocks[intra].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    perturbed = frames.clone()
    perturbed[:, 0] += 1.0
    with torch.no_grad():
        base = model.encode_frames(frames)
        moved = model.encode_frames(perturbed)
    hook.remove()
    # Output: every frame's embedding moves when frame 0 changes (joint attention).
    assert (moved - base).abs().amax(dim=-1).min() > 1e-6
    if name == "vop-fc":
        return  # its context prompts carry information across frames by design
    # Input of the first joint layer: [cls_1..cls_F, prompts, patches of frame 1..F].
    # Only frame 0's [CLS] and patches differ: the intra-frame layers kept frames apart.
    before, after = seen
    f, n, patches = 12, model.joint.length, clip.config.num_patches
    diff = (after - before).abs().amax(dim=-1)[0]  # [tokens] of video 0
    assert diff[0] > 0 and torch.all(diff[1:f] == 0)
    assert torch.all(diff[f:f + n] == 0)
    assert diff[f + n:f + n + patches].min() > 0 and torch.all(diff[f + n + patches:] == 0)


@pytest.mark.parametrize("name", ALL)
def test_frame_order_matters_exactly_when_the_method_says_it_sees_it(name, clip, frames):
    """Mean pooling of independently prompted frames ignores order (bitwise, for a time
    reversal); a method whose mechanisms see positions or neighbours does not."""
    options = {"frame_pos_init_std": 0.5} if "frame_pos_init_std" in methods.get(name).options else {}
    m = vop.create(name, clip, **options)
    with torch.no_grad():
        same = torch.equal(m.encode_video(frames), m.encode_video(frames.flip(1)))
        close = torch.allclose(m.encode_video(frames), m.encode_video(frames.flip(1)), atol=1e-6)
    assert close != m.sees_frame_order
    if not m.sees_frame_order and methods.get(name).family != "peer":
        assert same, name  # VoP's order-blind methods are bitwise order-blind (symmetric pooling)
    if name in ("vop-p", "vop-c", "vop-f", "vop-fp", "vop-fc"):
        assert m.sees_frame_order


def test_parameter_counts_on_vit_b32():
    """The paper's counts (PAPER.md), built on the meta device so no weights are allocated."""
    with torch.device("meta"):
        clip = backbone.CLIP(backbone.ARCHITECTURES["ViT-B-32"])
        counts = {n: vop.create(n, clip).num_trainable() for n in ALL}
    assert counts["vop"] == 122_880
    assert counts["vop-p"] == 528_384
    assert counts["vop-c"] == 14_257_152
    assert counts["proj"] == 655_360
    assert counts["partial"] == 7_087_872 + 1_536 + 655_360
    assert counts["adapter-attn"] == counts["adapter-ffn"] == 1_982_976
    assert counts["bias"] == 138_240
    assert counts["vop-f"] == 132_096 and counts["vop-fp"] == 402_432 and counts["vop-fc"] == 14_278_656


def test_method_needing_frame_count_refuses_another(clip):
    model = vop.create("vop-p", clip)
    with pytest.raises(ValueError, match="built for 12 frames.*got 8"):
        model.encode_video(torch.zeros(1, 8, 3, 32, 32))
    vop.create("vop", clip).encode_video(torch.zeros(1, 8, 3, 32, 32))  # any F is fine


def test_bad_frames_layout_is_named(clip):
    model = vop.create("vop", clip)
    with pytest.raises(ValueError, match=r"\(B, F, 3, H, W\)"):
        model.encode_video(torch.zeros(12, 3, 32, 32))


def test_unknown_method_and_option():
    with pytest.raises(ValueError, match="known methods: zero-shot, full"):
        vop.create("vop-x", backbone.load("tiny"))
    with pytest.raises(ValueError, match="do not apply to method 'vop'"):
        methods.make_config("vop", adapter_width=3)
    with pytest.raises(ValueError, match="prompt_init_std must be >= 0"):
        methods.make_config("vop", prompt_init_std=-1.0)


def test_config_round_trip():
    cfg = methods.make_config("vop-fc", intra_layers=4, context_hidden=32)
    assert methods.config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="do not apply to method"):
        methods.config_from_dict({**cfg.to_dict(), "bogus": 1})


def test_lr_scales_form_parameter_groups(clip):
    model = vop.create("vop-fc", clip, frame_pos_lr_scale=20.0, context_lr_scale=0.2)
    groups = {g["lr_scale"]: {id(p) for p in g["params"]} for g in model.parameter_groups()}
    assert id(model.joint.frame_pos) in groups[20.0]
    assert id(model.frame_prompts.generate.weight) in groups[0.2]
    assert id(model.text_prompts.prompts) in groups[1.0]
    assert sum(map(len, groups.values())) == len(model.trainable_parameters())


def test_adapter_starts_as_identity(clip, frames):
    zs, ad = vop.create("zero-shot", clip), vop.create("adapter-ffn", clip)
    with torch.no_grad():
        torch.testing.assert_close(ad.encode_video(frames), zs.encode_video(frames), rtol=0, atol=0)
