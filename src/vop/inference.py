"""Inference from Python: a trained method (or a plain CLIP) as a :class:`Retriever` that
embeds video files and sentences.

>>> import vop
>>> model = vop.load("runs/msrvtt-9k/vop-fc/checkpoints/best")  # doctest: +SKIP
>>> v = model.encode_videos(["a.mp4", "b.webm"])                # doctest: +SKIP
>>> t = model.encode_texts(["a dog catches a frisbee"])         # doctest: +SKIP
>>> scores = t @ v.T                                            # doctest: +SKIP

For a text-conditioned method (``xpool``) ``t @ v.T`` ranks by the text-independent
recall embedding only; its own scores are ``model.model.score(ids, frames)`` (or the
re-ranking of ``vop search``), since each caption pools each video's frames.

What :func:`load` accepts: a checkpoint folder written by ``vop train`` (``meta.json`` +
``weights.safetensors``); a ``(architecture, tag)`` pair such as ``("ViT-B-32", "openai")``
(pretrained weights, downloaded once); any backbone source of :func:`vop.backbone.load`
(``"tiny-synthetic"``, ``"ViT-B-32:openai"``, a CLIP file or folder, a hub id); a loaded
CLIP or a ``VideoTextModel``. A backbone alone gives the zero-shot model (the frozen CLIP,
frame embeddings mean-pooled).

Videos are embedded exactly as evaluation embeds them (:mod:`vop.eval.evaluate`): PyAV
decodes the middle frame of each of ``F`` equal segments (:func:`vop.data.video.sample_frames`,
``F`` the method's own frame count, else 12), :class:`~vop.data.transforms.VideoTransform`
(``train=False``: resize the short side to the backbone's resolution, centre crop),
:func:`~vop.data.transforms.normalize`, then ``model.encode_video``; the tests check the two
agree. Outputs are L2-normalised fp32 tensors on the CPU, so ``t @ v.T`` is cosine
similarity.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from vop.backbone import load as load_backbone
from vop.backbone.clip import CLIP
from vop.checkpoint import META, WEIGHTS, load_checkpoint, read_meta
from vop.data.transforms import VideoTransform, normalize
from vop.data.types import VideoReadError
from vop.data.video import sample_frames
from vop.defaults import NUM_FRAMES
from vop.model import create
from vop.model.video_text import VideoTextModel
from vop.runtime import WEIGHT_DTYPES, check_weight_dtype, resolve_device

__all__ = ["EncodedVideos", "Retriever", "load"]

ON_ERROR = ("raise", "skip")


class EncodedVideos(NamedTuple):
    """What ``encode_videos(..., on_error="skip")`` returns."""

    embeddings: torch.Tensor  # [len(kept), D], L2-normalised, fp32, CPU
    kept: list[int]  # the input position of each row
    skipped: list[tuple[int, str, str]]  # (input position, name, reason) of each unreadable video


def _is_checkpoint(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and (Path(source) / META).is_file()


def load(source: Any, *, backbone: str | os.PathLike | CLIP | None = None, device: str | torch.device | None = None,
         precision: str | None = None, **kwargs: Any) -> Retriever:
    """A :class:`Retriever` for ``source``.

    ``source``: a checkpoint folder (``vop train``), an ``(architecture, tag)`` pair, a
    backbone source for :func:`vop.backbone.load` (the zero-shot model), a loaded
    :class:`~vop.backbone.clip.CLIP` (zero-shot) or a ``VideoTextModel``.
    ``backbone``: for a checkpoint, the backbone to put it on instead of the source it
    records (a source or a loaded CLIP; its weights must be the recorded ones).
    ``device``: ``"auto"`` (default: CUDA when available, else CPU), ``"cpu"``, ``"cuda"``...
    ``precision``: ``"fp32"`` (default) or ``"bf16"``, a weight cast (the model's tensors are
    converted: half the memory, several times faster on CPUs with bf16 instructions and on
    GPUs; embeddings agree with fp32 to a cosine of about 0.9999, docs/search.md).
    ``kwargs`` go to :func:`vop.backbone.load` (``pretrained=``, ``activation=``, ...).
    """
    if isinstance(source, VideoTextModel):
        if backbone is not None or kwargs:
            raise ValueError("a built model takes no backbone or backbone options")
        model = source
    elif isinstance(source, CLIP):
        if backbone is not None:
            raise ValueError("source is already a backbone: leave out backbone=")
        model = create("zero-shot", source)
    elif _is_checkpoint(source):
        clip = backbone if isinstance(backbone, CLIP) else load_backbone(
            backbone or read_meta(source)["backbone"]["source"], **kwargs)
        if isinstance(backbone, CLIP) and _trains_backbone(source):
            # Its weights overwrite backbone tensors: never the caller's CLIP, which other
            # models may share (the fingerprint is checked on the copy, before loading).
            clip = copy.deepcopy(backbone)
        model, _ = load_checkpoint(source, clip)  # checks the recorded architecture and fingerprint
    else:
        if backbone is not None:
            raise ValueError(f"backbone= goes with a checkpoint folder; {source!r} is not one (no {META} in it)")
        model = create("zero-shot", _zero_shot_backbone(source, kwargs))
    return Retriever(model, device=device, precision=precision)


def _trains_backbone(checkpoint) -> bool:
    """Whether a checkpoint holds backbone tensors (``clip.*``: full, bias, proj, partial, xpool)."""
    from safetensors import safe_open

    with safe_open(str(Path(checkpoint) / WEIGHTS), framework="pt") as f:
        return any(k.startswith("clip.") for k in f.keys())


def _zero_shot_backbone(source: Any, kwargs: dict) -> CLIP:
    if isinstance(source, tuple):
        if len(source) != 2 or not all(isinstance(s, str) for s in source):
            raise ValueError(f"a pair names pretrained weights as (architecture, tag), e.g. ('ViT-B-32', 'openai'); "
                             f"got {source!r}")
        return load_backbone(source[0], pretrained=source[1], **kwargs)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"vop.load takes a checkpoint folder, an (architecture, tag) pair or a backbone source, "
                        f"not {type(source).__name__}")
    try:
        return load_backbone(source, **kwargs)
    except FileNotFoundError as exc:
        if Path(source).is_dir():
            raise
        raise FileNotFoundError(f"{exc} It is not a checkpoint folder either (a folder with {META}, written by "
                                "vop train, e.g. runs/msrvtt-9k/vop-fc/checkpoints/best).") from None


class Retriever:
    """A video-text model ready for inference: ``encode_videos`` (files or frames) and
    ``encode_texts`` (sentences), both L2-normalised fp32 on the CPU.

    The model is :attr:`model`; other attributes are the model's (``retriever.config``,
    ``retriever.encode_text(ids)``, ...)."""

    def __init__(self, model: VideoTextModel, *, device: str | torch.device | None = None,
                 precision: str | None = None):
        self.model = model
        self.to(device or "auto", precision or "fp32")

    def to(self, device: str | torch.device | None = None, precision: str | None = None) -> "Retriever":
        """Move the model to ``device`` and/or cast its weights to ``precision`` (in place;
        the model given to :class:`Retriever` is the one moved). Returns ``self``."""
        if device is not None:
            self.device = resolve_device(device)
        if precision is not None:
            self.precision = check_weight_dtype(precision)
            self.dtype = WEIGHT_DTYPES[self.precision]
        self.model = self.model.eval().to(device=self.device, dtype=self.dtype)
        return self

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (during __init__ or unpickling)
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __repr__(self) -> str:
        return (f"Retriever(method {self.model.config.method!r} on {self.model.clip.config.name}, "
                f"{self.resolution} px, {self.num_frames} frames, device {self.device}, weights {self.precision})")

    @property
    def resolution(self) -> int:
        """The frame side the backbone takes (frames are resized and centre-cropped to it)."""
        return self.model.clip.config.image_resolution

    @property
    def num_frames(self) -> int:
        """Frames sampled per video: the method's own count (video-prompt methods are built
        for one), else 12."""
        return self.model.num_frames or NUM_FRAMES

    # -- text ---------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_texts(self, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Sentences -> ``[N, D]`` (a single string gives ``[1, D]``)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("encode_texts takes a string or a list of strings")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = [self.model.encode_text(self.model.tokenize(texts[i:i + batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.model.clip.config.embed_dim)

    # -- video --------------------------------------------------------------------------
    def _frames_count(self, num_frames: int | None) -> int:
        if num_frames is None:
            return self.num_frames
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        fixed = self.model.num_frames
        if fixed is not None and fixed != num_frames:
            raise ValueError(f"method {self.model.config.method!r} was built for {fixed} frames per video, "
                             f"not {num_frames}; leave num_frames out")
        return num_frames

    def encode_videos(self, videos: Any, *, batch_size: int = 8, num_frames: int | None = None,
                      progress: bool = False, on_error: str = "raise", workers: int = 2):
        """Videos -> ``[N, D]``.

        ``videos``: video files (a path or a list of paths), or frames: uint8 ``[F, H, W, 3]``
        per video (a list of those, or one ``[N, F, H, W, 3]`` tensor/array; resized and
        centre-cropped like files), or float ``[N, F, 3, R, R]`` already normalised
        (``R`` the backbone's resolution, :attr:`resolution`). ``num_frames``: frames sampled
        per file (default :attr:`num_frames`). ``batch_size`` videos go through the model at
        a time; ``workers`` threads decode ahead. An unreadable file raises
        :class:`~vop.data.types.VideoReadError` naming it; with ``on_error="skip"`` the
        readable ones are embedded and an :class:`EncodedVideos` ``(embeddings, kept,
        skipped)`` says which were left out."""
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        items = self._items(videos)
        frames_per_video = self._frames_count(num_frames)
        transform = VideoTransform(size=self.resolution, train=False)
        dim = self.model.clip.config.embed_dim
        rows: list[torch.Tensor] = []
        kept: list[int] = []
        skipped: list[tuple[int, str, str]] = []

        def prepare(item) -> torch.Tensor:
            """One video -> uint8 [F, R, R, 3], or float [F, 3, R, R] passed through."""
            if isinstance(item, (str, os.PathLike)):
                item, _ = sample_frames(item, num_frames=frames_per_video, mode="middle")
            if item.dtype == torch.uint8:
                return transform(item)
            return item

        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), unit="video", desc="encode", disable=not progress, leave=False)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vop-decode") as pool:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                futures = [pool.submit(prepare, item) for item in chunk]
                batch, positions = [], []
                for offset, future in enumerate(futures):
                    try:
                        batch.append(future.result())
                        positions.append(start + offset)
                    except VideoReadError as exc:
                        if on_error == "raise":
                            raise VideoReadError(exc.path, f"{exc.reason} (pass on_error='skip' to embed the "
                                                           "other videos and list this one)") from exc
                        skipped.append((start + offset, exc.path, exc.reason))
                if batch:
                    rows.append(self._encode_batch(batch))
                    kept.extend(positions)
                bar.update(len(chunk))
        bar.close()
        embeddings = torch.cat(rows) if rows else torch.empty(0, dim)
        return EncodedVideos(embeddings, kept, skipped) if on_error == "skip" else embeddings

    def _items(self, videos: Any) -> list:
        if isinstance(videos, (str, os.PathLike)):
            return [videos]
        if isinstance(videos, np.ndarray):
            videos = torch.from_numpy(videos)
        if isinstance(videos, torch.Tensor):
            if videos.dim() == 4:
                raise ValueError(f"a frames tensor is a batch of videos [N, F, H, W, 3] (uint8) or [N, F, 3, R, R] "
                                 f"(normalised float); got one of {tuple(videos.shape)}: add the video axis "
                                 "(frames[None]) or pass a list")
            videos = list(videos)
        items = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in list(videos)]
        res = self.resolution
        for i, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                continue
            if not isinstance(item, torch.Tensor):
                raise TypeError(f"video {i}: expected a path or a frames tensor, got {type(item).__name__}")
            if item.dtype == torch.uint8:
                if item.dim() != 4 or item.shape[-1] != 3:
                    raise ValueError(f"video {i}: uint8 frames must be [F, H, W, 3] (RGB, channels last), "
                                     f"got {tuple(item.shape)}")
            elif item.is_floating_point():
                if item.dim() != 4 or tuple(item.shape[1:]) != (3, res, res):
                    raise ValueError(f"video {i}: float frames must be normalised [F, 3, {res}, {res}] (or pass "
                                     f"uint8 [F, H, W, 3] frames and they are resized here), got {tuple(item.shape)}")
            else:
                raise TypeError(f"video {i}: frames must be uint8 or float, got {item.dtype}")
        return items

    @torch.inference_mode()
    def _encode_batch(self, batch: list[torch.Tensor]) -> torch.Tensor:
        lengths = {b.shape[0] for b in batch}
        if len(lengths) > 1:
            raise ValueError(f"the videos of one batch have different frame counts {sorted(lengths)}; give every "
                             "video the same number of frames")
        uint8 = [b for b in batch if b.dtype == torch.uint8]
        if uint8 and len(uint8) != len(batch):
            frames = torch.stack([normalize(b) if b.dtype == torch.uint8 else b.float() for b in batch])
            frames = frames.to(self.device)
        elif uint8:
            frames = normalize(torch.stack(batch).to(self.device))  # uint8 crosses to the device: a quarter the bytes
        else:
            frames = torch.stack(batch).float().to(self.device)
        return self.model.encode_video(frames.to(self.dtype)).float().cpu()
