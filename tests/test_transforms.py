"""Pure-torch frame transforms: shapes, colours, crops, flips and CLIP normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vop.data.transforms import (
    MEAN,
    STD,
    VideoTransform,
    hflip,
    normalize,
    random_resized_crop,
    resize_center_crop,
)


def random_frames(f=3, h=36, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (f, h, w, 3), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize(("h", "w"), [(36, 64), (64, 36), (30, 30), (10, 14), (224, 224)])
def test_resize_center_crop_shape_and_dtype(h, w):
    out = resize_center_crop(random_frames(2, h, w), 16)
    assert out.shape == (2, 16, 16, 3) and out.dtype == torch.uint8 and out.is_contiguous()


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (12, 200, 77)])
def test_resize_center_crop_keeps_a_solid_colour(colour):
    frames = torch.tensor(colour, dtype=torch.uint8).expand(2, 45, 80, 3).contiguous()
    out = resize_center_crop(frames, 24)
    assert torch.equal(out, torch.tensor(colour, dtype=torch.uint8).expand(2, 24, 24, 3))


def test_resize_center_crop_takes_the_centre():
    # Landscape 20x60: the short side already fits, so the crop is columns 20..39.
    frames = torch.zeros(1, 20, 60, 3, dtype=torch.uint8)
    frames[:, :, 20:40] = 200
    out = resize_center_crop(frames, 20)
    assert torch.equal(out, torch.full((1, 20, 20, 3), 200, dtype=torch.uint8))


def test_resize_center_crop_matches_pil_bicubic():
    # CLIP's reference preprocessing is PIL: Resize(short side, BICUBIC) + CenterCrop.
    pil = pytest.importorskip("PIL.Image")
    g = torch.Generator().manual_seed(0)
    small = torch.randint(0, 256, (1, 3, 18, 32), generator=g).float()
    frames = torch.nn.functional.interpolate(small, size=(90, 160), mode="bilinear").round().to(torch.uint8)
    frames = frames.permute(0, 2, 3, 1).contiguous()  # smooth content, [1, 90, 160, 3]
    resized = np.asarray(pil.fromarray(frames[0].numpy()).resize((56, 32), pil.BICUBIC))  # short side 32
    expected = torch.from_numpy(resized[:, 12:44].copy())
    diff = (resize_center_crop(frames, 32)[0].int() - expected.int()).abs()
    assert diff.max() <= 2 and diff.float().mean() < 0.1


def test_resize_is_antialiased():
    # A 1-pixel checkerboard shrunk 8x averages to mid-grey instead of aliasing.
    board = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 255).to(torch.uint8)
    frames = board[None, :, :, None].expand(1, 64, 64, 3).contiguous()
    out = resize_center_crop(frames, 8).float()
    assert (out - 127.5).abs().max() < 3


def test_random_resized_crop_same_crop_for_every_frame():
    frames = random_frames(1).expand(4, -1, -1, -1).contiguous()
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        out = random_resized_crop(frames, 16, generator=g)
        assert out.shape == (4, 16, 16, 3) and out.dtype == torch.uint8
        assert all(torch.equal(out[0], out[i]) for i in range(1, 4))


def test_random_resized_crop_reproducible_and_varied():
    frames = random_frames()
    a = random_resized_crop(frames, 16, generator=torch.Generator().manual_seed(5))
    b = random_resized_crop(frames, 16, generator=torch.Generator().manual_seed(5))
    c = random_resized_crop(frames, 16, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_resized_crop_of_a_solid_colour_is_that_colour():
    frames = torch.tensor((30, 60, 90), dtype=torch.uint8).expand(2, 40, 50, 3).contiguous()
    out = random_resized_crop(frames, 12, scale=(0.1, 0.3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, frames[:, :12, :12])


def test_hflip():
    frames = torch.arange(5, dtype=torch.uint8)[None, None, :, None].expand(2, 3, 5, 3)
    flipped = hflip(frames)
    assert torch.equal(flipped[0, 0, :, 0], torch.tensor([4, 3, 2, 1, 0], dtype=torch.uint8))
    assert torch.equal(hflip(flipped), frames)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (2, 3, 5, 7, 3), (5, 7, 3)])
def test_normalize_matches_clip_formula(shape):
    frames = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = normalize(frames)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    expected = (frames.movedim(-1, -3).float() / 255 - mean) / std
    assert out.shape == expected.shape and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_normalize_dtype_and_input_check():
    frames = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    out = normalize(frames, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), normalize(frames), atol=2e-2, rtol=1e-2)
    with pytest.raises(ValueError):
        normalize(frames.float())


def test_video_transform_eval_is_resize_center_crop():
    frames = random_frames()
    assert torch.equal(VideoTransform(size=16)(frames), resize_center_crop(frames, 16))


def test_video_transform_train_flips_about_half_the_time():
    frames = random_frames()
    centre = resize_center_crop(frames, 16)
    t = VideoTransform(size=16, train=True, random_crop=False, flip=True)
    g = torch.Generator().manual_seed(0)
    outs = [t(frames, g) for _ in range(40)]
    flips = sum(torch.equal(o, hflip(centre)) for o in outs)
    assert sum(torch.equal(o, centre) for o in outs) + flips == 40
    assert 8 <= flips <= 32


def test_video_transform_train_random_crop():
    frames = random_frames()
    t = VideoTransform(size=16, train=True, flip=False)
    a = t(frames, torch.Generator().manual_seed(0))
    assert a.shape == (3, 16, 16, 3) and a.dtype == torch.uint8
    assert torch.equal(a, t(frames, torch.Generator().manual_seed(0)))
    plain = VideoTransform(size=16, train=True, random_crop=False, flip=False)
    assert torch.equal(plain(frames), resize_center_crop(frames, 16))


@pytest.mark.parametrize(
    "kwargs", [{"size": 0}, {"crop_scale": (0.0, 1.0)}, {"crop_scale": (0.8, 0.5)}, {"crop_scale": (0.5, 1.2)}]
)
def test_video_transform_validates(kwargs):
    with pytest.raises(ValueError):
        VideoTransform(**kwargs)


def test_transforms_reject_non_uint8():
    with pytest.raises(ValueError):
        resize_center_crop(torch.zeros(1, 8, 8, 3), 4)
