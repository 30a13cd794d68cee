"""Search your own videos: encode a folder into an index, query it, serve it.

* :mod:`~vop.search.records`: walking a collection, ids, content hashes.
* :mod:`~vop.search.method`: the encoder (checkpoint or ``zero-shot``), its identity,
  the backbone cache.
* :mod:`~vop.search.encode`: ``vop encode`` (incremental, optionally distributed).
* :mod:`~vop.search.store`: the on-disk index format.
* :mod:`~vop.search.ann`: FAISS exact and approximate indexes.
* :mod:`~vop.search.service`: :class:`SearchService`, many indexes in one process.
* :mod:`~vop.search.app`, :mod:`~vop.search.page`, :mod:`~vop.search.thumbs`: ``vop serve``.
* :mod:`~vop.search.demo`: ``vop serve --demo``.

Submodules are imported on first use, so ``import vop.search`` needs neither FAISS nor
FastAPI. See ``docs/search.md``.
"""

from __future__ import annotations

import importlib

__all__ = ["AnnConfig", "BackboneCache", "EncodeConfig", "IndexMismatch", "SearchService", "ZERO_SHOT",
           "create_app", "encode_collection", "load_method", "read_index", "two_stage_search"]

_WHERE = {
    "AnnConfig": "vop.search.ann",
    "BackboneCache": "vop.search.method",
    "IndexMismatch": "vop.search.method",
    "ZERO_SHOT": "vop.search.method",
    "load_method": "vop.search.method",
    "EncodeConfig": "vop.search.encode",
    "encode_collection": "vop.search.encode",
    "read_index": "vop.search.store",
    "SearchService": "vop.search.service",
    "create_app": "vop.search.app",
    "two_stage_search": "vop.search.rerank",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vop.search' has no attribute {name!r}")
