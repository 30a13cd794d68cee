"""The typed configuration of evaluation (the ``eval:`` section of a train config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 32  # videos per encoding batch
    chunk_size: int = 4096  # similarity rows per chunk (bounds memory)
    dual_softmax: bool = False  # post-processing; labelled wherever reported
    score_chunk: int = 64  # text-conditioned methods (X-Pool): videos scored against every caption at once

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_size < 1 or self.score_chunk < 1:
            raise ValueError(f"eval batch_size, chunk_size and score_chunk must be >= 1, got {self.batch_size}, "
                             f"{self.chunk_size}, {self.score_chunk}")
