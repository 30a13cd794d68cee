"""Exact vs approximate search (FAISS) at collection sizes 10k, 100k, 1M: build time,
recall@10 against exact search, and single-query latency (the serving pattern).

    python benchmarks/search_ann.py [--sizes 10000,100000,1000000] [--dim 512] [--queries 200]

Data: random unit vectors (Gaussian, normalised), queries drawn the same way. This is the
worst case for approximate search: there are no clusters to exploit and every point's
neighbours are nearly as far as any other point. Real video embeddings are clustered, so
recall there is higher at the same settings (``--queries near`` draws queries next to
database points, a kinder proxy). Each approximate index is measured at a few search
settings (``efSearch`` for HNSW, ``nprobe`` for IVF), the build once.

Latency is per query (batch of one) on the configured FAISS threads; p50 and p99 over
``--queries`` queries after a warm-up.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np

from vop.search import ann


def unit(rng: np.random.Generator, n: int, d: int, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def latencies(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows found per query and the per-query latency in ms."""
    ann.search(index, queries[:5], k)  # warm-up
    rows, times = [], []
    for q in queries:
        t = time.perf_counter()
        _, r = ann.search(index, q[None], k)
        times.append(1000 * (time.perf_counter() - t))
        rows.append(r[0])
    return np.stack(rows), np.asarray(times)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--query-kind", choices=("random", "near"), default="random",
                   help="random unit vectors, or database points plus small noise")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--kinds", default="flat,hnsw,ivf")
    p.add_argument("--hnsw-ef", default="64,128,256", help="efSearch values to measure")
    p.add_argument("--ivf-nprobe", default="16,64,256", help="nprobe values to measure")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--hnsw-ef-construction", type=int, default=80)
    p.add_argument("--build-threads", type=int, default=0, help="FAISS threads while building (0: all cores)")
    p.add_argument("--search-threads", type=int, default=1,
                   help="FAISS threads per query (1, as vop serve uses: concurrency comes from requests)")
    p.add_argument("--hnsw-max", type=int, default=100_000,
                   help="skip HNSW above this size (its build is the slow part: ~N log N graph inserts)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import faiss

    print(f"# FAISS {faiss.__version__}, {os.cpu_count()} CPUs; build threads {args.build_threads or 'all'}, "
          f"search threads {args.search_threads}; D={args.dim}, {args.queries} {args.query_kind} queries, "
          f"recall@{args.k} vs exact\n")
    print("| N | index | search setting | build s | recall@10 | p50 ms | p99 ms |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(args.seed)
        x = unit(rng, n, args.dim)
        if args.query_kind == "random":
            q = unit(rng, args.queries, args.dim)
        else:
            q = x[rng.choice(n, args.queries, replace=False)] + 0.1 * unit(rng, args.queries, args.dim)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
        truth = None
        for kind in args.kinds.split(","):
            if kind == "hnsw" and n > args.hnsw_max:
                print(f"| {n:,} | hnsw | skipped (N > --hnsw-max {args.hnsw_max:,}) | | | | |", flush=True)
                continue
            ann.set_threads(args.build_threads)
            base = ann.AnnConfig(kind=kind, hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction)
            t = time.perf_counter()
            index = ann.build(x, base, seed=args.seed)
            build_s = time.perf_counter() - t
            ann.set_threads(args.search_threads)
            if kind == "flat":
                settings = [("exact", base)]
            elif kind == "hnsw":
                settings = [(f"M={args.hnsw_m} efSearch={e}", ann.AnnConfig(kind="hnsw", hnsw_ef_search=int(e)))
                            for e in args.hnsw_ef.split(",")]
            else:
                nlist = base.nlist(n)
                probes = sorted({min(int(v), nlist) for v in args.ivf_nprobe.split(",")})  # nprobe <= nlist
                settings = [(f"nlist={nlist} nprobe={v}", ann.AnnConfig(kind="ivf", ivf_nprobe=v)) for v in probes]
            for i, (label, cfg) in enumerate(settings):
                ann.set_search_params(index, cfg)
                found, ms = latencies(index, q, args.k)
                if truth is None:  # the exact answer: flat's, or computed here if flat is not measured
                    truth = found if kind == "flat" else ann.search(ann.build(x), q, args.k)[1]
                build = f"{build_s:.1f}" if i == 0 else ""
                print(f"| {n:,} | {kind} | {label} | {build} | {recall_at(found, truth):.3f} | "
                      f"{np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} |", flush=True)
            del index
            gc.collect()


if __name__ == "__main__":
    main()
