"""A search service: several indexes in one process, one backbone in memory per weights.

>>> service = SearchService()
>>> service.add_index("idx/msrvtt-vop-fc")             # its recorded checkpoint and backbone
>>> service.add_index("idx/msrvtt-zero-shot")          # same backbone: loaded once
>>> hits = service.search("a dog catches a frisbee", k=10, index="msrvtt-vop-fc")

Each index is queried only with the encoder that built it (same method config, trained
tensors and backbone weights): an index loaded with another checkpoint is refused, the
message naming both. Indexes built by the same checkpoint share one model.

Files are served by id only: the service maps an id to the path recorded in the index (a
relative path without ``..`` or hidden parts, with a video suffix, joined to the recorded
root) and serves it only if its real path (symlinks resolved) is a regular file inside the
real recorded root and its size and modification time still match the record; nothing a
request says ever becomes part of a path. A symlink re-pointed after indexing, a root
edited to ``/`` or a file swapped for another is "not found".
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from vop.search import ann
from vop.search.method import BackboneCache, check_same_encoder, load_method
from vop.display import escape
from vop.search.records import VIDEO_SUFFIXES, VideoRecord
from vop.search.store import THUMBS, StoredIndex, read_index
from vop.search.thumbs import ThumbnailCache

__all__ = ["QueryError", "NotFound", "Hit", "LoadedIndex", "SearchService", "MAX_QUERY_CHARS", "MAX_K"]

MAX_QUERY_CHARS = 1000
MAX_K = 100
_ID = re.compile(r"[0-9a-f]{16}")


class QueryError(ValueError):
    """A request the service refuses (HTTP 400)."""


class NotFound(LookupError):
    """An unknown index or video id, or a video file gone since indexing (HTTP 404)."""


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    score: float  # cosine similarity of query and video
    index: str  # index name
    record: VideoRecord


class LoadedIndex:
    """One index, its encoder model and its FAISS index."""

    def __init__(self, name: str, stored: StoredIndex, model, identity: dict, faiss_index, thumbs: ThumbnailCache):
        self.name = name
        self.stored = stored
        self.model = model
        self.identity = identity
        self.faiss = faiss_index
        self.thumbs = thumbs
        self.rows = {r.id: i for i, r in enumerate(stored.records)}

    def __len__(self) -> int:
        return len(self.stored)

    def record(self, video_id: str) -> VideoRecord:
        row = self.rows.get(video_id)
        if row is None:
            raise NotFound(f"no video with id {video_id!r} in index {self.name!r}")
        return self.stored.records[row]

    def file(self, record: VideoRecord) -> Path:
        """The real path of the video's file, if it is still the file that was indexed.

        Raises :class:`NotFound` unless: the recorded path is relative, without ``..``,
        hidden parts or NUL, with a video suffix; its real path (symlinks resolved) lies
        inside the real recorded root; it is a regular file; and its size and mtime match
        the record."""
        rel = PurePosixPath(record.path)
        if (rel.is_absolute() or not rel.parts or any(p in ("..", ".") or p.startswith(".") for p in rel.parts)
                or "\\" in record.path or "\x00" in record.path or not record.path.lower().endswith(VIDEO_SUFFIXES)):
            raise NotFound(f"video {record.id} has an unsafe recorded path; re-run vop encode")
        root = os.path.realpath(self.stored.root)
        if root == os.path.sep or root != os.path.normpath(str(self.stored.root)):
            # the recorded root was resolved at encode time: one that resolves elsewhere now
            # (replaced by a symlink) or that is the file system's root is not served from
            raise NotFound(f"video {record.id}: the index's root is not a collection folder; re-run vop encode")
        try:
            real = os.path.realpath(os.path.join(root, *rel.parts), strict=True)
            st = os.stat(real)
        except OSError:
            raise NotFound(f"video {record.id} ({escape(record.path)}) is no longer in the collection; "
                           "re-run vop encode") from None
        if os.path.commonpath([real, root]) != root:
            raise NotFound(f"video {record.id} lies outside the collection")
        if not stat.S_ISREG(st.st_mode) or st.st_size != record.size or st.st_mtime_ns != record.mtime_ns:
            raise NotFound(f"video {record.id} ({escape(record.path)}) changed since it was indexed; re-run vop encode")
        return Path(real)

    def summary(self) -> dict:
        meta = self.stored.meta
        return {"name": self.name, "videos": len(self), "failed": meta.get("failed", 0),
                "checkpoint": self.identity["checkpoint"], "method": self.identity["method"]["method"],
                "backbone": self.identity["backbone"]["source"],
                "fingerprint": self.identity["backbone"]["fingerprint"], "updated": meta.get("updated")}


def _encoder_key(ident: dict) -> str:
    return json.dumps([ident["method"], ident["weights_sha256"], ident["backbone"]["fingerprint"]], sort_keys=True)


class SearchService:
    """Holds indexes and answers text queries against them.

    Backbones are cached by source and fingerprint (:class:`BackboneCache`); models by
    encoder identity, so N indexes of one checkpoint cost one model. Queries are text, so
    with a cache that keeps text towers (``BackboneCache(text_dir=...)``, as ``vop search``
    and ``vop serve`` use) an index's encoder is loaded without its image tower."""

    def __init__(self, cache: BackboneCache | None = None, ann_config: ann.AnnConfig = ann.AnnConfig(),
                 max_k: int = MAX_K, max_query_chars: int = MAX_QUERY_CHARS, device: str = "cpu",
                 recall_k: int | None = None):
        self.cache = cache or BackboneCache()
        # Text-conditioned methods (X-Pool): candidates recalled by dot product, then
        # re-ranked with the method's own scores (None: max(k, 100) candidates).
        if recall_k is not None and recall_k < 1:
            raise ValueError(f"recall_k must be >= 1, got {recall_k}")
        self.recall_k = recall_k
        self.ann_config = ann_config
        self.max_k, self.max_query_chars = max_k, max_query_chars
        self.device = device
        self.indexes: dict[str, LoadedIndex] = {}
        self._models: dict[str, tuple[object, dict]] = {}
        self._lock = threading.Lock()
        self.examples: list[str] = []  # example queries shown by the web page

    # -- loading ----------------------------------------------------------------------------
    def add_index(self, path: str | os.PathLike, *, name: str | None = None, checkpoint: str | None = None,
                  backbone: str | None = None, warm_up: bool = True) -> LoadedIndex:
        """Load the index at ``path``; ``checkpoint``/``backbone`` default to those it records
        (another checkpoint must be the same encoder, else :class:`IndexMismatch`).
        ``warm_up`` embeds a first query now, so that a server's first request is not slower."""
        stored = read_index(path)
        recorded = stored.encoder
        checkpoint = checkpoint or recorded["checkpoint"]
        backbone = backbone or recorded["backbone"]["source"]
        model, ident = self._model(str(checkpoint), backbone, recorded)
        check_same_encoder(recorded, ident, index_name=f"index {stored.path}")
        name = name or self._unique_name(Path(path).resolve().name)
        if name in self.indexes:
            raise ValueError(f"an index named {name!r} is already loaded")
        ann.set_threads(0)  # build on every core, then answer each query on one thread
        faiss_index = ann.load_or_build(stored.embeddings, self.ann_config, stored.path, stored.generation)
        ann.set_threads(self.ann_config.search_threads)
        loaded = LoadedIndex(name, stored, model, ident, faiss_index, ThumbnailCache(stored.path / THUMBS))
        if warm_up:
            self.embed_query(loaded, "warm up")  # loads the tokenizer now, not in the first request
        with self._lock:
            if name in self.indexes:
                raise ValueError(f"an index named {name!r} is already loaded")
            # A new dict, not a change to the one requests may be iterating.
            self.indexes = {**self.indexes, name: loaded}
        return loaded

    def _model(self, checkpoint: str, backbone: str, recorded: dict):
        with self._lock:
            # The recorded encoder, asked for again: reuse its model without reloading, and
            # (queries being text) load only its text side when the cache keeps it.
            recorded_encoder = checkpoint == recorded["checkpoint"] and backbone == recorded["backbone"]["source"]
            if recorded_encoder:
                hit = self._models.get(_encoder_key(recorded))
                if hit is not None:
                    return hit
            model, ident = load_method(checkpoint, backbone, cache=self.cache, text_only=recorded_encoder,
                                       expect=recorded["backbone"])
            key = _encoder_key(ident)
            if key not in self._models:
                self._models[key] = (model.to(self.device), ident)
            return self._models[key]

    def _unique_name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", base) or "index"
        name, n = base, 2
        while name in self.indexes:
            name, n = f"{base}-{n}", n + 1
        return name

    # -- queries ----------------------------------------------------------------------------
    def get(self, index: str | None = None) -> LoadedIndex:
        if not self.indexes:
            raise NotFound("no index is loaded")
        if index is None:
            return next(iter(self.indexes.values()))
        if index not in self.indexes:
            raise NotFound(f"unknown index {index!r}; loaded: {', '.join(self.indexes)}")
        return self.indexes[index]

    def check_query(self, query: object, k: object) -> tuple[str, int]:
        """Validate a query and k: ``(query stripped, k)``, or :class:`QueryError`."""
        if not isinstance(query, str):
            raise QueryError("the query must be text")
        query = query.strip()
        if not query:
            raise QueryError("the query is empty")
        if len(query) > self.max_query_chars:
            raise QueryError(f"the query has {len(query)} characters; at most {self.max_query_chars} are allowed")
        if any((ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF
               for c in query) or "\ufffd" in query:
            raise QueryError("the query holds control characters or undecodable bytes")
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise QueryError(f"k must be an integer, got {k!r}") from None
        if not 1 <= k <= self.max_k:
            raise QueryError(f"k must be between 1 and {self.max_k}, got {k}")
        return query, k

    def embed_query(self, loaded: LoadedIndex, query: str) -> np.ndarray:
        """``[1, D]`` float32, L2-normalised."""
        model = loaded.model
        with torch.inference_mode():
            ids = model.tokenize([query]).to(self.device)
            return model.encode_text(ids).float().cpu().numpy()

    def search(self, query: str, k: int = 10, index: str | None = None) -> list[Hit]:
        """The ``k`` best videos of ``index`` (default: the first loaded) for ``query``."""
        query, k = self.check_query(query, k)
        loaded = self.get(index)
        if getattr(loaded.model, "text_conditioned", False):
            from vop.search.rerank import two_stage_search

            recall = None if self.recall_k is None else max(k, self.recall_k)
            scores, rows = two_stage_search(loaded.model, loaded.stored, [query], k, recall_k=recall,
                                            index=loaded.faiss)
        else:
            scores, rows = ann.search(loaded.faiss, self.embed_query(loaded, query), k)
        records = loaded.stored.records
        hits = [(float(s), int(r)) for s, r in zip(scores[0], rows[0]) if r >= 0]  # ANN may return -1
        return [Hit(i + 1, s, loaded.name, records[r]) for i, (s, r) in enumerate(hits)]

    # -- videos -----------------------------------------------------------------------------
    def video(self, video_id: str, index: str | None = None) -> tuple[LoadedIndex, VideoRecord]:
        """The index and record of ``video_id`` (in ``index``, or the first index holding it)."""
        if not isinstance(video_id, str) or not _ID.fullmatch(video_id):
            raise QueryError("a video id is 16 lowercase hex digits")
        if index is not None:
            loaded = self.get(index)
            return loaded, loaded.record(video_id)
        for loaded in self.indexes.values():
            if video_id in loaded.rows:
                return loaded, loaded.record(video_id)
        raise NotFound(f"no video with id {video_id!r}")

    def media_path(self, video_id: str, index: str | None = None) -> Path:
        loaded, record = self.video(video_id, index)
        return loaded.file(record)

    def thumbnail(self, video_id: str, index: str | None = None) -> tuple[bytes, str]:
        """The video's thumbnail strip: ``(bytes, media type)``."""
        from vop.data.types import VideoReadError

        loaded, record = self.video(video_id, index)
        path = loaded.file(record)
        try:
            return loaded.thumbs.get(f"{record.id}-{record.hash[:12]}", path)
        except VideoReadError as exc:
            raise NotFound(f"video {video_id} can no longer be decoded: {exc.reason}") from exc
