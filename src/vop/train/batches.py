"""Training batches: a dataset of (caption, sampled frames) items and a resumable,
distributed-aware sampler. Randomness comes from (seed, epoch, index), so a resumed run
draws exactly what an uninterrupted one would."""

from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vop.data.transforms import VideoTransform
from vop.data.types import RetrievalSplit, VideoReadError

log = logging.getLogger(__name__)

MAX_RETRIES = 8  # alternates tried when a video cannot be read


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 10_000_019 + index)


class CaptionVideoDataset(Dataset):
    """Item ``(epoch, i)``: caption ``i`` and the sampled, transformed uint8 frames
    ``[F, S, S, 3]`` of its video. An unreadable video is recorded in ``failed`` and
    replaced by the next caption's video, so batches keep their size (all ranks of a
    distributed run must gather equal batches)."""

    def __init__(self, split: RetrievalSplit, transform: VideoTransform, num_frames: int,
                 mode: str = "random", seed: int = 0):
        self.split, self.transform, self.num_frames, self.mode, self.seed = split, transform, num_frames, mode, seed

    def __len__(self) -> int:
        return self.split.num_captions

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        failed = []
        for attempt in range(MAX_RETRIES):
            i = (index + attempt) % len(self)
            video = self.split.caption_to_video[i]
            g = item_generator(self.seed, epoch, i)
            try:
                frames = self.split.source.load(video, self.num_frames, self.mode, g)
                frames = self.transform(frames, g)
            except VideoReadError as exc:
                failed.append((self.split.source.describe(video), exc.reason))
                continue
            return {"frames": frames, "caption": self.split.captions[i], "failed": failed}
        raise RuntimeError(f"{MAX_RETRIES} consecutive unreadable videos near caption {index}: {failed}")


def collate(items: Sequence[dict]) -> dict:
    return {
        "frames": torch.stack([it["frames"] for it in items]),  # [B, F, S, S, 3] uint8
        "captions": [it["caption"] for it in items],
        "failed": [f for it in items for f in it["failed"]],
    }


class EpochSampler(Sampler):
    """Yields ``(epoch, caption index)`` for this rank's share of each global batch.

    ``groups`` (e.g. a video and its time reversal) stay adjacent after shuffling, so with
    an even batch size they land in the same batch. Each epoch's order is a permutation
    seeded by ``(seed, epoch)``; ``start_batch`` skips batches already done (resume).
    """

    def __init__(self, groups: list[list[int]], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.groups, self.batch_size, self.seed = groups, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        total = sum(len(g) for g in groups)
        self.batches_per_epoch = total // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{total} training captions cannot fill one global batch of {batch_size * world_size}; "
                "lower optim.batch_size"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        perm = torch.randperm(len(self.groups), generator=g).tolist()
        return [i for p in perm for i in self.groups[p]]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order(self.epoch)
        per_global = self.batch_size * self.world_size
        for b in range(self.start_batch, self.batches_per_epoch):
            chunk = order[b * per_global:(b + 1) * per_global]
            for i in chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]:
                yield (self.epoch, i)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def make_loader(dataset: CaptionVideoDataset, sampler: EpochSampler, workers: int, pin_memory: bool = False) -> DataLoader:
    """The training loader: ``workers`` processes decode ahead (4 batches each) while the
    model trains; 0 decodes in the training process."""
    return DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, collate_fn=collate,
                      num_workers=workers, persistent_workers=False, drop_last=True,
                      pin_memory=pin_memory, prefetch_factor=4 if workers else None)


def timed_batches(batches: Iterable[dict], timing: dict[str, float]) -> Iterator[dict]:
    """``batches``, adding the seconds spent waiting for each one to ``timing["wait"]``."""
    it = iter(batches)
    while True:
        asked = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        timing["wait"] += time.perf_counter() - asked
        yield batch


def wait_fraction(timing: dict[str, float]) -> float:
    """Share of ``wait + compute`` spent waiting for input (0 when nothing was timed)."""
    total = timing["wait"] + timing["compute"]
    return timing["wait"] / total if total > 0 else 0.0
