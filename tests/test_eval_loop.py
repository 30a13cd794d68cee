"""evaluate(): unreadable videos are left out with their captions and counted, and the
metrics are those of vop.eval.metrics on the model's own embeddings."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

import vop.backbone as backbone
import vop
import vop.methods as methods
from vop.data.sources import FileVideoSource
from vop.data.transforms import MEAN, STD, VideoTransform, normalize
from vop.data.types import RetrievalSplit, VideoReadError
from vop.data.datasets import OpenedSplit
from vop.eval.config import EvalConfig
from vop.eval.evaluate import evaluate
from vop.eval.metrics import pair_accuracy, retrieval_metrics

from helpers_video import write_corrupt_file, write_video

NUM_FRAMES = 4
LEVEL = 20
RANK_KEYS = ("t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "t2v_mnr", "v2t_r1", "v2t_r5", "v2t_r10", "v2t_mdr", "v2t_mnr")


class MemorySource:
    """Random uint8 videos ``[T, 40, 40, 3]`` held in memory (``solid``: video ``v`` is
    grey level ``LEVEL * v``); ``bad`` ones raise."""

    def __init__(self, num: int, bad: set[int] = frozenset(), solid: bool = False):
        g = torch.Generator().manual_seed(5)
        self.videos = [torch.full((8, 40, 40, 3), LEVEL * v, dtype=torch.uint8) if solid
                       else torch.randint(0, 256, (8, 40, 40, 3), generator=g, dtype=torch.uint8) for v in range(num)]
        self.bad = set(bad)

    def __len__(self) -> int:
        return len(self.videos)

    def describe(self, index: int) -> str:
        return f"memory://video{index}"

    def load(self, index, num_frames, mode="middle", generator=None):
        if index in self.bad:
            raise VideoReadError(self.describe(index), "corrupt for the test")
        step = len(self.videos[index]) // num_frames
        return self.videos[index][step // 2::step][:num_frames]  # [F, H, W, 3]


def _split(source, captions_per_video: int = 2) -> RetrievalSplit:
    n = len(source)
    caption_to_video = tuple(v for v in range(n) for _ in range(captions_per_video))
    captions = tuple(f"video {v} caption {k}: a thing {'red green blue'.split()[k % 3]}"
                     for v in range(n) for k in range(captions_per_video))
    return RetrievalSplit("test", tuple(f"video{v}" for v in range(n)), captions, caption_to_video, source)


@pytest.fixture(scope="module")
def model():
    return vop.create("vop", backbone.load("tiny"), num_frames=NUM_FRAMES).eval()


def _embeddings(model, split, videos):
    """The model's embeddings computed directly: eval transform, one batch."""
    transform = VideoTransform(size=32, train=False)
    frames = torch.stack([transform(split.source.load(v, NUM_FRAMES, "middle")) for v in videos])
    with torch.no_grad():
        video_emb = model.encode_video(normalize(frames))  # [V, D]
        caps = [c for c, v in enumerate(split.caption_to_video) if v in videos]
        text_emb = model.encode_text(model.tokenize([split.captions[c] for c in caps]))  # [T, D]
    t2v = [videos.index(split.caption_to_video[c]) for c in caps]
    return video_emb, text_emb, t2v


def test_metrics_match_retrieval_metrics_on_the_same_embeddings(model):
    split = _split(MemorySource(5))
    got = evaluate(model, split, EvalConfig(batch_size=8, chunk_size=3), num_frames=NUM_FRAMES, progress=False)
    video_emb, text_emb, t2v = _embeddings(model, split, list(range(5)))
    want = retrieval_metrics(text_emb @ video_emb.t(), t2v)
    assert {k: got[k] for k in RANK_KEYS} == pytest.approx({k: want[k] for k in RANK_KEYS})
    assert (got["num_videos"], got["num_captions"], got["skipped_videos"]) == (5, 10, 0)


def test_an_unreadable_video_is_skipped_with_its_captions_and_counted(model, caplog):
    split = _split(MemorySource(6, bad={2}))
    with caplog.at_level(logging.WARNING, logger="vop.eval.evaluate"):
        got = evaluate(model, split, EvalConfig(batch_size=2), num_frames=NUM_FRAMES, progress=False)
    assert (got["num_videos"], got["num_captions"], got["skipped_videos"]) == (5, 10, 1)
    assert "memory://video2" in caplog.text and "corrupt for the test" in caplog.text
    kept = [0, 1, 3, 4, 5]
    video_emb, text_emb, t2v = _embeddings(model, split, kept)
    want = retrieval_metrics(text_emb @ video_emb.t(), t2v)
    assert {k: got[k] for k in RANK_KEYS} == pytest.approx({k: want[k] for k in RANK_KEYS})


class Oracle(torch.nn.Module):
    """Embeds video ``v`` (a solid ``MemorySource`` video) and the captions of ``_split``
    ("video v ...") as the same one-hot vector: every caption ranks its own video first,
    so any misalignment of captions and videos after a skip shows as a lost R@1."""

    clip = SimpleNamespace(config=SimpleNamespace(image_resolution=32, embed_dim=16))

    def tokenize(self, texts):
        return torch.tensor([[int(t.split()[1])] for t in texts])  # [N, 1]: the video index

    def encode_text(self, ids):
        return torch.nn.functional.one_hot(ids[:, 0], 16).float()

    def encode_video(self, frames):  # [B, F, 3, S, S], normalised
        level = (frames[:, 0, 0, 0, 0] * STD[0] + MEAN[0]) * 255  # [B]: undo normalize
        return torch.nn.functional.one_hot((level / LEVEL).round().long(), 16).float()


