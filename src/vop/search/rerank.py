"""Two-stage search for text-conditioned methods (X-Pool): recall, then re-rank.

A text-conditioned method has no single embedding per video: each caption pools each
video's frames its own way (``model.text_conditioned``; docs/peers.md). Scoring every
video of a large collection that way for every query is too slow, so search runs in two
stages:

1. **Recall**: dot products of the query's ``model.encode_text`` with the stored
   text-independent embeddings (``embeddings.npy``, the mean-pooled frames), exactly
   (:func:`first_stage`) or through a FAISS index of them (:mod:`vop.search.ann`); the
   ``recall_k`` best are the candidates.
2. **Re-rank** (:func:`rerank`): ``model.score_features`` of the query's
   ``model.text_features`` against the candidates' stored per-frame features
   (``frames.npy``, float16), a block of ``chunk`` candidates at a time, so memory is
   bounded by ``chunk x F x D`` per query whatever the collection's size.

:func:`two_stage_search` does both and is what the search service and ``vop search`` call;
for a method that is not text-conditioned it is the first stage alone (the dot products
are that method's scores), so callers need not tell the two apart.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vop.search.store import FRAMES, StoredIndex

__all__ = ["DEFAULT_RECALL", "NoFrameFeatures", "first_stage", "rerank", "two_stage_search"]

DEFAULT_RECALL = 100  # first-stage candidates per query (at least k)
_BLOCK = 1 << 16  # stored embeddings per block of the exact first stage


class NoFrameFeatures(ValueError):
    """A text-conditioned model asked to re-rank an index that stores no per-frame features."""


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def first_stage(stored: StoredIndex, queries: np.ndarray, k: int, index=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best stored videos per query by dot product with the stored embeddings:
    ``(scores [Q, k'], rows [Q, k'])``, best first, ``k' = min(k, N)``.

    ``queries`` are L2-normalised query embeddings ``[Q, D]`` (``model.encode_text``).
    ``index`` is a FAISS index of ``stored.embeddings`` (:func:`vop.search.ann.load_or_build`),
    which may be approximate and may return row -1 for a missing hit; without one the
    search is exact, a block of embeddings at a time (ties: the lower row first)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != stored.embeddings.shape[1]:
        raise ValueError(f"expected query embeddings (Q, {stored.embeddings.shape[1]}), got {q.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if index is not None:
        from vop.search import ann

        scores, rows = ann.search(index, q, k)
        return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)
    emb = stored.embeddings
    n = len(emb)
    k = min(k, n)
    best_s = np.zeros((len(q), 0), np.float32)
    best_r = np.zeros((len(q), 0), np.int64)
    for start in range(0, n, _BLOCK):
        s = q @ np.asarray(emb[start:start + _BLOCK], dtype=np.float32).T  # [Q, b]
        r = np.broadcast_to(np.arange(start, start + s.shape[1], dtype=np.int64), s.shape)
        s, r = np.concatenate([best_s, s], axis=1), np.concatenate([best_r, r], axis=1)
        if s.shape[1] > k:
            keep = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s, r = np.take_along_axis(s, keep, 1), np.take_along_axis(r, keep, 1)
        best_s, best_r = s, r
    order = np.lexsort((best_r, -best_s), axis=1) if n else np.zeros((len(q), 0), np.int64)
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_r, order, 1)


def _text_features(model, text, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Token ids ``[Q, L]`` (integers) or ``model.text_features`` ``[Q, D]`` -> the latter."""
    text = torch.as_tensor(text)
    if text.ndim != 2:
        raise ValueError(f"expected token ids (Q, L) or text features (Q, D), got shape {tuple(text.shape)}")
    if not text.is_floating_point():
        with torch.inference_mode():
            return model.text_features(text.to(device))
    return text.to(device=device, dtype=dtype)


