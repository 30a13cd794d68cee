"""The frame cache's write protocol: a kill or a failure at every step leaves either the
finished cache or an unfinished build that the next build resumes to the same result;
a damaged index.json is one clear error."""

from __future__ import annotations


import pytest

import vop.data.cache as cache_module
from helpers_faults import fail_at_step, kill_before_step, patch_steps
from helpers_video import index_frames, write_corrupt_file, write_video
from vop import atomic
from vop.data.cache import CacheFormatError, FrameCache, build_frame_cache

F, S = 4, 16
_STEPS = [("os", "fsync"), ("os", "replace"), ("os", "rename"), ("os", "unlink"), ("os", "open")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    paths = [write_video(root / f"good{i}.mp4", index_frames(12 + 4 * i, 24, 32)) for i in range(3)]
    paths.append(write_corrupt_file(root / "corrupt.mp4"))
    return paths


@pytest.fixture(scope="module")
def expected(clips, tmp_path_factory):
    cache = build_frame_cache(clips, tmp_path_factory.mktemp("ref"), num_frames=F, size=S, progress=False)
    return {k: cache.get(k).numpy() for k in cache.keys()}, dict(cache.failed)


def _patch(monkeypatch, on_step, out: str):
    # os.open counts only for this cache's files
    patch_steps(monkeypatch, on_step, steps=_STEPS,
                only=lambda name, args: name != "os.open" or str(args[0]).startswith(out))


def _count(clips, tmp_path, monkeypatch) -> int:
    out = tmp_path / "count"
    seen = []
    with monkeypatch.context() as m:
        m.setattr(cache_module, "_PROGRESS_EVERY", 2)
        _patch(m, seen.append, str(out))
        build_frame_cache(clips, out, num_frames=F, size=S, progress=False)
    assert {"os.fsync", "os.replace", "os.unlink"} <= set(seen)
    return len(seen)


def _check(out, clips, expected):
    """The folder is the finished cache, or a build that resumes to it."""
    try:
        cache = FrameCache.open(out)
        state = "new"
    except FileNotFoundError:
        state = "unfinished"
        cache = build_frame_cache(clips, out, num_frames=F, size=S, progress=False)
    frames, failed = expected
    assert {k: cache.get(k).numpy().tolist() for k in cache.keys()} == {k: v.tolist() for k, v in frames.items()}
    assert cache.failed == failed
    if state == "unfinished":  # a finished cache may keep a stale progress.json (removed by the next build)
        assert atomic.leftovers(out / "index.json") == [] and not (out / "progress.json").exists()
    return state


def test_a_kill_at_every_step_of_a_cache_build_leaves_the_cache_or_a_resumable_build(clips, expected, tmp_path,
                                                                                     monkeypatch):
    steps = _count(clips, tmp_path, monkeypatch)
    states = set()
    for k in range(steps + 1):
        out = tmp_path / f"kill{k}"

        def prepare(mp, out=out):
            mp.setattr(cache_module, "_PROGRESS_EVERY", 2)

        status = kill_before_step(k, lambda: build_frame_cache(clips, out, num_frames=F, size=S, progress=False),
                                  prepare=prepare, steps=_STEPS,
                                  only=lambda name, args, out=str(out): name != "os.open" or str(args[0]).startswith(out))
        assert status == (9 if k < steps else 0)
        states.add(_check(out, clips, expected))
    assert states == {"new", "unfinished"}


def test_a_failure_at_every_step_of_a_cache_build_leaves_the_cache_or_a_resumable_build(clips, expected, tmp_path,
                                                                                        monkeypatch):
    steps = _count(clips, tmp_path, monkeypatch)
    for k in range(steps):
        out = tmp_path / f"fail{k}"
        with monkeypatch.context() as m:
            m.setattr(cache_module, "_PROGRESS_EVERY", 2)
            _patch(m, fail_at_step(k, 28), str(out))
            try:
                build_frame_cache(clips, out, num_frames=F, size=S, progress=False)
            except OSError as exc:
                assert "injected" in str(exc)
        _check(out, clips, expected)


@pytest.mark.parametrize("content", ["[]", '{"num_frames": "4", "size": 16, "videos": {}, "failed": {}}',
                                     '{"num_frames": 4, "size": 16, "videos": [], "failed": {}}',
                                     '{"num_frames": 4, "size": 16, "videos": {"a": -1}, "failed": {}}',
                                     '{"num_frames": 4', ""])
def test_a_damaged_cache_index_is_one_clear_error(clips, expected, tmp_path, content):
    out = tmp_path / "cache"
    build_frame_cache(clips, out, num_frames=F, size=S, progress=False)
    (out / "index.json").write_text(content)
    with pytest.raises(CacheFormatError, match="index.json"):
        FrameCache.open(out)


def test_an_empty_frames_file_is_one_clear_error(clips, tmp_path):
    out = tmp_path / "cache"
    build_frame_cache(clips, out, num_frames=F, size=S, progress=False)
    (out / "frames.npy").write_bytes(b"")
    with pytest.raises(CacheFormatError, match="frames.npy"):
        FrameCache.open(out)
