"""FAISS indexes over L2-normalised embeddings, scored by inner product (= cosine).

* ``flat``: exact search (``IndexFlatIP``), the default. A brute-force scan of N x D
  floats per query: instant to build, linear in N.
* ``hnsw``: a graph index (``IndexHNSWFlat``); sub-linear queries, slow to build, memory
  ~ N x (D + 2M) x 4 bytes. Good recall without training.
* ``ivf``: inverted lists (``IndexIVFFlat``): k-means into ``nlist`` cells, a query scans
  ``nprobe`` of them. Fast to build; recall depends on ``nprobe`` and on how clustered the
  data is.

``benchmarks/search_ann.py`` measures recall@10 and latency of each; ``docs/search.md``
reports the figures. An approximate index is cached in the index folder as
``ann-<kind>-<generation>-<params>.faiss`` and rebuilt whenever the index is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["ANN_KINDS", "AnnConfig", "build", "load_or_build", "search", "set_search_params", "set_threads"]

ANN_KINDS = ("flat", "hnsw", "ivf")


@dataclass(frozen=True)
class AnnConfig:
    """Which FAISS index answers queries, and its knobs."""

    kind: str = "flat"  # "flat" (exact), "hnsw" or "ivf" (approximate)
    hnsw_m: int = 32  # hnsw: graph neighbours per node
    hnsw_ef_construction: int = 80  # hnsw: candidate list size while building
    hnsw_ef_search: int = 128  # hnsw: candidate list size per query (recall vs speed)
    ivf_nlist: int | None = None  # ivf: cells (None: sqrt(N), at most N / 39)
    ivf_nprobe: int = 32  # ivf: cells scanned per query (recall vs speed)
    search_threads: int = 1  # FAISS threads per query (1 suits a server answering queries concurrently; 0: all)

    def __post_init__(self) -> None:
        if self.kind not in ANN_KINDS:
            raise ValueError(f"ann kind must be one of {ANN_KINDS}, got {self.kind!r}")
        if self.search_threads < 0:
            raise ValueError(f"search_threads must be >= 0, got {self.search_threads}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ivf_nlist is not None and self.ivf_nlist < 1:
            raise ValueError(f"ivf_nlist must be >= 1, got {self.ivf_nlist}")

    def nlist(self, n: int) -> int:
        if self.ivf_nlist is not None:
            return max(1, min(self.ivf_nlist, n))
        # sqrt(N) keeps k-means affordable on a CPU (its cost grows as N^1.5); FAISS wants
        # >= 39 training points per centroid.
        return max(1, min(int(math.sqrt(max(n, 1))), n // 39))

    def tag(self) -> str:
        """A short hash of the build parameters, for cache file names."""
        build = {k: v for k, v in asdict(self).items() if k in ("kind", "hnsw_m", "hnsw_ef_construction", "ivf_nlist")}
        return hashlib.sha256(json.dumps(build, sort_keys=True).encode()).hexdigest()[:8]


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise ImportError("vop search needs FAISS (faiss-cpu, a dependency of vop): reinstall vop "
                          "(pip install -e .) or pip install faiss-cpu") from exc
    return faiss


def build(embeddings: np.ndarray, config: AnnConfig = AnnConfig(), seed: int = 0):
    """A FAISS index over ``embeddings`` ``[N, D]`` float32, scored by inner product."""
    faiss = _faiss()
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x.shape
    if config.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
    else:
        nlist = config.nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        # k-means on at most 64 points per cell: enough for stable centroids, fast.
        rng = np.random.default_rng(seed)
        sample = x if n <= 64 * nlist else x[rng.choice(n, 64 * nlist, replace=False)]
        index.cp.seed = seed
        index.train(sample)
    if n:
        index.add(x)
    set_search_params(index, config)
    return index


def set_threads(threads: int) -> None:
    """FAISS's OpenMP threads for this process (0: FAISS's default, all cores).

    One thread per query is much faster for single queries on a loaded machine: OpenMP's
    hand-off between threads costs more than a small scan, and a server gets its
    parallelism from concurrent requests."""
    faiss = _faiss()
    faiss.omp_set_num_threads(threads if threads > 0 else os.cpu_count() or 1)


def set_search_params(index, config: AnnConfig) -> None:
    """Apply ``config``'s query-time knobs (efSearch, nprobe) to a built index."""
    if config.kind == "hnsw":
        index.hnsw.efSearch = config.hnsw_ef_search
    elif config.kind == "ivf":
        index.nprobe = min(config.ivf_nprobe, index.nlist)


def load_or_build(embeddings: np.ndarray, config: AnnConfig, cache_dir: Path | None, generation: str):
    """Build the index, or read it from ``cache_dir`` if this generation's is there.

    Exact (``flat``) indexes are never cached: building one is a copy. A cache file that
    cannot be read (damaged) is rebuilt; one that cannot be written (a read-only or full
    index folder) is skipped with a warning: the index built in memory answers anyway."""
    if config.kind == "flat" or cache_dir is None:
        return build(embeddings, config)
    faiss = _faiss()
    file = Path(cache_dir) / f"ann-{config.kind}-{generation[:12]}-{config.tag()}.faiss"
    if file.is_file():
        try:
            index = faiss.read_index(str(file))
        except RuntimeError:  # FAISS reports a damaged or truncated file this way
            index = None
        if index is not None and index.ntotal == len(embeddings) and index.d == embeddings.shape[1]:
            set_search_params(index, config)
            return index
    index = build(embeddings, config)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, file)
        for stale in Path(cache_dir).glob(f"ann-{config.kind}-*.faiss"):
            if stale != file:
                stale.unlink()
    except (OSError, RuntimeError) as exc:  # FAISS raises RuntimeError for I/O errors (read-only, disk full)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"could not cache the {config.kind} index in {cache_dir} ({reason[:200]}); it was built in "
                      "memory and will be rebuilt next time", RuntimeWarning, stacklevel=2)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores [Q, k'], rows [Q, k'])`` best first, ``k' = min(k, N)``; rows index the embeddings."""
    k = min(int(k), index.ntotal)
    q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d)
    if k <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    scores, rows = index.search(q, k)
    return scores, rows