def rerank(model, stored: StoredIndex, text, candidates, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Re-score each query's candidates with the text-conditioned scorer:
    ``(scores [Q, K], rows [Q, K])``, each row sorted best first.

    ``text``: token ids ``[Q, L]`` (``model.tokenize``) or ``model.text_features`` ``[Q, D]``.
    ``candidates``: index rows ``[Q, K]`` from the first stage (-1 marks no candidate; those
    come last, with score ``-inf`` and row -1). ``scores[q, j]`` is
    ``model.score_features(text[q], frame_features[rows[q, j]])``: the per-frame features
    stored in ``frames.npy``, ``chunk`` candidates at a time, so no more than ``chunk x F x
    D`` frame features (and X-Pool's ``chunk x 1 x D`` pooled ones) exist at once. Ties
    keep the candidates' order. An index without per-frame features is re-ranked by its
    stored embeddings when the model is not text-conditioned (the same scores), and
    refused (:class:`NoFrameFeatures`) when it is."""
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of videos, got {chunk}")
    device, dtype = _model_device_dtype(model)
    text = _text_features(model, text, device, dtype)
    cand = np.asarray(candidates)
    if cand.ndim != 2 or cand.shape[0] != text.shape[0] or not np.issubdtype(cand.dtype, np.integer):
        raise ValueError(f"candidates must be integer rows (Q, K) for the {text.shape[0]} queries, got "
                         f"{cand.dtype} {cand.shape}")
    n = len(stored)
    if cand.size and (cand.min() < -1 or cand.max() >= n):
        raise ValueError(f"candidate rows must lie in 0..{n - 1} (or be -1 for none); got {cand.min()}..{cand.max()}")
    frames = stored.frame_features
    if frames is None and model.text_conditioned:
        raise NoFrameFeatures(
            f"index {stored.path} stores no per-frame features ({FRAMES}), which method "
            f"{model.config.method!r} needs to re-rank: it was encoded before vop stored them, or by a method that "
            "is not text-conditioned; re-run vop encode with this checkpoint (it re-encodes every video)")
    if frames is not None and frames.shape[2] != text.shape[1]:
        raise ValueError(f"index {stored.path} holds frame features of dimension {frames.shape[2]}, the model's "
                         f"text features have {text.shape[1]}")
    q_count, k = cand.shape
    scores = np.full((q_count, k), -np.inf, np.float32)
    with torch.inference_mode():
        for qi in range(q_count):
            valid = np.flatnonzero(cand[qi] >= 0)
            for start in range(0, len(valid), chunk):
                cols = valid[start:start + chunk]
                rows = cand[qi, cols]
                if frames is None:  # not text-conditioned: the score is the dot product
                    emb = torch.from_numpy(np.asarray(stored.embeddings[rows], dtype=np.float32))
                    s = F.normalize(text[qi:qi + 1].float(), dim=-1) @ emb.to(device).T
                else:
                    feats = torch.from_numpy(np.asarray(frames[rows], dtype=np.float32)).to(device=device,
                                                                                           dtype=dtype)
                    s = model.score_features(text[qi:qi + 1], feats, chunk=chunk)  # [1, c]
                scores[qi, cols] = s[0].float().cpu().numpy()
    order = np.argsort(-scores, axis=1, kind="stable")
    out_rows = np.take_along_axis(cand.astype(np.int64), order, 1)
    out_scores = np.take_along_axis(scores, order, 1)
    out_rows[~np.isfinite(out_scores)] = -1
    return out_scores, out_rows


def two_stage_search(model, stored: StoredIndex, query_texts: str | Sequence[str], k: int,
                     recall_k: int | None = None, *, index=None, chunk: int = 256
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best videos of ``stored`` for each query: ``(scores [Q, k'], rows [Q, k'])``,
    best first, ``k' = min(k, N)``; ``rows`` index ``stored.records`` (-1: no hit, only from
    an approximate ``index``).

    Text-conditioned models (``model.text_conditioned``): the ``recall_k`` (default
    ``max(k, 100)``) best by dot product with the stored embeddings (:func:`first_stage`,
    through the FAISS ``index`` if given), re-ranked by ``model.score_features`` on the
    stored per-frame features (:func:`rerank`); a video outside the first stage's
    candidates is never returned. Other models: the first stage alone (its dot products are
    their scores). Scores are cosine similarities before the logit scale, as
    ``model.score`` gives them."""
    texts = [query_texts] if isinstance(query_texts, str) else list(query_texts)
    if not texts:
        raise ValueError("no query texts given")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    recall_k = max(k, DEFAULT_RECALL) if recall_k is None else recall_k
    if recall_k < k:
        raise ValueError(f"recall_k ({recall_k}) must be at least k ({k}): the re-ranking only reorders the first "
                         "stage's candidates")
    device, _ = _model_device_dtype(model)
    with torch.inference_mode():
        ids = model.tokenize(texts).to(device)
        if not model.text_conditioned:  # encode_text, as the one-stage search always did
            return first_stage(stored, model.encode_text(ids).float().cpu().numpy(), k, index=index)
        raw = model.text_features(ids)  # [Q, D], unnormalised: what the pooling reads
        query = F.normalize(raw.float(), dim=-1).cpu().numpy()  # = encode_text(ids), without a second pass
    _, candidates = first_stage(stored, query, recall_k, index=index)
    scores, rows = rerank(model, stored, raw, candidates, chunk=chunk)
    return scores[:, :k], rows[:, :k]
