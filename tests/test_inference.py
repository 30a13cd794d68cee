"""vop.load and the Retriever (docs/inference.md): the documented block runs as written,
files are embedded exactly as evaluation embeds them, frames and files agree, unreadable
files are named, zero-shot sources, devices and precisions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vop
from helpers_video import write_corrupt_file, write_video
from test_search_support import clip_frames
from vop.backbone.packaged import packaged_metadata

DOC = Path(__file__).resolve().parents[1] / "docs" / "inference.md"
CHECKPOINT = "runs/msrvtt-9k/vop-fc/checkpoints/best"
_ARCH = packaged_metadata("tiny-synthetic")["architecture"]
DIM, RES = _ARCH["embed_dim"], _ARCH["image_resolution"]  # the shipped tiny CLIP's


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


def _save_vop_fc(path: Path, backbone: str = "tiny-synthetic") -> Path:
    """A vop-fc checkpoint with random ("trained") prompts on ``backbone``."""
    from vop.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = vop.create("vop-fc", backbone)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.1 * torch.randn_like(p))
    return save_checkpoint(path, model, backbone_source=backbone)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder holding the doc's files: a checkpoint at CHECKPOINT, a.mp4 and b.webm."""
    base = tmp_path_factory.mktemp("inference")
    _save_vop_fc(base / CHECKPOINT)
    write_video(base / "a.mp4", clip_frames(1, num=20, size=48))
    write_video(base / "b.webm", clip_frames(2, num=15, size=40), codec="libvpx")
    return base


