"""Frame sampling from video files: which frames come back, and errors for bad files."""

from __future__ import annotations

import math

import pytest
import torch
from helpers_video import (
    decoded_index,
    index_frames,
    write_audio_only,
    write_corrupt_file,
    write_empty_file,
    write_no_frames,
    write_video,
)

import vop.data.video as video
from vop.data.types import VideoReadError
from vop.data.video import sample_frames, sample_indices


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Index-encoded videos: name -> (path, frame count)."""
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for name, count in [("v30.mp4", 30), ("v24.mkv", 24), ("v5.mp4", 5), ("v12.mkv", 12), ("v31.mp4", 31)]:
        out[name] = (write_video(root / name, index_frames(count)), count)
    out["mpeg4.mp4"] = (write_video(root / "mpeg4.mp4", index_frames(20), codec="mpeg4"), 20)
    return out


# Expected "middle" indices, written out by hand from floor((i + 0.5) * n / F).
MIDDLE = {
    (30, 12): [1, 3, 6, 8, 11, 13, 16, 18, 21, 23, 26, 28],
    (24, 12): [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23],
    (5, 12): [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4],
    (12, 12): list(range(12)),
    (31, 4): [3, 11, 19, 27],
    (20, 3): [3, 10, 16],
    (32, 4): [4, 12, 20, 28],
    (32, 3): [5, 16, 26],
    (7, 1): [3],
}


@pytest.mark.parametrize(("n", "f"), sorted(MIDDLE))
def test_sample_indices_middle(n, f):
    assert sample_indices(n, f) == MIDDLE[(n, f)]


@pytest.mark.parametrize(
    ("name", "f"),
    [("v30.mp4", 12), ("v24.mkv", 12), ("v5.mp4", 12), ("v12.mkv", 12), ("v31.mp4", 4), ("mpeg4.mp4", 3)],
)
def test_middle_returns_expected_frames(videos, name, f):
    path, count = videos[name]
    frames, indices = sample_frames(path, num_frames=f)
    assert frames.dtype == torch.uint8 and frames.shape == (f, 24, 32, 3)
    assert indices == MIDDLE[(count, f)]
    assert decoded_index(frames) == indices


def test_fewer_frames_than_requested_repeat_in_order(videos):
    frames, indices = sample_frames(videos["v5.mp4"][0], num_frames=12)
    assert decoded_index(frames) == indices == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]
    assert all(2 <= indices.count(i) <= 3 for i in range(5))


@pytest.mark.parametrize(("n", "f"), [(30, 12), (5, 12), (31, 4), (24, 12)])
def test_random_indices_stay_in_their_segment(n, f):
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        indices = sample_indices(n, f, torch.rand(f, generator=g, dtype=torch.float64))
        for i, idx in enumerate(indices):
            assert math.floor(i * n / f) <= idx <= math.ceil((i + 1) * n / f) - 1
        assert indices == sorted(indices)


def test_random_mode_is_reproducible_and_decodes_the_drawn_frames(videos):
    path, count = videos["v30.mp4"]
    a, ia = sample_frames(path, 12, mode="random", generator=torch.Generator().manual_seed(3))
    b, ib = sample_frames(path, 12, mode="random", generator=torch.Generator().manual_seed(3))
    assert ia == ib and torch.equal(a, b)
    assert decoded_index(a) == ia
    draws = {
        tuple(sample_frames(path, 12, mode="random", generator=torch.Generator().manual_seed(s))[1]) for s in range(5)
    }
    assert len(draws) > 1
    for i, idx in enumerate(ia):
        assert math.floor(i * count / 12) <= idx <= math.ceil((i + 1) * count / 12) - 1


@pytest.mark.parametrize("claimed", [10, 50])
def test_wrong_frame_count_is_corrected(videos, monkeypatch, claimed):
    path, count = videos["v30.mp4"]
    monkeypatch.setattr(video, "_scan_packets", lambda name: video._PacketIndex(claimed, None, ()))
    frames, indices = sample_frames(path, 12)
    assert indices == MIDDLE[(count, 12)]
    assert decoded_index(frames) == indices


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory):
    """40-frame videos with a keyframe every 5 frames: sampling takes the seeking path."""
    root = tmp_path_factory.mktemp("gop")
    return [write_video(root / f"gop.{ext}", index_frames(32), gop=5) for ext in ("mp4", "mkv")]


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("f", [2, 3, 4])
def test_seeking_path_matches_sequential(gop_videos, monkeypatch, which, f):
    path = gop_videos[which]
    assert video._scan_packets(str(path)).seekable
    seeks = []
    real = video._decode_seeking
    monkeypatch.setattr(video, "_decode_seeking", lambda *a: seeks.append(real(*a)) or seeks[-1])
    middle, mi = sample_frames(path, f)
    rand, ri = sample_frames(path, f, mode="random", generator=torch.Generator().manual_seed(f))
    assert len(seeks) == 2 and all(s is not None for s in seeks)  # the seeking path served both
    assert mi == MIDDLE.get((32, f), mi) and decoded_index(middle) == mi and decoded_index(rand) == ri

    monkeypatch.setattr(video, "_SEEK_WORTHWHILE", -1.0)  # never seek
    seq_middle, seq_mi = sample_frames(path, f)
    seq_rand, seq_ri = sample_frames(path, f, mode="random", generator=torch.Generator().manual_seed(f))
    assert len(seeks) == 2
    assert (seq_mi, seq_ri) == (mi, ri) and torch.equal(seq_middle, middle) and torch.equal(seq_rand, rand)


def test_seeking_path_falls_back_when_timestamps_disagree(gop_videos, monkeypatch):
    path = gop_videos[0]
    real_index = video._scan_packets(str(path))
    shifted = video._PacketIndex(real_index.count, tuple(p + 1 for p in real_index.pts), real_index.keyframes)
    monkeypatch.setattr(video, "_scan_packets", lambda name: shifted)
    outcomes = []
    real = video._decode_seeking
    monkeypatch.setattr(video, "_decode_seeking", lambda *a: outcomes.append(real(*a)) or outcomes[-1])
    frames, indices = sample_frames(path, 4)
    assert outcomes == [None]  # the seeking path noticed, the sequential path answered
    assert indices == [4, 12, 20, 28] and decoded_index(frames) == indices


def test_bad_arguments(videos):
    path = videos["v30.mp4"][0]
    with pytest.raises(ValueError):
        sample_frames(path, 0)
    with pytest.raises(ValueError):
        sample_frames(path, 4, mode="first")


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("missing.mp4", None),
        ("empty.mp4", write_empty_file),
        ("corrupt.mp4", write_corrupt_file),
        ("audio.wav", write_audio_only),
        ("noframes.mkv", write_no_frames),
        ("noframes.mp4", write_no_frames),
        ("text.avi", lambda p: p.write_text("not a video\n" * 50)),
        ("adir", lambda p: p.mkdir()),
    ],
)
def test_bad_files_raise_video_read_error(tmp_path, name, make):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(VideoReadError) as info:
        sample_frames(path, 4)
    assert info.value.path == str(path) and info.value.reason


def test_truncated_stream_returns_the_frames_it_has(tmp_path):
    path = write_video(tmp_path / "cut.mkv", index_frames(30))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # mkv has no index to lose: a short video
    frames, indices = sample_frames(path, 6)
    assert frames.shape[0] == 6 and decoded_index(frames) == indices
    assert indices[-1] < 29