@pytest.mark.parametrize("bad", [set(), {0}, {3}, {2, 5}, {7}])
def test_captions_stay_aligned_with_their_videos_around_skips(bad):
    split = _split(MemorySource(8, bad=bad, solid=True), captions_per_video=2)
    got = evaluate(Oracle(), split, EvalConfig(batch_size=3, chunk_size=5), num_frames=NUM_FRAMES, progress=False)
    assert got["t2v_r1"] == 100.0 and got["v2t_r1"] == 100.0
    assert (got["num_videos"], got["num_captions"], got["skipped_videos"]) == (8 - len(bad), 16 - 2 * len(bad),
                                                                               len(bad))


def test_reversal_pairs_touching_a_skipped_video_are_left_out(model):
    split = _split(MemorySource(6, bad={3}), captions_per_video=1)
    pairs = [(0, 0, 1, 1), (2, 2, 3, 3), (4, 4, 5, 5)]  # (video_a, caption_a, video_b, caption_b)
    got = evaluate(model, OpenedSplit(split, pairs=pairs, num_frames=NUM_FRAMES), progress=False)
    kept = [0, 1, 2, 4, 5]
    video_emb, text_emb, _ = _embeddings(model, split, kept)
    # Positions among the kept videos and captions: pair (2, 3) is gone.
    assert got["pair_accuracy"] == pytest.approx(pair_accuracy(text_emb, video_emb, [(0, 0, 1, 1), (3, 3, 4, 4)]))


def test_a_corrupt_file_on_disk_is_skipped(model, tmp_path):
    paths = []
    for i, level in enumerate((40, 200, 0)):
        path = tmp_path / f"video{i}.mp4"
        if i == 2:
            write_corrupt_file(path)
        else:
            frame = torch.full((8, 32, 32, 3), level, dtype=torch.uint8)
            frame[:, :, :16, i] = 255  # a coloured half, so the two videos differ
            write_video(path, frame.numpy())
        paths.append(path)
    split = _split(FileVideoSource(paths), captions_per_video=1)
    got = evaluate(model, split, num_frames=NUM_FRAMES, progress=False)
    assert (got["num_videos"], got["num_captions"], got["skipped_videos"]) == (2, 2, 1)
    assert all(got[k] == got[k] for k in RANK_KEYS)  # finite metrics over what was readable


def test_evaluate_restores_the_training_mode(model):
    model.train()
    try:
        evaluate(model, _split(MemorySource(2)), num_frames=NUM_FRAMES, progress=False)
        assert model.training
    finally:
        model.eval()


# -- text-conditioned methods (X-Pool) ------------------------------------------------------
@pytest.fixture(scope="module")
def xpool():
    torch.manual_seed(3)
    model = vop.create("xpool", backbone.load("tiny"), num_frames=NUM_FRAMES).eval()
    with torch.no_grad():  # move the pooling away from its identity start so it matters
        for p in model.pool.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_text_conditioned_evaluation_scores_each_caption_with_its_own_pooling(xpool):
    split = _split(MemorySource(7), captions_per_video=2)
    pairs = [(0, 0, 1, 2), (2, 4, 3, 6)]
    got = evaluate(xpool, OpenedSplit(split, pairs=pairs, num_frames=NUM_FRAMES),
                   EvalConfig(batch_size=3, score_chunk=2), progress=False)
    transform = VideoTransform(size=32, train=False)
    frames = normalize(torch.stack([transform(split.source.load(v, NUM_FRAMES, "middle")) for v in range(7)]))
    with torch.no_grad():
        scores = xpool.score(xpool.tokenize(list(split.captions)), frames, chunk=None)  # [14, 7], all at once
        plain = xpool.encode_text(xpool.tokenize(list(split.captions))) @ xpool.encode_video(frames).T
    assert not torch.allclose(scores, plain, atol=1e-3)  # the conditioned scores are not the mean-pooled ones
    want = retrieval_metrics(scores, list(split.caption_to_video))
    assert {k: got[k] for k in RANK_KEYS} == pytest.approx({k: want[k] for k in RANK_KEYS})
    from vop.eval.metrics import pair_accuracy_from_scores

    assert got["pair_accuracy"] == pair_accuracy_from_scores(scores, pairs)


def test_text_conditioned_evaluation_is_memory_bounded_by_the_score_chunk(xpool, monkeypatch):
    split = _split(MemorySource(9), captions_per_video=3)
    seen = []
    original = type(xpool.pool).score

    def spy(self, text, frames, chunk):
        seen.append((frames.shape[0], chunk))
        return original(self, text, frames, chunk=chunk)

    monkeypatch.setattr(type(xpool.pool), "score", spy)
    evaluate(xpool, split, EvalConfig(score_chunk=4), num_frames=NUM_FRAMES, progress=False)
    assert seen and all(n <= 4 and c <= 4 for n, c in seen)  # never more than 4 videos x 27 captions x D
