"""Retrieval metrics: R@1/5/10, median and mean rank, text-to-video and video-to-text,
from a similarity matrix or, in bounded memory, straight from embeddings.

Shapes: ``sim`` is ``(T, V)`` (texts x videos); ``text_to_video`` is ``(T,)`` and holds
the index of the video each caption describes (identity when omitted, for ``T == V``).
Ranks are 1-based; R@K is a percentage in 0..100.

Conventions, the same for every function here:

* **Text-to-video** ranks caption ``i``'s video among all ``V`` videos.
* **Video-to-text**: a video may have many captions, and it is a hit at K when ANY of
  them is within the top K. Its rank is therefore that of its best-scoring caption
  among the texts that do not describe it. A video with no caption has no ground truth
  and is left out of the v2t metrics (so ``ranks_v2t`` may be shorter than ``V``).
* **Ties are broken at random, in expectation**: with ``g`` competitors scoring above
  the ground truth and ``t`` scoring exactly the same, the ground truth is equally likely
  to sit at any rank ``g + 1 .. g + t + 1``. R@K counts the probability that it is
  within K, ``clamp(K - g, 0, t + 1) / (t + 1)``, and the rank reported for MdR/MnR is
  the expected one, ``1 + g + t / 2`` (for v2t the competitors are the texts NOT
  belonging to the video, compared with the best score among its own captions). A
  constant similarity matrix thus scores chance (R@1 = 1 / V, MnR = (V + 1) / 2). The
  usual ``argsort`` convention breaks ties by index, which hands a collapsed model
  R@1 = 100 on a diagonal benchmark; always ranking ties last would instead give 0 to
  a model that cannot tell two identical videos (a clip and its time reversal under
  mean pooling) apart, where 50 % is the truth.
* Similarities must be finite: a NaN would compare false with everything and quietly
  give rank 0 (hence a perfect score), so it is rejected with a ``ValueError``.

Memory: every function walks the rows of ``sim`` in blocks of ``chunk_size`` texts and
keeps only ``O(T + V)`` state between blocks, so the extra memory is at most two
``chunk_size x V`` float blocks (none for a float32 ``sim`` without DSL: its blocks are
views). :func:`chunked_similarity_metrics` computes the blocks from the embeddings and
never holds the ``T x V`` matrix (100,000 x 10,000 would be 4 GB).

Dual-softmax (DSL, Cheng et al. 2021, "Improving video-text retrieval by multi-stream
corpus alignment and dual softmax loss") re-weights each score by a softmax over the
*queries*: for t2v ``sim * softmax(temperature * sim, dim=0)`` (how much this video
prefers this text over all other texts), for v2t the same with ``dim=1``. It uses the
whole test set as a prior, i.e. it is transductive; it is off by default and the result
carries ``"post_processing": "dual-softmax"`` when on, so that it is labelled wherever
it is reported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Union

import numpy as np
import torch

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DSL_TEMPERATURE",
    "RECALL_AT",
    "Metrics",
    "chunked_similarity_metrics",
    "dual_softmax",
    "metrics_from_counts",
    "metrics_from_ranks",
    "pair_accuracy",
    "ranks_t2v",
    "ranks_v2t",
    "retrieval_metrics",
]

DEFAULT_CHUNK_SIZE = 4096  # texts per block: 4096 x 10k videos x 4 B = 156 MiB per float block
DEFAULT_DSL_TEMPERATURE = 100.0  # CLIP's logit scale, the value DSL is used with
RECALL_AT = (1, 5, 10)

ArrayLike = Union[torch.Tensor, np.ndarray]
IndexLike = Union[torch.Tensor, np.ndarray, Sequence[int]]
# Metric name -> value; values are floats except the "post_processing" label.
Metrics = dict[str, Union[float, str]]
# (start, stop) -> rows start:stop of the similarity matrix, (stop - start, V).
_BlockFn = Callable[[int, int], torch.Tensor]
_Transform = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- checks


def _as_matrix(x: ArrayLike, name: str, shape_hint: str) -> torch.Tensor:
    """``x`` as a 2-D floating tensor (numpy is wrapped without a copy)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    x = x.detach()
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape {shape_hint}, got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty with shape {shape_hint}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    return x


