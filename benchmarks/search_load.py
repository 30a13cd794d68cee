"""A bounded load test of ``vop serve``: N queries from C concurrent clients over loopback.

    python benchmarks/search_load.py [--queries 2000] [--clients 16] [--max-seconds 120]
                                     [--index INDEX_DIR | --url http://127.0.0.1:8000]

Without ``--url`` it starts ``vop serve`` in a child process (so the clients and the server
do not share a GIL) on a free loopback port, serving ``--index`` or, by default, the demo
collection (48 synthetic videos, written to a temporary folder and indexed with the
shipped tiny CLIP). Queries are distinct-ish captions of the synthetic world with random
``k``; a few deliberately bad requests (empty query, k out of range) are mixed in and must
come back as 400. The run stops at ``--queries`` requests or ``--max-seconds``, whichever
comes first, and prints p50/p90/p99/max latency, throughput and errors (anything other
than the expected status, or a transport failure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _queries(n: int, seed: int) -> list[tuple[dict, int]]:
    """``(params, expected status)``: mostly good queries, 2 % bad ones."""
    from vop.data.synthetic import vocabulary_texts

    rng = random.Random(seed)
    texts = vocabulary_texts()
    out = []
    for i in range(n):
        if i % 50 == 49:
            out.append(rng.choice([({"q": ""}, 400), ({"q": "a dog", "k": "0"}, 400), ({"q": "x" * 1001}, 400)]))
        else:
            out.append(({"q": rng.choice(texts), "k": str(rng.choice([5, 10, 20]))}, 200))
    return out


async def _run(url: str, queries: list[tuple[dict, int]], clients: int, max_seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    next_query = iter(queries)
    deadline = time.monotonic() + max_seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for params, expected in next_query:  # shared iterator: each query sent once
                if time.monotonic() > deadline:
                    return
                t = time.perf_counter()
                try:
                    r = await http.get("/api/search", params=params)
                    if r.status_code != expected or "error" in r.json() and expected == 200:
                        errors.append(f"{r.status_code} for {params}")
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    errors.append(f"{type(exc).__name__}: {exc}")
                latencies.append(1000 * (time.perf_counter() - t))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return {"latencies": np.asarray(latencies), "errors": errors, "seconds": time.perf_counter() - started}


def _start_server(index_dirs: list[str], port: int, threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "vop.cli", "serve", *index_dirs, "--port", str(port)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(url: str, proc: subprocess.Popen | None, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"vop serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long")
    p.add_argument("--index", action="append", default=[], help="index folder(s) to serve (default: the demo)")
    p.add_argument("--url", default=None, help="load an already running server instead")
    p.add_argument("--server-threads", type=int, default=None, help="OMP_NUM_THREADS of the served process")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    proc = None
    url = args.url
    with tempfile.TemporaryDirectory() as tmp:
        index_dirs = args.index
        if url is None and not index_dirs:
            from vop.search.demo import prepare_demo

            setup = prepare_demo(Path(tmp), progress=False)
            index_dirs = [str(setup.index)]
            print(f"serving the demo index ({setup.checkpoint}, backbone {setup.backbone or 'from checkpoint'})")
        if url is None:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            proc = _start_server(index_dirs, port, args.server_threads)
        try:
            _wait(url, proc)
            queries = _queries(args.queries, args.seed)
            result = asyncio.run(_run(url, queries, args.clients, args.max_seconds))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    ms, errors = result["latencies"], result["errors"]
    print(f"{len(ms)} requests ({args.queries} planned, {args.clients} concurrent clients) in "
          f"{result['seconds']:.1f} s: {len(ms) / result['seconds']:.0f} requests/s")
    print(f"latency ms: p50 {np.percentile(ms, 50):.1f}, p90 {np.percentile(ms, 90):.1f}, "
          f"p99 {np.percentile(ms, 99):.1f}, max {ms.max():.1f}")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))


if __name__ == "__main__":
    main()
