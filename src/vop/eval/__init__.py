"""Evaluation: retrieval metrics (R@K, median/mean rank, both directions, in bounded
memory) and the temporal pair accuracy of the synthetic benchmark.

``vop.eval.metrics`` needs only torch and numpy, so it is imported directly.
"""

from __future__ import annotations

from vop.eval.metrics import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DSL_TEMPERATURE,
    RECALL_AT,
    Metrics,
    chunked_similarity_metrics,
    dual_softmax,
    metrics_from_ranks,
    pair_accuracy,
    ranks_t2v,
    ranks_v2t,
    retrieval_metrics,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DSL_TEMPERATURE",
    "RECALL_AT",
    "Metrics",
    "chunked_similarity_metrics",
    "dual_softmax",
    "metrics_from_ranks",
    "pair_accuracy",
    "ranks_t2v",
    "ranks_v2t",
    "retrieval_metrics",
]
