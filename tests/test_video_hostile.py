"""Hostile video files: an extreme aspect ratio cannot blow up memory, huge frames are
scaled as decoded, and images or audio files under a video name are not videos."""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
import torch

import vop.data.transforms as transforms
import vop.data.video as video
from helpers_video import write_audio_only, write_video
from vop.data.transforms import resize, resize_center_crop
from vop.data.types import VideoReadError
from vop.data.video import sample_frames


def _stripes(h: int, w: int, frames: int = 4) -> np.ndarray:
    """Grey frames with a bright centre third along the long side."""
    x = np.full((frames, h, w, 3), 40, np.uint8)
    if w >= h:
        x[:, :, w // 3: 2 * w // 3] = 220
    else:
        x[:, h // 3: 2 * h // 3] = 220
    return x


def _largest_interpolation(monkeypatch, frames: torch.Tensor, size: int) -> tuple[torch.Tensor, int]:
    """Run resize_center_crop, recording the largest tensor F.interpolate is asked to make
    (refused beyond 64 M elements, so the old code fails here instead of exhausting memory)."""
    real = transforms.F.interpolate
    largest = [0]

    def spy(x, size=None, **kwargs):
        numel = x.shape[0] * x.shape[1] * size[0] * size[1]
        largest[0] = max(largest[0], numel, x.numel())
        if numel > 64 * 2**20:
            raise MemoryError(f"interpolate to {size} ({numel} elements)")
        return real(x, size=size, **kwargs)

    monkeypatch.setattr(transforms.F, "interpolate", spy)
    out = resize_center_crop(frames, size)
    monkeypatch.setattr(transforms.F, "interpolate", real)
    return out, largest[0]


@pytest.mark.parametrize("h, w", [(2, 4096), (4096, 2), (2, 2048)])
def test_an_extreme_aspect_ratio_costs_no_more_memory_than_a_normal_clip(monkeypatch, h, w):
    normal, normal_peak = _largest_interpolation(monkeypatch, torch.from_numpy(_stripes(240, 320, 12)), 224)
    out, peak = _largest_interpolation(monkeypatch, torch.from_numpy(_stripes(h, w, 12)), 224)
    assert out.shape == normal.shape == (12, 224, 224, 3)
    assert peak <= 1.5 * normal_peak, (peak, normal_peak)
    assert out.float().mean() > 200  # it is the centre that was kept


def test_frames_up_to_two_to_one_take_the_exact_resize_then_crop_path():
    frames = torch.randint(0, 256, (2, 90, 160, 3), dtype=torch.uint8)
    left = int(round((int(32 * 160 / 90) - 32) / 2.0))
    want = resize(frames, 32, int(32 * 160 / 90))[:, :, left: left + 32]
    assert torch.equal(resize_center_crop(frames, 32), want)


def test_a_4096x2_clip_decodes_and_encodes_like_a_normal_one(tmp_path, monkeypatch):
    from vop.search.encode import _load_one
    from vop.search.records import FileState

    write_video(tmp_path / "wide.mp4", _stripes(2, 4096, 6))
    write_video(tmp_path / "normal.mp4", _stripes(240, 320, 6))
    peaks = {}
    for name in ("wide.mp4", "normal.mp4"):
        state = FileState(name, (tmp_path / name).stat().st_size, 0)
        real = transforms.F.interpolate
        largest = [0]

        def spy(x, size=None, _largest=largest, _real=real, **kwargs):
            _largest[0] = max(_largest[0], x.shape[0] * x.shape[1] * size[0] * size[1], x.numel())
            if _largest[0] > 64 * 2**20:
                raise MemoryError(size)
            return _real(x, size=size, **kwargs)

        monkeypatch.setattr(transforms.F, "interpolate", spy)
        record, frames = _load_one(tmp_path, state, 12, 224)
        monkeypatch.setattr(transforms.F, "interpolate", real)
        assert frames.shape == (12, 224, 224, 3) and (record.width, record.height) == (
            (4096, 2) if name == "wide.mp4" else (320, 240))
        peaks[name] = largest[0]
    assert peaks["wide.mp4"] <= 1.5 * peaks["normal.mp4"]


def test_frames_larger_than_the_bound_are_scaled_as_decoded(tmp_path, monkeypatch):
    write_video(tmp_path / "big.mp4", _stripes(64, 128, 4))
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 32 * 16)
    frames, _ = sample_frames(tmp_path / "big.mp4", 4)
    assert frames.shape == (4, 16, 32, 3)  # 128 x 64 scaled to 32 x 16, the aspect kept


def test_a_png_renamed_mp4_is_not_a_video(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "picture.png")
    shutil.copy(tmp_path / "picture.png", tmp_path / "picture.mp4")
    with pytest.raises(VideoReadError, match="not a video: an image"):
        sample_frames(tmp_path / "picture.mp4", 4)


def test_a_file_whose_first_stream_is_audio_is_not_a_video(tmp_path):
    path = tmp_path / "audio-first.mkv"
    with av.open(str(path), "w") as container:
        audio = container.add_stream("pcm_s16le", rate=8000)
        vid = container.add_stream("mpeg4", rate=10)
        vid.width, vid.height, vid.pix_fmt = 32, 32, "yuv420p"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in audio.encode(frame):
            container.mux(packet)
        for image in _stripes(32, 32, 3):
            for packet in vid.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for stream in (audio, vid):
            for packet in stream.encode():
                container.mux(packet)
    with pytest.raises(VideoReadError, match="first stream is audio"):
        sample_frames(path, 4)
    with pytest.raises(VideoReadError, match="no video stream"):
        sample_frames(write_audio_only(tmp_path / "sound.mp4"), 4)


def test_encode_counts_non_videos_as_unreadable_with_the_reason(tmp_path):
    from PIL import Image

    from test_search_support import clip_frames, encode

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "real.mp4", clip_frames(0))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(videos / "fake.mp4", format="PNG")
    report = encode(videos, tmp_path / "index")
    assert report.total == 1 and [(f["path"], f["reason"]) for f in report.failed] == [
        ("fake.mp4", "not a video: an image (png)")]
