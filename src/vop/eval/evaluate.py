"""Evaluate a model on a split: encode every video and caption once (batched, under
``inference_mode``), then compute retrieval metrics in bounded memory.

Text-conditioned methods (X-Pool: the video's representation depends on the caption) keep
per-frame features instead of one embedding per video, and score every caption against
every video through ``model.score_features`` a block of videos at a time, so memory holds
the ``[captions, videos]`` score matrix and one block, never a ``[videos, captions, D]``
tensor (X-Pool's own evaluation needs several 2 GB ones for a 1k x 1k test)."""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from vop.data.datasets import OpenedSplit
from vop.data.transforms import VideoTransform, normalize
from vop.data.types import RetrievalSplit, VideoReadError
from vop.defaults import NUM_FRAMES
from vop.eval.config import EvalConfig
from vop.eval.metrics import chunked_similarity_metrics, pair_accuracy, pair_accuracy_from_scores, retrieval_metrics
from vop.runtime import autocast

log = logging.getLogger(__name__)


@torch.inference_mode()
def encode_texts(model, captions, device, precision="fp32", batch_size=256, *, features: bool = False
                 ) -> torch.Tensor:
    """Caption embeddings ``[N, D]`` (L2-normalised), or with ``features`` what
    ``model.score_features`` takes (``model.text_features``)."""
    out = []
    for start in range(0, len(captions), batch_size):
        ids = model.tokenize(list(captions[start:start + batch_size])).to(device)
        with autocast(device, precision):
            out.append((model.text_features(ids) if features else model.encode_text(ids)).float())
    return torch.cat(out) if out else torch.empty(0, model.clip.config.embed_dim)


@torch.inference_mode()
def encode_videos(model, split: RetrievalSplit, device, *, num_frames: int, precision: str = "fp32",
                  batch_size: int = 32, progress: bool = True, features: bool = False
                  ) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """-> (embeddings ``[V', D]`` of the readable videos, their indices, failures). With
    ``features``: per-frame features ``[V', F', D]`` (``model.frame_features``) instead."""
    transform = VideoTransform(size=model.clip.config.image_resolution, train=False)
    embs, kept, failed, batch, batch_idx = [], [], [], [], []

    def flush():
        if batch:
            frames = normalize(torch.stack(batch).to(device))
            with autocast(device, precision):
                out = model.frame_features(frames) if features else model.encode_video(frames)
                embs.append(out.float().cpu())
            kept.extend(batch_idx)
            batch.clear()
            batch_idx.clear()

    for v in tqdm(range(split.num_videos), desc=f"encode {split.name}", unit="video", disable=not progress,
                  leave=False):
        try:
            batch.append(transform(split.source.load(v, num_frames, "middle")))
            batch_idx.append(v)
        except VideoReadError as exc:
            failed.append((split.source.describe(v), exc.reason))
            continue
        if len(batch) == batch_size:
            flush()
    flush()
    emb = torch.cat(embs) if embs else torch.empty(0, model.clip.config.embed_dim)
    return emb, kept, failed


def evaluate(model, split: OpenedSplit | RetrievalSplit, config: EvalConfig = EvalConfig(), *,
             device: str | torch.device = "cpu", precision: str = "fp32", num_frames: int | None = None,
             progress: bool = True) -> dict:
    """Metrics of ``model`` on ``split``: t2v/v2t R@1/5/10, MdR, MnR (+ pair accuracy when
    the split has reversal pairs). ``split`` is what :func:`vop.data.datasets.open_split`
    returns (its frame count is used) or a bare :class:`RetrievalSplit` (``num_frames``,
    default 12). Unreadable videos are left out with their captions and counted in
    ``skipped_videos``. ``precision`` is autocast (:data:`vop.runtime.PRECISIONS`)."""
    pairs = None
    if isinstance(split, OpenedSplit):
        pairs = split.pairs
        num_frames = num_frames or split.num_frames
        split = split.split
    num_frames = num_frames or NUM_FRAMES
    batch_size, chunk_size, dual_softmax = config.batch_size, config.chunk_size, config.dual_softmax
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        conditioned = bool(getattr(model, "text_conditioned", False))
        video_emb, kept, failed = encode_videos(model, split, device, num_frames=num_frames, precision=precision,
                                                batch_size=batch_size, progress=progress, features=conditioned)
        position = {v: i for i, v in enumerate(kept)}
        captions = [i for i, v in enumerate(split.caption_to_video) if v in position]
        text_emb = encode_texts(model, [split.captions[i] for i in captions], device, precision,
                                features=conditioned)
        t2v = [position[split.caption_to_video[i]] for i in captions]
        cap_pos = {c: i for i, c in enumerate(captions)}
        usable = [(position[a], cap_pos[ca], position[b], cap_pos[cb]) for a, ca, b, cb in (pairs or [])
                  if a in position and b in position and ca in cap_pos and cb in cap_pos]
        if conditioned:
            scores = text_conditioned_scores(model, text_emb, video_emb, device, precision, config.score_chunk)
            metrics = retrieval_metrics(scores, t2v, chunk_size=chunk_size, dual_softmax=dual_softmax)
            if pairs:
                metrics["pair_accuracy"] = pair_accuracy_from_scores(scores, usable)
        else:
            metrics = chunked_similarity_metrics(text_emb, video_emb, t2v, chunk_size=chunk_size,
                                                 dual_softmax=dual_softmax)
            if pairs:
                metrics["pair_accuracy"] = pair_accuracy(text_emb, video_emb, usable)
        metrics.update(num_videos=len(kept), num_captions=len(captions), skipped_videos=len(failed))
        if failed:
            log.warning("evaluation skipped %d unreadable videos, e.g. %s", len(failed), failed[:3])
        return metrics
    finally:
        model.train(was_training)


@torch.inference_mode()
def text_conditioned_scores(model, text_feats: torch.Tensor, frame_feats: torch.Tensor, device, precision: str,
                            video_chunk: int) -> torch.Tensor:
    """``[N_t, N_v]`` scores of a text-conditioned model, ``video_chunk`` videos at a time
    (each block holds ``video_chunk x N_t x D`` pooled features at most)."""
    text = text_feats.to(device)
    out = []
    for start in range(0, frame_feats.shape[0], video_chunk):
        block = frame_feats[start:start + video_chunk].to(device)
        with autocast(device, precision):
            out.append(model.score_features(text, block, chunk=video_chunk).float().cpu())
    return torch.cat(out, dim=1) if out else torch.empty(text_feats.shape[0], 0)
