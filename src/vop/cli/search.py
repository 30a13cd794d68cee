"""``vop encode``, ``search`` and ``serve``: search indexes of one's own videos (docs/search.md)."""

from __future__ import annotations

import argparse

from vop.cli.common import command, model_rows, say


# -- vop encode / search / serve (docs/search.md) ----------------------------------------
def _encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_dir", help="folder of videos (mp4, webm, mkv, avi, mov), walked recursively")
    p.add_argument("--checkpoint", required=True,
                   help="method checkpoint folder (vop train), or 'zero-shot' for the plain --backbone")
    p.add_argument("--out", required=True, help="index folder to create or update")
    p.add_argument("--backbone", default=None,
                   help="backbone source (required with zero-shot; overrides the checkpoint's recorded source)")
    p.add_argument("--batch", type=int, default=8, help="videos per model call")
    p.add_argument("--num-frames", type=int, default=None, help="frames per video (default: the method's, or 12)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (under torchrun: each rank's local GPU)")
    p.add_argument("--rebuild", action="store_true", help="encode everything again, replacing the index")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: measured 3-4x faster on an AMX CPU and 4-6x on an H200, ViT-B/32 embeddings "
                        "within cosine 0.9999 of fp32; fp32 on CPUs without bf16 instructions (docs/search.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder: a one-off compile (up to 2 minutes on a CPU); measured "
                        "1.1-1.5x over bf16 for vop and vop-fc, nothing for zero-shot on a CPU (docs/search.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("encode", "encode a folder of videos into a search index (incremental; torchrun for several processes)")(
    _encode_args)
def _encode(args: argparse.Namespace) -> int:
    from vop.runtime import WEIGHT_DTYPES, setup
    from vop.search.encode import EncodeConfig, encode_collection
    from vop.search.method import load_method

    device, dist = setup(args.device)
    config = EncodeConfig(batch_size=args.batch, num_frames=args.num_frames, workers=args.workers, device=device,
                          progress=not args.quiet, rebuild=args.rebuild, precision=args.precision,
                          compile=args.compile)
    model, identity = load_method(args.checkpoint, args.backbone)
    if dist.is_main:
        from pathlib import Path

        from vop.checkpoint import read_meta
        from vop.display import format_header

        zero = args.checkpoint == "zero-shot"
        trained = 0 if zero else read_meta(args.checkpoint).get("trainable_parameters")
        rows = model_rows(model, "zero-shot (the frozen backbone)" if zero else identity["checkpoint"],
                           identity["backbone"]["source"], trained)
        world = f"{dist.world_size} processes ({dist.backend})" if dist.enabled else "1 process (no process group)"
        rows += [("device", f"{device}, weights {args.precision} (weight cast)"), ("world", world),
                 ("videos", Path(args.video_dir).resolve()), ("output", Path(args.out).resolve())]
        say(format_header(f"vop encode: {model.config.method}", rows))
    # Cast here, in place: encode_collection would otherwise keep this fp32 model and a bf16 copy.
    model = model.to(device=device, dtype=WEIGHT_DTYPES[args.precision])
    report = encode_collection(args.video_dir, args.out, model, identity, config, dist=dist)
    if dist.is_main:
        print(report.summary())
    return 0


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index folder written by vop encode")
    p.add_argument("query", help="what the video shows, in words")
    p.add_argument("-k", type=int, default=10, help="results to show (1-100)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--checkpoint", default=None, help="encode the query with this checkpoint (must be the index's)")
    p.add_argument("--backbone", default=None, help="backbone source, if the recorded one has moved")
    p.add_argument("--ann", default="flat", choices=("flat", "hnsw", "ivf"),
                   help="exact search (flat) or an approximate index for large collections")
    _text_cache_arg(p)
    p.add_argument("--recall-k", type=int, default=None,
                   help="text-conditioned methods (xpool): candidates recalled by dot product before re-ranking "
                        "with the method's own scores (default: max(k, 100))")


def _text_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-text-cache", action="store_true",
                   help="load the whole backbone for queries instead of the text tower kept in $VOP_TEXT_CACHE "
                        "(default ~/.cache/vop/text-towers; docs/search.md)")


