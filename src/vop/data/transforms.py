"""Frame transforms in pure torch: CLIP's eval preprocessing, training augmentation and
normalisation.

Frames stay uint8 ``[F, H, W, 3]`` (channels last, as decoded) through the spatial
transforms, so a batch crosses to the training device at a quarter of the float size;
:func:`normalize` then turns it into CLIP's float input ``[..., 3, H, W]`` there.

* :func:`resize_center_crop` is CLIP's eval pipeline: bicubic resize of the short side
  (antialiased, as PIL does) then a centre crop.
* :func:`random_resized_crop` and :func:`hflip` are the training augmentations; one crop
  and one flip decision per video, so the frames of a clip stay aligned.
* :class:`VideoTransform` chooses between the two from ``train``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = [
    "MEAN",
    "STD",
    "resize",
    "resize_center_crop",
    "random_resized_crop",
    "hflip",
    "normalize",
    "VideoTransform",
]

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's RGB mean (of pixels in [0, 1])
STD = (0.26862954, 0.26130258, 0.27577711)  # CLIP's RGB std


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")


def resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic, antialiased resize of uint8 ``[F, H, W, 3]`` to ``[F, height, width, 3]``."""
    if frames.shape[1:3] == (height, width):
        return frames
    x = frames.permute(0, 3, 1, 2)  # [F, 3, H, W], a channels-last view
    if x.device.type == "cpu":
        # torch's native uint8 antialiased path: fixed-point like PIL (within 1-2 levels
        # of PIL's output) and ~20x faster than going through float.
        y = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    else:
        y = F.interpolate(x.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        y = y.round_().clamp_(0, 255).to(torch.uint8)  # bicubic overshoots
    return y.permute(0, 2, 3, 1).contiguous()  # [F, h, w, 3]


def resize_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP eval preprocessing: uint8 ``[F, H, W, 3]`` -> uint8 ``[F, size, size, 3]``.

    The short side is resized to ``size`` (the long side to ``int(size * long / short)``,
    as torchvision's ``Resize`` does), then the centre ``size x size`` is cropped.

    A frame more than twice as long as it is wide (or tall) is first cropped in source
    coordinates to the part the centre crop keeps (rounded outward), then resized: the
    resized frame would otherwise grow with the aspect ratio (a 4096 x 2 clip: 12 frames of
    224 x 458752). Frames up to 2:1 take the exact path above.
    """
    _check_frames(frames)
    h, w = frames.shape[1:3]
    if h <= w:
        new_h, new_w = size, max(size, int(size * w / h))
    else:
        new_h, new_w = max(size, int(size * h / w)), size
    if max(new_h, new_w) > 2 * size:
        top, left = (new_h - size) / 2.0, (new_w - size) / 2.0  # the crop in resized coordinates
        y0, y1 = math.floor(top * h / new_h), math.ceil((top + size) * h / new_h)
        x0, x1 = math.floor(left * w / new_w), math.ceil((left + size) * w / new_w)
        return resize(frames[:, y0:y1, x0:x1], size, size).contiguous()  # [F, size, size, 3]
    frames = resize(frames, new_h, new_w)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return frames[:, top : top + size, left : left + size].contiguous()


def random_resized_crop(
    frames: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random area (fraction ``scale`` of the frame, aspect ``ratio``) and resize
    it to ``size x size``; the same crop for every frame. uint8 ``[F, H, W, 3]`` ->
    uint8 ``[F, size, size, 3]``. Same sampling as torchvision's ``RandomResizedCrop``.
    """
    _check_frames(frames)
    top, left, h, w = _crop_params(frames.shape[1], frames.shape[2], scale, ratio, generator)
    return resize(frames[:, top : top + h, left : left + w], size, size)


def _crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop; a centre crop if 10 draws all miss."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target_area = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    # Fallback: the largest centre crop whose aspect lies inside ``ratio``.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def hflip(frames: torch.Tensor) -> torch.Tensor:
    """Mirror ``[..., H, W, 3]`` frames left-right."""
    return frames.flip(-2)


@lru_cache(maxsize=16)
def _norm_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # (x / 255 - mean) / std == x * scale + bias, folded so normalisation is one op.
    std = torch.tensor(STD, dtype=torch.float32)
    mean = torch.tensor(MEAN, dtype=torch.float32)
    scale = (1.0 / (255.0 * std)).view(3, 1, 1)
    bias = (-mean / std).view(3, 1, 1)
    return scale.to(device), bias.to(device)


def normalize(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CLIP-normalise uint8 ``[..., H, W, 3]`` into ``dtype`` ``[..., 3, H, W]``.

    One kernel on ``frames``' device: the channel move is a view, and the uint8 -> float
    conversion, scale and shift are a single ``addcmul`` written into a contiguous
    output (computed in float32, stored as ``dtype``). Move uint8 frames to the
    training device first, then call this.
    """
    if frames.dtype != torch.uint8 or frames.dim() < 3 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [..., H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    scale, bias = _norm_constants(frames.device)
    x = frames.movedim(-1, -3)  # [..., 3, H, W], a view
    out = torch.empty(x.shape, dtype=dtype, device=frames.device)
    return torch.addcmul(bias, x, scale, out=out)


@dataclass(frozen=True)
class VideoTransform:
    """Spatial transform of one clip: uint8 ``[F, H, W, 3]`` -> uint8 ``[F, size, size, 3]``.

    Training: random resized crop (if ``random_crop``, else the eval centre crop) and a
    horizontal flip with probability 0.5 (if ``flip``); evaluation: resize + centre crop.
    """

    size: int = 224  # output side in pixels (the backbone's input resolution)
    train: bool = False  # augment (training) or resize + centre crop (evaluation)
    random_crop: bool = True  # training: random resized crop instead of the centre crop
    flip: bool = True  # training: horizontal flip with probability 0.5
    crop_scale: tuple[float, float] = (0.5, 1.0)  # training: crop area range, fraction of the frame

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        object.__setattr__(self, "crop_scale", (float(lo), float(hi)))

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.train:
            return resize_center_crop(frames, self.size)
        if self.random_crop:
            frames = random_resized_crop(frames, self.size, scale=self.crop_scale, generator=generator)
        else:
            frames = resize_center_crop(frames, self.size)
        if self.flip and bool(torch.rand((), generator=generator) < 0.5):
            frames = hflip(frames)
        return frames
