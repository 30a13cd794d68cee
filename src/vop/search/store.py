"""The on-disk search index: a folder of plain files, written atomically.

Layout (see ``docs/search.md``)::

    INDEX_DIR/
      index.json       {"format": "vop-search-index", "version": 1, "generation": "<hex>",
                        "root": "/abs/collection", "encoder": {checkpoint identity},
                        "num_frames": F, "resolution": R, "dim": D, "count": N,
                        "failed": M, "created": ISO time, "updated": ISO time}
      embeddings.npy   float32 [N, D], L2-normalised; row i is line i of videos.jsonl
      videos.jsonl     one VideoRecord per line (id, path, size, mtime_ns, hash, duration,
                       width, height, num_frames), sorted by path
      failed.json      [{"path", "reason"}]: files that could not be decoded (not indexed)
      thumbs/          thumbnail cache (vop serve), kept across re-encodes
      ann-*.faiss      approximate-search caches for one generation (rebuilt when stale)

A write builds the whole folder under a temporary name beside ``INDEX_DIR`` and swaps it
in with two renames, so a reader sees the old index or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vop.search.records import VideoRecord

__all__ = ["FORMAT", "VERSION", "INDEX_JSON", "EMBEDDINGS", "VIDEOS", "FAILED", "THUMBS", "StoredIndex",
           "is_index", "read_index", "write_index"]

FORMAT = "vop-search-index"
VERSION = 1
INDEX_JSON, EMBEDDINGS, VIDEOS, FAILED, THUMBS = "index.json", "embeddings.npy", "videos.jsonl", "failed.json", "thumbs"


@dataclass
class StoredIndex:
    """An index as read from disk."""

    path: Path
    meta: dict  # index.json
    records: list[VideoRecord]
    embeddings: np.ndarray  # float32 [N, D]
    failed: list[dict] = field(default_factory=list)

    @property
    def encoder(self) -> dict:
        """The checkpoint identity that produced the embeddings (see :mod:`vop.search.method`)."""
        return self.meta["encoder"]

    @property
    def root(self) -> Path:
        return Path(self.meta["root"])

    @property
    def generation(self) -> str:
        return self.meta["generation"]

    def __len__(self) -> int:
        return len(self.records)


def is_index(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX_JSON).is_file()


def read_index(path: str | os.PathLike, mmap: bool = False) -> StoredIndex:
    """Read ``INDEX_DIR``; ``mmap`` maps the embeddings instead of reading them."""
    path = Path(path)
    meta_file = path / INDEX_JSON
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a vop search index (no {INDEX_JSON}); build one with vop encode")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file}: not a vop search index (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{meta_file}: index format version {meta.get('version')}, this vop reads {VERSION}")
    with open(path / VIDEOS, encoding="utf-8") as f:
        records = [VideoRecord.from_dict(json.loads(line)) for line in f if line.strip()]
    embeddings = np.load(path / EMBEDDINGS, mmap_mode="r" if mmap else None)
    if embeddings.dtype != np.float32 or embeddings.ndim != 2 or embeddings.shape[0] != len(records):
        raise ValueError(
            f"{path}: {EMBEDDINGS} holds {embeddings.dtype} {embeddings.shape} but {VIDEOS} lists "
            f"{len(records)} videos; the index is damaged, re-run vop encode"
        )
    failed_file = path / FAILED
    failed = json.loads(failed_file.read_text()) if failed_file.is_file() else []
    return StoredIndex(path, meta, records, embeddings, failed)


def write_index(path: str | os.PathLike, *, root: str | os.PathLike, encoder: dict, num_frames: int,
                resolution: int, records: list[VideoRecord], embeddings: np.ndarray,
                failed: list[dict]) -> StoredIndex:
    """Write a complete index to ``path`` atomically (a folder swap), keeping its thumbnails."""
    path = Path(path)
    if path.exists() and not is_index(path) and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path} exists and is not a vop search index (nor empty); choose another --out")
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(records):
        raise ValueError(f"{len(records)} records but embeddings of shape {embeddings.shape}")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    created = now
    if is_index(path):
        created = json.loads((path / INDEX_JSON).read_text()).get("created", now)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "generation": uuid.uuid4().hex,
        "root": str(Path(root).resolve()),
        "encoder": encoder,
        "num_frames": int(num_frames),
        "resolution": int(resolution),
        "dim": int(embeddings.shape[1]),
        "count": len(records),
        "failed": len(failed),
        "created": created,
        "updated": now,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.save(tmp / EMBEDDINGS, embeddings)
    with open(tmp / VIDEOS, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
    (tmp / FAILED).write_text(json.dumps(failed, indent=1))
    (tmp / INDEX_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True))
    if (path / THUMBS).is_dir():
        os.replace(path / THUMBS, tmp / THUMBS)  # the cache is keyed by content hash
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return StoredIndex(path, meta, list(records), embeddings, list(failed))
