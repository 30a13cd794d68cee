"""Encoding a folder of videos into a search index, incrementally and optionally on many
processes.

Per video: :func:`vop.data.sample_frames` (``"middle"`` mode, the method's frame count or
12) -> :func:`~vop.data.transforms.resize_center_crop` to the backbone's resolution ->
:func:`~vop.data.transforms.normalize` -> ``model.encode_video`` under
``torch.inference_mode``, in batches, decoding on a few threads ahead of the model. For a
text-conditioned encoder (X-Pool, ``model.text_conditioned``) the same pass also keeps each
video's per-frame features (``model.frame_features``; the embedding is their mean pool),
stored as float16 in ``frames.npy`` for re-ranking (:mod:`vop.search.rerank`); they follow
their records through every step below (kept, new, removed, pieces, shards).

A re-run keeps the embedding of every file whose size and mtime are unchanged (or whose
content hash is unchanged), encodes new and changed files, and drops deleted ones. A file
that cannot be decoded is reported in ``failed.json`` and skipped; it is retried once its
size or mtime changes.

Progress is committed in pieces: the index is rewritten with what is done so far (a valid
index of the files encoded up to then, written crash-safely) after ``piece_videos`` videos,
or half as many as this run has already committed if that is more, or after
``piece_seconds`` seconds, whichever comes first. A killed run loses at most one piece (and
never more than ``piece_seconds`` of work) and a re-run keeps the rest (re-run without
``--rebuild`` to resume a rebuild). Pieces growing with the index keep the bytes rewritten
by all commits of a long first encode to about three times the final index, not N^2 / 2P
rows for pieces of a fixed P (docs/search.md).
Embeddings that are not finite (a damaged checkpoint) stop the run before anything is
written.

Distributed (``torchrun --nproc-per-node N vop encode ...``): rank 0 plans, broadcasts the
list of files to encode, every rank encodes its slice (``files[rank::world]``) and writes a
shard beside the index; after a barrier rank 0 merges the shards into one index. The
shards folder must be on a file system every rank sees (one machine, or a shared mount).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from vop.data.types import VideoReadError
from vop.defaults import NUM_FRAMES
from vop.display import escape
from vop.runtime import WEIGHT_DTYPES  # a weight cast (the model's tensors), not autocast
from vop.search.method import IndexMismatch, check_same_encoder
from vop.search.records import FileState, VideoRecord, content_hash, probe, video_id, walk_videos
from vop.search.store import FRAMES_DTYPE, StoredIndex, check_target, is_index, read_index, write_index

__all__ = ["EncodeConfig", "EncodeReport", "NonFiniteEmbeddings", "encode_collection", "frame_count",
           "video_encoder"]

DEFAULT_FRAMES = NUM_FRAMES


@dataclass(frozen=True)
class EncodeConfig:
    """How ``vop encode`` runs."""

    batch_size: int = 8  # videos per model call
    num_frames: int | None = None  # frames per video (None: the method's own count, else 12)
    workers: int = 2  # decoding threads
    device: str = "cpu"  # where the model runs
    progress: bool = True  # show a tqdm progress bar (rank 0 only)
    rebuild: bool = False  # ignore an existing index and encode everything again
    precision: str = "fp32"  # "bf16": a bf16 copy of the model (docs/search.md: speed and agreement)
    compile: bool = False  # run encode_video through torch.compile (a one-off compile; docs/search.md)
    piece_videos: int = 1000  # commit progress (rewrite the index) after this many videos (or half the
    # videos already committed by this run, if more) ...
    piece_seconds: float = 120.0  # ... or this many seconds, whichever first (one process only)

    def __post_init__(self) -> None:
        if self.precision not in WEIGHT_DTYPES:
            raise ValueError(f"precision must be one of {', '.join(WEIGHT_DTYPES)}, got {self.precision!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.piece_videos < 1 or not self.piece_seconds > 0:
            raise ValueError(f"piece_videos and piece_seconds must be > 0, got {self.piece_videos}, "
                             f"{self.piece_seconds}")


class NonFiniteEmbeddings(ValueError):
    """The model produced NaN or inf embeddings (a damaged checkpoint): nothing is written."""


@dataclass
class EncodeReport:
    """What a run did."""

    index: Path
    total: int = 0  # videos in the index after the run
    encoded: int = 0  # newly encoded (new or changed files)
    reused: int = 0  # embeddings kept from the previous index
    removed: int = 0  # files gone since the previous index
    failed: list[dict] = field(default_factory=list)  # [{"path", "reason"}]

    def summary(self) -> str:
        lines = [f"{escape(self.index)}: {self.total} videos indexed ({self.encoded} encoded, {self.reused} unchanged, "
                 f"{self.removed} removed), {len(self.failed)} unreadable"]
        for f in self.failed[:20]:
            lines.append(f"  unreadable: {escape(f['path'])}: {escape(f['reason'])}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more (see {escape(self.index / 'failed.json')})")
        return "\n".join(lines)


def frame_count(model, config: EncodeConfig) -> int:
    """Frames per video: the config's, else the method's own, else 12."""
    if config.num_frames is not None:
        if model.num_frames is not None and model.num_frames != config.num_frames:
            raise ValueError(f"method {model.config.method!r} was built for {model.num_frames} frames, "
                             f"not {config.num_frames}")
        return config.num_frames
    return model.num_frames or DEFAULT_FRAMES


@dataclass
class _Plan:
    keep: list[tuple[VideoRecord, int]]  # (record, row in the old embeddings)
    encode: list[FileState]
    failed: list[dict]  # carried over: unchanged files that failed before
    removed: int


def _plan(root: Path, old: StoredIndex | None, num_frames: int, wants_frames: bool = False) -> _Plan:
    states = list(walk_videos(root))
    if old is None:
        return _Plan([], states, [], 0)
    present = {s.path for s in states}
    removed = sum(r.path not in present for r in old.records)
    if old.meta.get("num_frames") != num_frames:  # every embedding is stale
        return _Plan([], states, [], removed)
    if wants_frames and old.frame_features is None:  # nothing to re-rank the kept videos with
        return _Plan([], states, [], removed)
    rows = {r.path: (r, i) for i, r in enumerate(old.records)}
    failed_before = {f["path"]: f for f in old.failed}
    keep, encode, failed = [], [], []
    for s in states:
        prev = rows.get(s.path)
        if prev is not None:
            rec, row = prev
            if rec.size == s.size and rec.mtime_ns == s.mtime_ns:
                keep.append((rec, row))
                continue
            if rec.size == s.size and content_hash(root / s.path, s.size) == rec.hash:
                keep.append((replace(rec, mtime_ns=s.mtime_ns), row))  # touched, not changed
                continue
        f = failed_before.get(s.path)
        if f is not None and f.get("size") == s.size and f.get("mtime_ns") == s.mtime_ns:
            failed.append(f)
            continue
        encode.append(s)
    return _Plan(keep, encode, failed, removed)


def _load_one(root: Path, state: FileState, num_frames: int, resolution: int):
    """Decode and describe one file: ``(record, frames [F, R, R, 3] uint8)``; raises VideoReadError."""
    from vop.data.transforms import resize_center_crop
    from vop.data.video import sample_frames

    full = root / state.path
    frames, _ = sample_frames(full, num_frames=num_frames, mode="middle")
    try:
        duration, width, height = probe(full)
        digest = content_hash(full, state.size)
    except Exception as exc:  # noqa: BLE001 - decoded fine, so header trouble means a bad file
        raise VideoReadError(str(full), f"{type(exc).__name__}: {exc}") from exc
    record = VideoRecord(video_id(state.path), state.path, state.size, state.mtime_ns, digest, duration,
                         width, height, num_frames)
    return record, resize_center_crop(frames, resolution)


def _prefetch(items: list, fn: Callable, workers: int, ahead: int) -> Iterator[tuple[object, Future]]:
    """``(item, future of fn(item))`` in order, with at most ``ahead`` decodes in flight."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vop-decode") as pool:
        pending: collections.deque = collections.deque()
        it = iter(items)
        for item in it:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= ahead:
                break
        while pending:
            yield pending.popleft()
            for item in it:
                pending.append((item, pool.submit(fn, item)))
                break