def _upcast(block: torch.Tensor) -> torch.Tensor:
    # Half precision has ~3 significant digits: too coarse to compare scores or to
    # exponentiate them for DSL. Upcasting is exact, so ranks are those of the given values.
    return block.float() if block.dtype in (torch.float16, torch.bfloat16) else block


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_text_to_video(
    text_to_video: IndexLike | None, num_texts: int, num_videos: int, device: torch.device
) -> torch.Tensor:
    """``text_to_video`` as a long tensor ``(T,)`` with entries in ``0..V-1``."""
    if text_to_video is None:
        if num_texts != num_videos:
            raise ValueError(
                f"text_to_video omitted means caption i describes video i, which needs as many "
                f"texts as videos; got {num_texts} texts and {num_videos} videos: pass "
                f"text_to_video of shape (num_texts,) = ({num_texts},)"
            )
        return torch.arange(num_texts, device=device)
    if isinstance(text_to_video, torch.Tensor):
        t = text_to_video.detach()
    else:
        t = torch.as_tensor(np.asarray(text_to_video))
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"text_to_video must hold integer video indices, got dtype {t.dtype}")
    if tuple(t.shape) != (num_texts,):
        raise ValueError(
            f"text_to_video must have shape (num_texts,) = ({num_texts},), got {tuple(t.shape)}"
        )
    t = t.to(device=device, dtype=torch.long)
    bad = (t < 0) | (t >= num_videos)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"text_to_video[{i}] = {int(t[i])} is outside 0..{num_videos - 1} (num_videos = {num_videos})"
        )
    return t


def _check_finite(block: torch.Tensor, start: int) -> None:
    # min and max propagate NaN and allocate nothing, where isfinite() would build a
    # bool block and an abs() copy; the element is located only on the error path.
    low, high = torch.aminmax(block)
    if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
        row, col = (~torch.isfinite(block)).nonzero()[0].tolist()
        raise ValueError(
            f"similarities must be finite; sim[{start + row}, {col}] = {block[row, col].item()}"
        )


# ------------------------------------------------------------------------ dual softmax


def dual_softmax(sim: ArrayLike, temperature: float = DEFAULT_DSL_TEMPERATURE, dim: int = 0) -> torch.Tensor:
    """Dual-softmax re-weighting ``sim * softmax(temperature * sim, dim=dim)``.

    ``sim`` is ``(T, V)``; the result has the same shape. ``dim=0`` (softmax over texts,
    for each video) is the prior for text-to-video ranking, ``dim=1`` the one for
    video-to-text. This materialises a second ``T x V`` matrix;
    ``retrieval_metrics(..., dual_softmax=True)`` applies both in blocks instead.
    """
    _check_temperature(temperature)
    sim = _upcast(_as_matrix(sim, "sim", "(num_texts, num_videos)"))
    return torch.softmax(sim * temperature, dim=dim).mul_(sim)


# The DSL helpers work in place on one new block: torch.softmax / logsumexp would each
# allocate further (c, V) temporaries, and the point of the blocks is to bound memory.


def _dsl_t2v(block: torch.Tensor, col_lse: torch.Tensor, temperature: float) -> torch.Tensor:
    """DSL for t2v on a row block ``(c, V)``, given each video's logsumexp over ALL texts ``(V,)``."""
    out = block * temperature  # (c, V)
    return out.sub_(col_lse).exp_().mul_(block)


def _dsl_v2t(block: torch.Tensor, temperature: float) -> torch.Tensor:
    """DSL for v2t on a row block ``(c, V)``: rows are whole, so the softmax is local."""
    out = block * temperature  # (c, V)
    out.sub_(out.amax(dim=1, keepdim=True)).exp_()
    return out.div_(out.sum(dim=1, keepdim=True)).mul_(block)


def _identity(block: torch.Tensor) -> torch.Tensor:
    return block


# ------------------------------------------------------------------------ block ranking


def _row_ranges(num_texts: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, num_texts, chunk_size):
        yield start, min(start + chunk_size, num_texts)


# Summing a bool tensor makes torch cast it to int64 first: 8 bytes per score, twice the
# float block. Comparing and counting this many scores at a time keeps that cast at 2 MB,
# small enough that malloc's reuse of freed slices does not hold tens of MB either.
_COUNT_SLICE_ELEMENTS = 1 << 18


