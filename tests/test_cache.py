"""The on-disk frame cache and the file video source that reads from it."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from helpers_video import decoded_index, index_frames, write_corrupt_file, write_empty_file, write_video

import vop.data.cache as cache_module
from vop.data.cache import FrameCache, build_frame_cache
from vop.data.sources import FileVideoSource
from vop.data.transforms import resize_center_crop
from vop.data.types import VideoReadError, VideoSource
from vop.data.video import sample_frames

F, S = 4, 16


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three good videos, a corrupt one, an empty one and a missing one."""
    root = tmp_path_factory.mktemp("clips")
    paths = [write_video(root / f"good{i}.mp4", index_frames(20 + 4 * i, 24, 32)) for i in range(3)]
    paths.append(write_corrupt_file(root / "corrupt.mp4"))
    paths.append(write_empty_file(root / "empty.mkv"))
    paths.append(root / "missing.mp4")
    return paths


@pytest.fixture(scope="module")
def built(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    return build_frame_cache(clips, out, num_frames=F, size=S, progress=False)


def test_round_trip_equals_direct_decode_and_resize(clips, built):
    assert len(built) == 3 and built.num_frames == F and built.size == S
    for path in clips[:3]:
        assert path.stem in built
        direct = resize_center_crop(sample_frames(path, F, mode="middle")[0], S)
        cached = built.get(path.stem)
        assert cached.dtype == torch.uint8 and cached.shape == (F, S, S, 3)
        assert torch.equal(cached, direct)
    assert decoded_index(built.get("good0")) == sample_frames(clips[0], F)[1]


def test_failed_videos_are_recorded_not_stored(built):
    assert set(built.failed) == {"corrupt", "empty", "missing"}
    assert all(isinstance(reason, str) and reason for reason in built.failed.values())
    assert "corrupt" not in built
    with pytest.raises(KeyError):
        built.get("corrupt")


def test_layout_on_disk(built):
    files = {p.name for p in built.directory.iterdir()}
    assert files == {"frames.npy", "index.json"}
    index = json.loads((built.directory / "index.json").read_text())
    assert index["num_frames"] == F and index["size"] == S
    assert set(index["videos"]) == {"good0", "good1", "good2"} and set(index["failed"]) == set(built.failed)
    frames = np.load(built.directory / "frames.npy", mmap_mode="r")
    assert isinstance(frames, np.memmap) and frames.shape == (6, F, S, S, 3) and frames.dtype == np.uint8
    reopened = FrameCache.open(built.directory)
    assert torch.equal(reopened.get("good1"), built.get("good1"))


def test_pickles_without_the_frames(built):
    built.get("good0")  # opens the memory map
    clone = pickle.loads(pickle.dumps(built))
    assert clone._frames is None and len(pickle.dumps(built)) < 10_000
    assert torch.equal(clone.get("good2"), built.get("good2"))


def test_existing_cache_needs_overwrite(clips, built):
    with pytest.raises(FileExistsError):
        build_frame_cache(clips[:1], built.directory, num_frames=F, size=S, progress=False)


def test_overwrite_rebuilds(clips, tmp_path):
    build_frame_cache(clips[:2], tmp_path, num_frames=F, size=S, progress=False)
    cache = build_frame_cache(clips[2:4], tmp_path, num_frames=F, size=S, overwrite=True, progress=False)
    assert set(cache.keys()) == {"good2"} and set(cache.failed) == {"corrupt"}


def test_bad_keys(clips, tmp_path):
    with pytest.raises(ValueError):
        build_frame_cache(clips[:2], tmp_path, keys=["a", "a"], progress=False)
    with pytest.raises(ValueError):
        build_frame_cache(clips[:2], tmp_path, keys=["a"], progress=False)


def test_interrupted_build_resumes(clips, tmp_path, monkeypatch):
    real = cache_module._decode_one
    calls = []

    def interrupted(job):
        calls.append(job[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(cache_module, "_decode_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_frame_cache(clips, tmp_path, num_frames=F, size=S, progress=False)
    assert not (tmp_path / "index.json").exists()  # not a cache yet
    with pytest.raises(FileNotFoundError):
        FrameCache.open(tmp_path)

    calls.clear()
    monkeypatch.setattr(cache_module, "_decode_one", lambda job: (calls.append(job[1]), real(job))[1])
    cache = build_frame_cache(clips, tmp_path, num_frames=F, size=S, progress=False)
    assert len(calls) == len(clips) - 2  # the first two were kept
    assert len(cache) == 3 and set(cache.failed) == {"corrupt", "empty", "missing"}
    assert torch.equal(cache.get("good0"), resize_center_crop(sample_frames(clips[0], F)[0], S))


def test_parallel_build_matches(clips, built, tmp_path):
    cache = build_frame_cache(clips, tmp_path, num_frames=F, size=S, workers=2, progress=False)
    assert set(cache.keys()) == set(built.keys()) and set(cache.failed) == set(built.failed)
    for key in cache.keys():
        assert torch.equal(cache.get(key), built.get(key))


def test_file_source_without_cache(clips):
    source = FileVideoSource(clips)
    assert isinstance(source, VideoSource) and len(source) == len(clips)
    assert source.describe(1) == str(clips[1])
    frames = source.load(0, F)
    assert frames.shape == (F, 24, 32, 3)
    g = torch.Generator().manual_seed(0)
    assert source.load(0, F, mode="random", generator=g).shape == (F, 24, 32, 3)
    with pytest.raises(VideoReadError):
        source.load(3, F)


def test_file_source_reads_the_cache(clips, built, monkeypatch):
    source = FileVideoSource(clips, cache=built)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a cached video")

    monkeypatch.setattr("vop.data.sources.sample_frames", no_decoding)
    for mode in ("middle", "random"):
        assert torch.equal(source.load(1, F, mode=mode, generator=torch.Generator()), built.get("good1"))
    with pytest.raises(VideoReadError) as info:
        source.load(3, F)
    assert info.value.reason == built.failed["corrupt"]
    with pytest.raises(ValueError):
        source.load(0, F + 1)


def test_file_source_decodes_videos_the_cache_lacks(clips, built, tmp_path):
    extra = write_video(tmp_path / "extra.mp4", index_frames(10, 24, 32))
    source = FileVideoSource([clips[0], extra], cache=built)
    assert source.load(1, F).shape == (F, 24, 32, 3)
    assert source.load(0, F).shape == (F, S, S, 3)