def video_encoder(model, config: EncodeConfig, frame_features: bool = False) -> Callable:
    """Normalised fp32 frames ``[B, F, 3, R, R]`` -> embeddings ``[B, D]`` (fp32), in the
    config's precision, compiled if asked. ``model`` itself is left as it is (a model in
    another dtype is cast as a copy; the CLI casts its own model first). Compiled, every call gets ``batch_size`` videos (a short last batch is padded),
    so the encoder compiles once.

    ``frame_features=True``: the encoder returns ``(embeddings [B, D], frame features
    [B, F', D])`` (both fp32) from one pass: ``model.frame_features`` and their mean pool,
    which is what ``model.encode_video`` computes."""
    dtype = WEIGHT_DTYPES[config.precision]
    if dtype != next(model.parameters()).dtype:
        model = copy.deepcopy(model).to(dtype)
    if frame_features:
        def encode(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            feats = model.frame_features(frames)
            return model.mean_pool(feats), feats
    else:
        encode = model.encode_video
    if config.compile:
        encode = torch.compile(encode, dynamic=False)

    def run(frames: torch.Tensor):
        n = frames.shape[0]
        if config.compile and n < config.batch_size:
            frames = torch.cat([frames, frames[-1:].expand(config.batch_size - n, *frames.shape[1:])])
        with torch.inference_mode():
            out = encode(frames.to(dtype))
            if frame_features:
                return out[0][:n].float(), out[1][:n].float()
            return out[:n].float()

    return run


def _stack(chunks: list[np.ndarray], empty: tuple[int, ...], dtype) -> np.ndarray:
    return np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.zeros(empty, dtype)


def piece_size(piece_videos: int, committed: int) -> int:
    """Videos in the next piece once this run has committed ``committed``: ``piece_videos``,
    or half the committed count if that is more. Each commit rewrites the whole index, so
    with pieces of a fixed P a first encode of N videos writes about N^2 / 2P rows in all
    (60 GB of frame features for 100k X-Pool videos in pieces of 1000); growing pieces
    write about 3.3N rows there (4 GB)."""
    return max(piece_videos, committed // 2)


def _encode_files(root: Path, files: list[FileState], model, num_frames: int, config: EncodeConfig,
                  show: bool, commit: Callable | None = None
                  ) -> tuple[list[VideoRecord], np.ndarray, np.ndarray | None, list[dict]]:
    """Encode ``files``: ``(records, embeddings [n, D], frame features [n, F', D] float16 or
    None, failures)`` for the readable ones; frame features only for a text-conditioned model.

    ``commit(records, embeddings, frame_features, failures)`` (if given) is called with
    everything done so far at the end of each piece (:func:`piece_size`, or
    ``config.piece_seconds``)."""
    from tqdm import tqdm

    from vop.data.transforms import normalize

    resolution = model.clip.config.image_resolution
    dim = model.clip.config.embed_dim
    wants_frames = bool(model.text_conditioned)
    records: list[VideoRecord] = []
    chunks: list[np.ndarray] = []
    frame_chunks: list[np.ndarray] = []
    failed: list[dict] = []
    batch_recs: list[VideoRecord] = []
    batch_frames: list[torch.Tensor] = []
    encode = video_encoder(model, config, frame_features=wants_frames) if files else None

    def flush() -> None:
        if not batch_frames:
            return
        x = torch.stack(batch_frames).to(config.device)  # [B, F, R, R, 3] uint8
        out = encode(normalize(x))
        emb = (out[0] if wants_frames else out).cpu().numpy()  # [B, D]
        feats = None
        if wants_frames:
            with np.errstate(over="ignore"):  # an overflow becomes inf, refused below
                feats = out[1].cpu().numpy().astype(FRAMES_DTYPE)  # [B, F', D]
        bad = ~np.isfinite(emb).all(axis=1)
        if feats is not None:
            bad |= ~np.isfinite(feats).all(axis=(1, 2))  # also float16 overflow
        if bad.any():
            raise NonFiniteEmbeddings(
                f"the encoder gave non-finite (NaN or inf) {'frame features' if wants_frames else 'embeddings'} for "
                f"{escape(batch_recs[int(bad.argmax())].path)} and nothing was written; the checkpoint is damaged "
                "(check its weights)")
        chunks.append(emb)
        if feats is not None:
            frame_chunks.append(feats)
        records.extend(batch_recs)
        batch_recs.clear()
        batch_frames.clear()

    def done_frames() -> np.ndarray | None:
        if not wants_frames:
            return None
        if frame_chunks:
            return np.concatenate(frame_chunks)
        return np.zeros((0, num_frames if model.tower is None else 1, dim), FRAMES_DTYPE)

    bar = tqdm(total=len(files), unit="video", desc="encoding", disable=not show)
    load = lambda s: _load_one(root, s, num_frames, resolution)  # noqa: E731
    piece_start, piece_count, committed = time.monotonic(), 0, 0
    for state, future in _prefetch(files, load, config.workers, ahead=2 * config.batch_size):
        try:
            rec, frames = future.result()
        except VideoReadError as exc:
            failed.append({"path": state.path, "reason": exc.reason, "size": state.size,
                           "mtime_ns": state.mtime_ns})
        else:
            batch_recs.append(rec)
            batch_frames.append(frames)
            if len(batch_frames) == config.batch_size:
                flush()
        bar.update(1)
        piece_count += 1
        if commit is not None and (piece_count >= piece_size(config.piece_videos, committed)
                                   or time.monotonic() - piece_start >= config.piece_seconds):
            flush()
            commit(list(records), _stack(chunks, (0, dim), np.float32), done_frames(), list(failed))
            committed += piece_count
            piece_start, piece_count = time.monotonic(), 0
    flush()
    bar.close()
    return records, _stack(chunks, (0, dim), np.float32), done_frames(), failed


def _merge(old: StoredIndex | None, plan: _Plan, new_records: list[VideoRecord], new_emb: np.ndarray,
           new_frames: np.ndarray | None, dim: int) -> tuple[list[VideoRecord], np.ndarray, np.ndarray | None]:
    """Kept and new videos sorted by path: ``(records, embeddings, frame features or None)``,
    row i of each for record i."""
    rows: list[tuple[str, VideoRecord, int, int]] = []  # (path, record, row in old (-1: new), row in new)
    for rec, row in plan.keep:
        rows.append((rec.path, rec, row, -1))
    for i, rec in enumerate(new_records):
        rows.append((rec.path, rec, -1, i))
    rows.sort(key=lambda r: r[0])
    emb = np.zeros((len(rows), dim), np.float32)
    frames = None
    if new_frames is not None:
        frames = np.zeros((len(rows), *new_frames.shape[1:]), FRAMES_DTYPE)
        if plan.keep and old.frame_features is not None and old.frame_features.shape[1:] != new_frames.shape[1:]:
            raise ValueError(f"the existing index's frame features are {old.frame_features.shape[1:]} per video, the "
                             f"encoder's {new_frames.shape[1:]}; re-run vop encode with --rebuild")
    for j, (_, _, old_row, new_row) in enumerate(rows):
        if old_row >= 0:
            emb[j] = old.embeddings[old_row]
            if frames is not None:
                frames[j] = old.frame_features[old_row]
        else:
            emb[j] = new_emb[new_row]
            if frames is not None:
                frames[j] = new_frames[new_row]
    return [r[1] for r in rows], emb, frames


def _open_old(out: Path, root: Path, identity: dict, config: EncodeConfig) -> StoredIndex | None:
    check_target(out)  # refuse a folder that is not an index before any work
    if config.rebuild or not is_index(out):
        return None
    old = read_index(out)
    check_same_encoder(old.encoder, identity, index_name=f"the existing index {out}")
    if old.root != root.resolve():
        raise IndexMismatch(f"the existing index {out} was built from {old.root}, not {root.resolve()}; "
                            "pass that folder, another --out, or --rebuild")
    return old


def encode_collection(video_dir: str | os.PathLike, out: str | os.PathLike, model, identity: dict,
                      config: EncodeConfig = EncodeConfig(), dist=None) -> EncodeReport:
    """Encode the videos under ``video_dir`` into the index at ``out`` (created or updated).

    ``model`` and ``identity`` come from :func:`vop.search.method.load_method`. ``dist`` is a
    :class:`vop.runtime.DistInfo`; with ``world_size > 1`` every rank must call
    this with the same arguments, and rank 0 writes the index.
    """
    root, out = Path(video_dir), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of videos")
    num_frames = frame_count(model, config)
    resolution = model.clip.config.image_resolution
    dim = model.clip.config.embed_dim
    wants_frames = bool(model.text_conditioned)  # per-frame features stored for re-ranking
    distributed = dist is not None and dist.enabled
    rank, world = (dist.rank, dist.world_size) if distributed else (0, 1)

    old, plan, error = None, None, None
    if rank == 0:
        try:
            old = _open_old(out, root, identity, config)
            plan = _plan(root, old, num_frames, wants_frames)
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            if not distributed:
                raise
            error = exc
    if distributed:
        import torch.distributed as tdist

        # Rank 0's plan (or its error, so that no rank waits forever) goes to every rank.
        box = [(plan.encode, None) if plan is not None else (None, error)]
        tdist.broadcast_object_list(box, src=0)
        files, error = box[0]
        if error is not None:
            raise error
        todo = files[rank::world]
    else:
        todo = plan.encode
    commit = None
    if not distributed and todo:
        def commit(recs, embs, frames, fails):  # a valid index of what is done so far
            _finish(out, root, identity, num_frames, resolution, old, plan, recs, embs, frames, fails, dim)
    records, emb, frames, failed = _encode_files(root, todo, model, num_frames, config,
                                                 show=config.progress and rank == 0, commit=commit)

    if distributed:
        shards = out.with_name(f".{out.name}.shards")
        shards.mkdir(parents=True, exist_ok=True)
        _write_shard(shards, rank, records, emb, frames, failed)
        tdist.barrier()
        if rank != 0:
            tdist.barrier()  # wait for rank 0 to write the index
            return EncodeReport(out, encoded=len(records), failed=failed)
        try:
            records, parts, frame_parts, failed = [], [], [], []
            for r in range(world):
                rec_r, emb_r, frames_r, failed_r = _read_shard(shards, r, dim, with_frames=wants_frames)
                records += rec_r
                parts.append(emb_r)
                frame_parts.append(frames_r)
                failed += failed_r
            emb = np.concatenate(parts)
            frames = np.concatenate(frame_parts) if wants_frames else None
            return _finish(out, root, identity, num_frames, resolution, old, plan, records, emb, frames, failed, dim)
        finally:
            shutil.rmtree(shards, ignore_errors=True)
            tdist.barrier()  # release the other ranks, also when the merge failed
    return _finish(out, root, identity, num_frames, resolution, old, plan, records, emb, frames, failed, dim)


def _finish(out: Path, root: Path, identity: dict, num_frames: int, resolution: int, old: StoredIndex | None,
            plan: _Plan, records: list[VideoRecord], emb: np.ndarray, frames: np.ndarray | None, failed: list[dict],
            dim: int) -> EncodeReport:
    all_records, all_emb, all_frames = _merge(old, plan, records, emb, frames, dim)
    all_failed = sorted(plan.failed + failed, key=lambda f: f["path"])
    write_index(out, root=root, encoder=identity, num_frames=num_frames, resolution=resolution,
                records=all_records, embeddings=all_emb, failed=all_failed, frame_features=all_frames)
    return EncodeReport(out, total=len(all_records), encoded=len(records), reused=len(plan.keep),
                        removed=plan.removed, failed=all_failed)


def _write_shard(folder: Path, rank: int, records: list[VideoRecord], emb: np.ndarray, frames: np.ndarray | None,
                 failed: list[dict]) -> None:
    np.save(folder / f"rank-{rank}.npy", emb)
    if frames is not None:
        np.save(folder / f"rank-{rank}.frames.npy", frames)
    with open(folder / f"rank-{rank}.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict()) + "\n")
    (folder / f"rank-{rank}.failed.json").write_text(json.dumps(failed))


def _read_shard(folder: Path, rank: int, dim: int, with_frames: bool = False
                ) -> tuple[list[VideoRecord], np.ndarray, np.ndarray | None, list[dict]]:
    emb = np.load(folder / f"rank-{rank}.npy").reshape(-1, dim)
    with open(folder / f"rank-{rank}.jsonl", encoding="utf-8") as f:
        records = [VideoRecord.from_dict(json.loads(line)) for line in f if line.strip()]
    failed = json.loads((folder / f"rank-{rank}.failed.json").read_text())
    frames = None
    if with_frames:
        frames = np.load(folder / f"rank-{rank}.frames.npy", allow_pickle=False)
        if frames.ndim != 3 or frames.shape[0] != len(records) or frames.shape[2] != dim:
            raise ValueError(f"shard {rank} holds frame features {frames.shape} for {len(records)} videos of "
                             f"dimension {dim}; the shards folder {folder} is damaged, run vop encode again")
    return records, emb, frames, failed