def test_the_documented_block_runs_as_written(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    scope: dict = {}
    exec(compile(_blocks("python")[0], str(DOC), "exec"), scope)  # noqa: S102 - the doc's own code
    v, t, scores = scope["v"], scope["t"], scope["scores"]
    assert v.shape == (2, DIM) and t.shape == (1, DIM) and scores.shape == (1, 2)
    assert v.dtype == t.dtype == torch.float32 and v.device.type == "cpu"
    assert torch.allclose(v.norm(dim=1), torch.ones(2)) and torch.allclose(t.norm(dim=1), torch.ones(1))
    assert not torch.equal(v[0], v[1])  # two different clips
    assert scope["model"].config.method == "vop-fc"


def test_the_documented_skip_block_runs_as_written(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    scope: dict = {"model": vop.load(CHECKPOINT)}
    exec(compile(_blocks("python")[1], str(DOC), "exec"), scope)  # noqa: S102
    assert capsys.readouterr().out.splitlines() == ["[0, 2]", "missing.mp4 - no such file"]
    assert scope["emb"].shape == (2, DIM)


def test_files_embed_exactly_as_evaluation_embeds_them(workdir, tmp_path):
    from vop.data.sources import FileVideoSource
    from vop.data.types import RetrievalSplit
    from vop.eval.evaluate import encode_videos

    paths = [str(workdir / "a.mp4"), str(workdir / "b.webm")]
    for i in range(3):  # more than one batch, odd sizes
        paths.append(str(write_video(tmp_path / f"c{i}.mp4", clip_frames(10 + i, num=9 + 5 * i, size=36 + 4 * i))))
    model = vop.load(workdir / CHECKPOINT)
    split = RetrievalSplit("files", tuple(Path(p).stem for p in paths), tuple(f"caption {i}" for i in range(5)),
                           tuple(range(5)), FileVideoSource(paths))
    expected, kept, failed = encode_videos(model.model, split, "cpu", num_frames=model.num_frames, batch_size=2,
                                           progress=False)
    assert kept == list(range(5)) and not failed
    got = model.encode_videos(paths, batch_size=2)
    assert got.shape == expected.shape == (5, DIM)
    assert (got - expected).abs().max() <= 1e-6


def test_frames_in_memory_give_the_files_embeddings(workdir):
    from vop.data.transforms import normalize, resize_center_crop
    from vop.data.video import sample_frames

    model = vop.load(workdir / CHECKPOINT)
    files = [workdir / "a.mp4", workdir / "b.webm"]
    decoded = [sample_frames(f, num_frames=model.num_frames)[0] for f in files]
    from_files = model.encode_videos(files)
    assert torch.equal(model.encode_videos(decoded), from_files)  # uint8 [F, H, W, 3] of any size
    assert torch.equal(model.encode_videos([d.numpy() for d in decoded]), from_files)  # arrays too
    ready = torch.stack([normalize(resize_center_crop(d, model.resolution)) for d in decoded])
    assert torch.equal(model.encode_videos(ready), from_files)  # normalised float [N, F, 3, R, R]
    with pytest.raises(ValueError, match=r"add the video axis"):
        model.encode_videos(decoded[0])
    with pytest.raises(ValueError, match=rf"float frames must be normalised \[F, 3, {RES}, {RES}\]"):
        model.encode_videos([torch.zeros(model.num_frames, 3, 20, 20)])


def test_an_unreadable_file_is_named_or_skipped(workdir, tmp_path):
    model = vop.load(workdir / CHECKPOINT)
    broken = write_corrupt_file(tmp_path / "broken.mp4")
    good = workdir / "a.mp4"
    with pytest.raises(vop.data.types.VideoReadError, match=r"broken\.mp4.*on_error='skip'"):
        model.encode_videos([good, broken])
    emb, kept, skipped = model.encode_videos([broken, good, tmp_path / "gone.mp4", good], on_error="skip",
                                             batch_size=3)
    assert kept == [1, 3] and [s[0] for s in skipped] == [0, 2]
    assert skipped[0][1] == str(broken) and skipped[1][2] == "no such file"
    # (batches of another size round differently in the last bit)
    assert (emb - model.encode_videos([good, good])).abs().max() <= 1e-6
    with pytest.raises(ValueError, match="on_error must be one of"):
        model.encode_videos([good], on_error="ignore")


def test_a_method_built_for_a_frame_count_refuses_another(workdir):
    model = vop.load(workdir / CHECKPOINT)
    assert model.num_frames == 12
    with pytest.raises(ValueError, match="built for 12 frames per video, not 8"):
        model.encode_videos([workdir / "a.mp4"], num_frames=8)


def test_zero_shot_from_a_backbone_source_a_pair_or_a_model(workdir, monkeypatch):
    text = ["a red square moves right"]
    zs = vop.load("tiny-synthetic")
    assert zs.config.method == "zero-shot" and zs.num_frames == 12
    plain = vop.create("zero-shot", "tiny-synthetic")
    with torch.inference_mode():
        assert torch.equal(zs.encode_texts(text), plain.encode_text(plain.tokenize(text)))
    # Fewer frames are fine for a method without per-frame parameters.
    assert zs.encode_videos([workdir / "a.mp4"], num_frames=4).shape == (1, DIM)
    # A pair names pretrained weights: vop.backbone.load(arch, pretrained=tag).
    calls = []

    def fake_load(source, **kwargs):
        calls.append((source, kwargs))
        return vop.backbone.load("tiny", random_ok=True)

    monkeypatch.setattr("vop.inference.load_backbone", fake_load)
    assert vop.load(("ViT-B-32", "openai")).config.method == "zero-shot"
    assert calls == [("ViT-B-32", {"pretrained": "openai"})]


def test_a_wrong_source_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a checkpoint folder either \(a folder with meta\.json"):
        vop.load(str(tmp_path / "runs" / "nope" / "checkpoints" / "best"))
    with pytest.raises(ValueError, match=r"\(architecture, tag\)"):
        vop.load(("ViT-B-32",))
    with pytest.raises(ValueError, match="backbone= goes with a checkpoint folder"):
        vop.load("tiny-synthetic", backbone="tiny")
    with pytest.raises(ValueError, match="weights .* must be one of fp32, bf16"):
        vop.load("tiny-synthetic", precision="fp16")


def test_a_checkpoint_on_another_backbone_is_refused(workdir):
    from vop.checkpoint import CheckpointMismatch

    with pytest.raises(CheckpointMismatch, match="fingerprint"):
        vop.load(workdir / CHECKPOINT, backbone=_other_weights())
    # The recorded backbone given explicitly (a moved file, say) is fine.
    assert vop.load(workdir / CHECKPOINT, backbone="tiny-synthetic").config.method == "vop-fc"


def _other_weights():
    clip = vop.backbone.load("tiny-synthetic")
    with torch.no_grad():
        clip.text_projection.add_(0.01)
    return clip


def test_bf16_weights_agree_with_fp32_and_the_model_stays_reachable(workdir):
    fp32 = vop.load(workdir / CHECKPOINT)
    bf16 = vop.load(workdir / CHECKPOINT, precision="bf16", device="cpu")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16 and bf16.precision == "bf16"
    files = [workdir / "a.mp4", workdir / "b.webm"]
    a, b = fp32.encode_videos(files), bf16.encode_videos(files)
    assert b.dtype == torch.float32
    assert (a * b).sum(1).min() > 0.99
    ta, tb = fp32.encode_texts(["a dog"]), bf16.encode_texts("a dog")
    assert (ta * tb).sum() > 0.99
    # The wrapper passes the model's attributes through; repr says what it is.
    assert fp32.config is fp32.model.config and callable(fp32.encode_text)
    assert "vop-fc" in repr(fp32) and "weights fp32" in repr(fp32)
    # to() moves and casts the model and keeps the retriever's own settings in step.
    assert fp32.to(precision="bf16") is fp32 and fp32.precision == "bf16"
    assert next(fp32.model.parameters()).dtype == torch.bfloat16
    assert torch.equal(fp32.encode_videos(files), b)
    assert isinstance(np.asarray(fp32.encode_texts([])), np.ndarray) and fp32.encode_texts([]).shape == (0, DIM)
