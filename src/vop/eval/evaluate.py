"""Evaluate a model on a split: encode every video and caption once (batched, under
``inference_mode``), then compute retrieval metrics in bounded memory."""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from vop.data.datasets import OpenedSplit
from vop.data.transforms import VideoTransform, normalize
from vop.data.types import RetrievalSplit, VideoReadError
from vop.defaults import NUM_FRAMES
from vop.eval.config import EvalConfig
from vop.eval.metrics import chunked_similarity_metrics, pair_accuracy
from vop.runtime import autocast

log = logging.getLogger(__name__)


@torch.inference_mode()
def encode_texts(model, captions, device, precision="fp32", batch_size=256) -> torch.Tensor:
    out = []
    for start in range(0, len(captions), batch_size):
        ids = model.tokenize(list(captions[start:start + batch_size])).to(device)
        with autocast(device, precision):
            out.append(model.encode_text(ids).float())
    return torch.cat(out) if out else torch.empty(0, model.clip.config.embed_dim)


@torch.inference_mode()
def encode_videos(model, split: RetrievalSplit, device, *, num_frames: int, precision: str = "fp32",
                  batch_size: int = 32, progress: bool = True) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """-> (embeddings ``[V', D]`` of the readable videos, their indices, failures)."""
    transform = VideoTransform(size=model.clip.config.image_resolution, train=False)
    embs, kept, failed, batch, batch_idx = [], [], [], [], []

    def flush():
        if batch:
            frames = normalize(torch.stack(batch).to(device))
            with autocast(device, precision):
                embs.append(model.encode_video(frames).float().cpu())
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
        video_emb, kept, failed = encode_videos(model, split, device, num_frames=num_frames, precision=precision,
                                                batch_size=batch_size, progress=progress)
        position = {v: i for i, v in enumerate(kept)}
        captions = [i for i, v in enumerate(split.caption_to_video) if v in position]
        text_emb = encode_texts(model, [split.captions[i] for i in captions], device, precision)
        t2v = [position[split.caption_to_video[i]] for i in captions]
        metrics = chunked_similarity_metrics(text_emb, video_emb, t2v, chunk_size=chunk_size,
                                             dual_softmax=dual_softmax)
        if pairs:
            cap_pos = {c: i for i, c in enumerate(captions)}
            usable = [(position[a], cap_pos[ca], position[b], cap_pos[cb]) for a, ca, b, cb in pairs
                      if a in position and b in position and ca in cap_pos and cb in cap_pos]
            metrics["pair_accuracy"] = pair_accuracy(text_emb, video_emb, usable)
        metrics.update(num_videos=len(kept), num_captions=len(captions), skipped_videos=len(failed))
        if failed:
            log.warning("evaluation skipped %d unreadable videos, e.g. %s", len(failed), failed[:3])
        return metrics
    finally:
        model.train(was_training)