def _backbone_cache(args: argparse.Namespace):
    """The backbone cache of vop search / serve: text towers kept on disk unless --no-text-cache."""
    import os
    from pathlib import Path

    from vop.backbone.download import cache_dir
    from vop.search.method import BackboneCache

    folder = Path(os.environ["VOP_TEXT_CACHE"]).expanduser() if os.environ.get("VOP_TEXT_CACHE") else \
        cache_dir() / "text-towers"
    return BackboneCache(text_dir=None if args.no_text_cache else folder)


@command("search", "query a search index with a sentence")(_search_args)
def _search(args: argparse.Namespace) -> int:
    import json

    from vop.display import escape
    from vop.search.ann import AnnConfig
    from vop.search.service import SearchService

    service = SearchService(cache=_backbone_cache(args), ann_config=AnnConfig(kind=args.ann), recall_k=args.recall_k)
    loaded = service.add_index(args.index, checkpoint=args.checkpoint, backbone=args.backbone, warm_up=False)
    hits = service.search(args.query, args.k)
    root = loaded.stored.root
    # Names come from the file system: escaped (control characters, bytes that are not UTF-8).
    if args.json:
        print(json.dumps([{"rank": h.rank, "score": round(h.score, 6), "id": h.record.id,
                           "path": escape(h.record.path), "file": escape(root / h.record.path),
                           "duration": h.record.duration} for h in hits], indent=2))
        return 0
    print(f"{len(hits)} of {len(loaded)} videos in {escape(loaded.name)} ({escape(root)}):")
    for h in hits:
        print(f"{h.rank:>4}  {h.score:+.4f}  {escape(h.record.path)}")
    return 0


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("indexes", nargs="*", metavar="INDEX_DIR", help="index folders (one per checkpoint, say)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (loopback by default)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--demo", action="store_true",
                   help="write and index a small synthetic collection (tiny CLIP + `vop demo` prompts) and serve it")
    p.add_argument("--demo-dir", default=None, help="demo folder (default: $VOP_DEMO_DIR or ~/.cache/vop/demo)")
    p.add_argument("--ann", default="flat", choices=("flat", "hnsw", "ivf"), help="exact or approximate search")
    p.add_argument("--recall-k", type=int, default=None,
                   help="text-conditioned methods (xpool): candidates re-ranked per query (default: max(k, 100))")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="also accept this Host header (a name the server is reached by beyond loopback)")
    _text_cache_arg(p)


@command("serve", "serve search indexes over HTTP: a JSON API and a web page")(_serve_args)
def _serve(args: argparse.Namespace) -> int:
    import errno
    import socket

    import uvicorn

    from vop.display import escape
    from vop.search.ann import AnnConfig
    from vop.search.app import LOOPBACK_HOSTS, create_app
    from vop.search.service import SearchService

    if not args.indexes and not args.demo:
        raise ValueError("give at least one INDEX_DIR, or --demo")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    # Bind first (before loading anything): a busy port or a bad address is said at once.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, f"port {args.port} on {args.host} is busy (another server is using it); "
                                     "stop it or pass another --port") from None
        raise OSError(exc.errno, f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    cache = _backbone_cache(args)
    service = SearchService(cache=cache, ann_config=AnnConfig(kind=args.ann), recall_k=args.recall_k)
    if args.demo:
        from pathlib import Path

        from vop.search.demo import prepare_demo

        setup = prepare_demo(Path(args.demo_dir) if args.demo_dir else None, cache=cache)
        for note in setup.notes:
            print(f"note: {note}")
        service.add_index(setup.index, name="demo")
        service.examples = setup.examples
        print(f"demo collection: {escape(setup.videos)} (index {escape(setup.index)}, {escape(setup.checkpoint)})")
    for path in args.indexes:
        loaded = service.add_index(path)
        print(f"index {escape(loaded.name)}: {len(loaded)} videos, method {loaded.identity['method']['method']}")
    hosts = [*LOOPBACK_HOSTS, *args.allow_host]
    if args.host not in LOOPBACK_HOSTS:
        # A wildcard address is reached by names we cannot know: accept any Host unless listed.
        hosts += ["*"] if args.host in ("0.0.0.0", "::") and not args.allow_host else [args.host]
        print(f"warning: listening on {args.host}: every indexed video can be fetched by anyone who reaches it")
    app = create_app(service, allowed_hosts=hosts)
    port = sock.getsockname()[1]
    print(f"serving on http://{'[' + args.host + ']' if ':' in args.host else args.host}:{port}/  (Ctrl-C stops)",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])  # the socket bound above: no second bind that could race
    return 0