def _count_per_row(scores: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``((scores > threshold).sum(1), (scores >= threshold).sum(1))`` for ``scores (c, V)``,
    ``threshold (c, 1)``; two ``(c,)`` long tensors."""
    rows, cols = scores.shape
    step = max(1, _COUNT_SLICE_ELEMENTS // cols)
    above = torch.empty(rows, dtype=torch.long, device=scores.device)
    at_or_above = torch.empty(rows, dtype=torch.long, device=scores.device)
    for a in range(0, rows, step):
        part, limit = scores[a : a + step], threshold[a : a + step]
        above[a : a + step] = (part > limit).sum(dim=1)
        at_or_above[a : a + step] = (part >= limit).sum(dim=1)
    return above, at_or_above


def _count_per_column(scores: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``((scores > threshold).sum(0), (scores >= threshold).sum(0))`` for ``scores (c, V)``,
    ``threshold (V,)``; two ``(V,)`` long tensors."""
    rows, cols = scores.shape
    step = max(1, _COUNT_SLICE_ELEMENTS // cols)
    above = torch.zeros(cols, dtype=torch.long, device=scores.device)
    at_or_above = torch.zeros(cols, dtype=torch.long, device=scores.device)
    for a in range(0, rows, step):
        part = scores[a : a + step]
        above += (part > threshold).sum(dim=0)
        at_or_above += (part >= threshold).sum(dim=0)
    return above, at_or_above


def _column_logsumexp(
    block_fn: _BlockFn, num_texts: int, chunk_size: int, temperature: float
) -> torch.Tensor:
    """Per-video ``logsumexp_i(temperature * sim[i, v])`` over all texts, ``(V,)``, one row pass."""
    lse: torch.Tensor | None = None
    for start, stop in _row_ranges(num_texts, chunk_size):
        logits = block_fn(start, stop) * temperature  # (c, V), the only new block
        peak = logits.amax(dim=0)  # (V,)
        part = logits.sub_(peak).exp_().sum(dim=0).log_().add_(peak)  # (V,), logsumexp in place
        del logits
        lse = part if lse is None else torch.logaddexp(lse, part)
    assert lse is not None  # num_texts >= 1 is checked by the callers
    return lse


def _block_ranks(
    block_fn: _BlockFn,
    text_to_video: torch.Tensor,
    num_videos: int,
    chunk_size: int,
    *,
    t2v_transform: _Transform | None,
    v2t_transform: _Transform | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """t2v and v2t ``(above, ties)`` counts, ``(T,)`` and ``(V',)`` each, from row blocks of
    the similarity matrix: competitors scoring strictly above the ground truth, and those
    scoring exactly the same.

    A direction whose transform is ``None`` is skipped (and returned as ``None``).
    Pass 1 ranks texts and records each video's best own-caption score; v2t then needs
    a second pass to count the other texts at or above that score. Both passes ask
    ``block_fn`` for the same row ranges, so they see bit-identical scores.
    """
    num_texts = text_to_video.shape[0]
    t2v_above = torch.empty(num_texts, dtype=torch.long, device=text_to_video.device)  # (T,)
    t2v_ties = torch.empty(num_texts, dtype=torch.long, device=text_to_video.device)  # (T,)
    best_own: torch.Tensor | None = None  # (V,) best score among each video's own captions

    for start, stop in _row_ranges(num_texts, chunk_size):
        block = block_fn(start, stop)  # (c, V)
        _check_finite(block, start)
        own_video = text_to_video[start:stop, None]  # (c, 1)
        if t2v_transform is not None:
            scores = t2v_transform(block)
            gt = scores.gather(1, own_video)  # (c, 1)
            above, at_or_above = _count_per_row(scores, gt)
            t2v_above[start:stop] = above
            t2v_ties[start:stop] = at_or_above - above - 1  # the ground truth ties itself
            del scores
        if v2t_transform is not None:
            scores = v2t_transform(block)
            own = scores.gather(1, own_video).squeeze(1)  # (c,)
            if best_own is None:
                best_own = torch.full((num_videos,), -torch.inf, dtype=scores.dtype, device=scores.device)
            best_own.scatter_reduce_(0, own_video.squeeze(1), own, reduce="amax")
            del scores
        # Drop this block before the next is computed, or two would be alive at once.
        del block

    v2t = None
    if v2t_transform is not None:
        assert best_own is not None
        above = torch.zeros(num_videos, dtype=torch.long, device=best_own.device)  # (V,)
        at_or_above = torch.zeros(num_videos, dtype=torch.long, device=best_own.device)  # (V,)
        for start, stop in _row_ranges(num_texts, chunk_size):
            scores = v2t_transform(block_fn(start, stop))  # (c, V)
            part_above, part_at_or_above = _count_per_column(scores, best_own)
            above += part_above  # own captions never exceed their video's best
            at_or_above += part_at_or_above
            # A video's own captions are not competitors: take back those that tie its best.
            own_video = text_to_video[start:stop]
            own = scores.gather(1, own_video[:, None]).squeeze(1)  # (c,)
            at_or_above.index_add_(0, own_video, -(own >= best_own[own_video]).long())
            del scores
        has_caption = torch.bincount(text_to_video, minlength=num_videos) > 0  # (V,)
        v2t = (above[has_caption], (at_or_above - above)[has_caption])
    return ((t2v_above, t2v_ties) if t2v_transform is not None else None), v2t


def _metrics_from_blocks(
    block_fn: _BlockFn,
    text_to_video: torch.Tensor,
    num_videos: int,
    chunk_size: int,
    use_dual_softmax: bool,
    temperature: float,
) -> Metrics:
    if use_dual_softmax:
        _check_temperature(temperature)
        col_lse = _column_logsumexp(block_fn, text_to_video.shape[0], chunk_size, temperature)
        t2v_transform: _Transform = functools.partial(_dsl_t2v, col_lse=col_lse, temperature=temperature)
        v2t_transform: _Transform = functools.partial(_dsl_v2t, temperature=temperature)
    else:
        t2v_transform = v2t_transform = _identity
    t2v, v2t = _block_ranks(
        block_fn,
        text_to_video,
        num_videos,
        chunk_size,
        t2v_transform=t2v_transform,
        v2t_transform=v2t_transform,
    )
    assert t2v is not None and v2t is not None
    out: Metrics = {**metrics_from_counts(*t2v, "t2v"), **metrics_from_counts(*v2t, "v2t")}
    if use_dual_softmax:
        out["post_processing"] = "dual-softmax"
    return out


# ------------------------------------------------------------------------------ public


def metrics_from_ranks(ranks: ArrayLike | Sequence[int], prefix: str) -> dict[str, float]:
    """R@1/5/10 (percent), median and mean rank of 1-based ``ranks`` ``(N,)``.

    Keys are ``{prefix}_r1, _r5, _r10, _mdr, _mnr``. The median of an even count is the
    mean of the two middle ranks (numpy's convention, as most papers report it).
    """
    ranks = torch.as_tensor(ranks)
    if ranks.ndim != 1 or ranks.shape[0] == 0:
        raise ValueError(f"ranks must have shape (num_queries,) with num_queries >= 1, got {tuple(ranks.shape)}")
    if bool((ranks < 1).any()):
        raise ValueError(f"ranks are 1-based; got a rank of {ranks.min().item()}")
    r = ranks.detach().to(torch.float64)
    out = {f"{prefix}_r{k}": 100.0 * float((r <= k).double().mean()) for k in RECALL_AT}
    return out | _median_and_mean(r, prefix)


def metrics_from_counts(above: torch.Tensor, ties: torch.Tensor, prefix: str) -> dict[str, float]:
    """R@1/5/10 (percent), median and mean rank from, per query, the number of competitors
    scoring above the ground truth and the number tying it, with ties broken uniformly at
    random in expectation (see the module docstring)."""
    if above.ndim != 1 or above.shape[0] == 0:
        raise ValueError(f"counts must have shape (num_queries,) with num_queries >= 1, got {tuple(above.shape)}")
    g, t = above.double(), ties.double()
    out = {f"{prefix}_r{k}": 100.0 * float(((k - g).clamp(min=0).minimum(t + 1) / (t + 1)).mean())
           for k in RECALL_AT}
    return out | _median_and_mean(1 + g + t / 2, prefix)  # expected ranks


def _median_and_mean(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    """Median (the mean of the middle two for an even count) and mean of float64 ranks."""
    ordered = ranks.sort().values
    n = ordered.shape[0]
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {f"{prefix}_mdr": float(median), f"{prefix}_mnr": float(ranks.mean())}


def ranks_t2v(
    sim: ArrayLike, text_to_video: IndexLike | None = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """Expected rank of each caption's video among all videos, ``(T,)`` float64, 1-based
    (``1 + above + ties / 2``; integers when there are no ties).

    ``sim`` is ``(T, V)``; pass ``dual_softmax(sim, dim=0)`` for DSL ranks.
    """
    _check_chunk_size(chunk_size)
    sim = _as_matrix(sim, "sim", "(num_texts, num_videos)")
    num_texts, num_videos = sim.shape
    t2v = _check_text_to_video(text_to_video, num_texts, num_videos, sim.device)
    counts, _ = _block_ranks(
        lambda a, b: _upcast(sim[a:b]), t2v, num_videos, chunk_size, t2v_transform=_identity, v2t_transform=None
    )
    assert counts is not None
    return 1 + counts[0].double() + counts[1].double() / 2


def ranks_v2t(
    sim: ArrayLike, text_to_video: IndexLike | None = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """Expected rank of each video's best caption among the other videos' captions,
    ``(V',)`` float64.

    ``sim`` is ``(T, V)``. Only videos with at least one caption are ranked, in index
    order, so ``V' <= V``. Ties count half. Pass ``dual_softmax(sim, dim=1)`` for DSL.
    """
    _check_chunk_size(chunk_size)
    sim = _as_matrix(sim, "sim", "(num_texts, num_videos)")
    num_texts, num_videos = sim.shape
    t2v = _check_text_to_video(text_to_video, num_texts, num_videos, sim.device)
    _, counts = _block_ranks(
        lambda a, b: _upcast(sim[a:b]), t2v, num_videos, chunk_size, t2v_transform=None, v2t_transform=_identity
    )
    assert counts is not None
    return 1 + counts[0].double() + counts[1].double() / 2


def retrieval_metrics(
    sim: ArrayLike,
    text_to_video: IndexLike | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dual_softmax: bool = False,
    temperature: float = DEFAULT_DSL_TEMPERATURE,
) -> Metrics:
    """Both directions' R@1/5/10, median and mean rank from a similarity matrix.

    ``sim`` is ``(T, V)`` (torch or numpy); ``text_to_video`` ``(T,)`` (identity when
    omitted). Keys: ``t2v_r1, t2v_r5, t2v_r10, t2v_mdr, t2v_mnr`` and the same for
    ``v2t``; with ``dual_softmax=True`` also ``"post_processing": "dual-softmax"``.
    ``chunk_size`` only bounds the temporaries (rows per block); it does not change
    the result. See the module docstring for ties and videos without captions.
    """
    _check_chunk_size(chunk_size)
    sim = _as_matrix(sim, "sim", "(num_texts, num_videos)")
    num_texts, num_videos = sim.shape
    t2v = _check_text_to_video(text_to_video, num_texts, num_videos, sim.device)
    return _metrics_from_blocks(
        lambda a, b: _upcast(sim[a:b]), t2v, num_videos, chunk_size, dual_softmax, temperature
    )


def chunked_similarity_metrics(
    text_emb: ArrayLike,
    video_emb: ArrayLike,
    text_to_video: IndexLike | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dual_softmax: bool = False,
    temperature: float = DEFAULT_DSL_TEMPERATURE,
) -> Metrics:
    """:func:`retrieval_metrics` of ``text_emb @ video_emb.T`` without building that matrix.

    ``text_emb`` is ``(T, D)``, ``video_emb`` ``(V, D)`` (normalise them first for
    cosine similarity). Scores are computed ``chunk_size`` texts at a time,
    ``(chunk_size, V)`` per block, and each block is computed twice (thrice with DSL:
    the t2v prior needs every video's normaliser over all texts before any text can be
    ranked). Peak extra memory is one float ``(chunk_size, V)`` block (two with DSL)
    plus ``O(T + V)``: 156 MiB for the default ``chunk_size`` and 10,000 videos,
    whatever ``T``.

    The result equals ``retrieval_metrics(text_emb @ video_emb.T, ...)`` exactly as far
    as the scores do: a matrix product's rows may differ from a slice's in the last bit
    (BLAS picks kernels by shape), which can only reorder two scores that are already
    within a rounding error of each other. Exactly representable data (e.g. small
    integers) gives bit-identical scores and so identical metrics, ties included.
    """
    _check_chunk_size(chunk_size)
    text_emb = _as_matrix(text_emb, "text_emb", "(num_texts, dim)")
    num_texts, dim = text_emb.shape
    video_emb = _as_matrix(video_emb, "video_emb", f"(num_videos, {dim}) to match text_emb")
    if video_emb.shape[1] != dim:
        raise ValueError(
            f"video_emb must have shape (num_videos, {dim}) to match text_emb, got {tuple(video_emb.shape)}"
        )
    num_videos = video_emb.shape[0]
    t2v = _check_text_to_video(text_to_video, num_texts, num_videos, text_emb.device)
    video_t = video_emb.T  # (D, V), a view

    def block(start: int, stop: int) -> torch.Tensor:
        return _upcast(text_emb[start:stop] @ video_t)  # (c, V)

    return _metrics_from_blocks(block, t2v, num_videos, chunk_size, dual_softmax, temperature)


def pair_accuracy(
    text_emb: ArrayLike,
    video_emb: ArrayLike,
    pairs: Sequence[tuple[int, int, int, int]] | torch.Tensor | np.ndarray,
) -> float:
    """Percent of videos that score their own caption above their time-reversal's caption.

    ``text_emb`` is ``(T, D)``, ``video_emb`` ``(V, D)``; ``pairs`` holds
    ``(video_a, caption_a, video_b, caption_b)`` index tuples, ``(P, 4)``, where ``b`` is
    ``a`` played backwards. Each pair gives two decisions: does ``video_a`` prefer
    ``caption_a`` to ``caption_b``, and does ``video_b`` prefer ``caption_b`` to
    ``caption_a``? A tie counts one half, so a model blind to temporal order scores 50,
    not 0 or 100. Scores are raw dot products (normalise for cosine).
    """
    text_emb = _upcast(_as_matrix(text_emb, "text_emb", "(num_texts, dim)"))
    num_texts, dim = text_emb.shape
    video_emb = _upcast(_as_matrix(video_emb, "video_emb", f"(num_videos, {dim}) to match text_emb"))
    if video_emb.shape[1] != dim:
        raise ValueError(
            f"video_emb must have shape (num_videos, {dim}) to match text_emb, got {tuple(video_emb.shape)}"
        )
    num_videos = video_emb.shape[0]
    if isinstance(pairs, torch.Tensor):
        idx = pairs.detach()
    else:
        idx = torch.as_tensor(np.asarray(pairs))
    if idx.ndim != 2 or idx.shape[0] == 0 or idx.shape[1] != 4:
        raise ValueError(
            "pairs must be a non-empty list of (video_a, caption_a, video_b, caption_b) tuples, "
            f"shape (num_pairs, 4); got shape {tuple(idx.shape)}"
        )
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"pairs must hold integer indices, got dtype {idx.dtype}")
    idx = idx.to(device=text_emb.device, dtype=torch.long)
    video_a, caption_a, video_b, caption_b = idx.unbind(dim=1)  # each (P,)
    for name, column, limit in (
        ("video_a", video_a, num_videos),
        ("caption_a", caption_a, num_texts),
        ("video_b", video_b, num_videos),
        ("caption_b", caption_b, num_texts),
    ):
        bad = (column < 0) | (column >= limit)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"pairs[{i}] has {name} = {int(column[i])}, outside 0..{limit - 1}")

    def score(captions: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
        return (text_emb[captions] * video_emb[videos]).sum(dim=-1)  # (P,)

    own = torch.cat([score(caption_a, video_a), score(caption_b, video_b)])  # (2P,)
    reversed_ = torch.cat([score(caption_b, video_a), score(caption_a, video_b)])  # (2P,)
    credit = (own > reversed_).double() + 0.5 * (own == reversed_).double()
    return 100.0 * float(credit.mean())


def pair_accuracy_from_scores(scores: ArrayLike, pairs: Sequence[tuple[int, int, int, int]]) -> float:
    """:func:`pair_accuracy` from a ``(T, V)`` score matrix (text-conditioned methods, whose
    scores are not dot products of embeddings)."""
    s = _upcast(_as_matrix(scores, "scores", "(num_texts, num_videos)"))
    idx = torch.as_tensor(np.asarray(pairs, dtype=np.int64)).reshape(-1, 4)
    if idx.shape[0] == 0:
        raise ValueError("pairs must be a non-empty list of (video_a, caption_a, video_b, caption_b) tuples")
    va, ca, vb, cb = idx.unbind(dim=1)
    own = torch.cat([s[ca, va], s[cb, vb]])
    reversed_ = torch.cat([s[cb, va], s[ca, vb]])
    credit = (own > reversed_).double() + 0.5 * (own == reversed_).double()
    return 100.0 * float(credit.mean())
