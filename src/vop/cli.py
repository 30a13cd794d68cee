"""The ``vop`` command line. Argument parsing lives here only; every subcommand turns its
arguments into typed configs and calls the library."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

# name -> (help, add_arguments(parser), run(args) -> exit code)
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``vop NAME``: the decorated function adds arguments; ``run`` does the work."""

    def wrap(add_args):
        def with_run(run):
            _COMMANDS[name] = (help, add_args, run)
            return run
        return with_run

    return wrap


def _say(text: str) -> None:
    """What a run tells its user (headers, resuming, interruptions): on stderr, beside the
    progress bar, so that stdout keeps the results (and --json stays parseable)."""
    print(text, file=sys.stderr, flush=True)


def _model_rows(model, checkpoint: str, backbone_source: str, trained: int | None) -> list[tuple[str, object]]:
    """Header rows naming a loaded model: its checkpoint, backbone (and where its weights
    came from) and method (with the parameters it trained)."""
    trained_words = "" if trained is None else f": {trained:,} trained parameters"
    return [("checkpoint", checkpoint),
            ("backbone", f"{backbone_source}: {model.clip.weights_source}"),
            ("method", f"{model.config.method}{trained_words}")]


# -- vop params ---------------------------------------------------------------------------
def _params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="ViT-B-32", help="architecture name (ViT-B-32, ViT-B-16, ViT-L-14, tiny)")
    p.add_argument("--num-frames", type=int, default=12, help="frames per video (sizes vop-p and vop-f tables)")


@command("params", "print every method's trainable parameters")(_params_args)
def _params(args: argparse.Namespace) -> int:
    from vop.model.accounting import count_heads, count_parameters, format_table

    print(format_table(count_parameters(args.backbone, num_frames=args.num_frames)))
    print()
    print(format_table(count_heads(args.backbone, num_frames=args.num_frames)).replace("method  ", "head    ", 1))
    return 0


# -- vop train ----------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="a YAML config for custom runs (applied after --data/--method)")
    p.add_argument("--data", default=None,
                   help="data preset: msrvtt-9k, msrvtt-7k, didemo, activitynet, lsmdc, msvd, synthetic (configs/data/)")
    p.add_argument("--method", default=None, help="method name (vop params lists them); its recipe sets the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--restart", action="store_true", help="ignore an interrupted run in out_dir and start over")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


@command("train", "train a method (resumes an interrupted run in the same out_dir)")(_train_args)
def _train(args: argparse.Namespace) -> int:
    import json
    import shutil
    from pathlib import Path

    import yaml

    from vop.train.config import load_train_config

    config = load_train_config(args.config, args.overrides, data=args.data, method=args.method)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    from vop.train.trainer import Trainer, TrainingDiverged

    out = Path(config.runtime.out_dir)
    if args.restart:  # the run's own files only: checkpoints, its log and results
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        shutil.rmtree(out / "tb", ignore_errors=True)
        for name in ("log.jsonl", "summary.json"):
            (out / name).unlink(missing_ok=True)
    trainer = Trainer(config, say=_say)
    try:
        summary = trainer.fit()
    except TrainingDiverged as exc:
        print(f"vop train: error: {exc}", file=sys.stderr)
        return 2
    if "test" in summary:
        print(json.dumps({"steps": summary["steps"], "val": summary.get("val"), "test": summary["test"]}, indent=2))
        print(f"checkpoints: {out / 'checkpoints'} (best chosen on {config.data.val_split})")
    return 0


# -- vop eval -----------------------------------------------------------------------------
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint folder from vop train, or 'zero-shot' for the frozen backbone")
    p.add_argument("--backbone", default=None, help="backbone source (default: the one the checkpoint names)")
    p.add_argument("--data", default=None,
                   help="data preset name (configs/data/) or a YAML config whose data/eval sections to use "
                        "(default: the data the checkpoint was trained on)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a data.* or eval.* key, e.g. --set data.root=/data/msrvtt")
    p.add_argument("--split", default=None, help="split to evaluate (default: data.test_split)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                   help="autocast for evaluation (default: the precision the run evaluated in, else fp32)")
    p.add_argument("--dual-softmax", action="store_true", help="dual-softmax re-ranking (post-processing)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("eval", "evaluate a checkpoint on a benchmark split")(_eval_args)
def _eval(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from vop.configio import ConfigError, apply_overrides, from_dict, load_settings
    from vop.data.config import DataConfig
    from vop.data.datasets import open_split
    from vop.eval.config import EvalConfig
    from vop.eval.evaluate import evaluate
    from vop.runtime import setup

    settings = load_settings(args.data) if args.data else {}
    precision = "fp32"
    if args.checkpoint != "zero-shot":
        from vop.checkpoint import load_checkpoint, read_meta

        meta = read_meta(args.checkpoint)  # validated: data and train_config are objects
        settings.setdefault("data", meta.get("data", {}))
        # Evaluate as the run did (its validation and test ran under its autocast precision).
        runtime = meta.get("train_config", {}).get("runtime")
        precision = meta.get("eval_precision") or (runtime.get("precision") if isinstance(runtime, dict) else None)
        precision = precision or "fp32"
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"{args.checkpoint}: meta.json records an unknown precision {precision!r}; pass "
                             "--precision fp32|bf16|fp16")
        model, meta = load_checkpoint(args.checkpoint, backbone=args.backbone)
    settings = apply_overrides(settings, args.overrides)
    if args.checkpoint == "zero-shot":
        from vop.model import create

        model = create("zero-shot", args.backbone or settings.get("backbone") or "tiny-synthetic")
    unknown = sorted(set(settings) - {"data", "eval", "backbone", "method", "optim", "runtime"})
    if unknown:
        raise ConfigError(f"vop eval reads only the data and eval sections; unknown key(s) {unknown}")
    _check_eval_settings(settings, args, model)
    d = from_dict(DataConfig, settings.get("data", {}), "data")
    e = from_dict(EvalConfig, settings.get("eval", {}), "eval")
    if args.dual_softmax:
        e = replace(e, dual_softmax=True)
    device, _ = setup(args.device)
    split_name = args.split or d.test_split
    opened = open_split(d, split_name)
    from vop.data.datasets import describe_source
    from vop.display import format_header

    if args.checkpoint == "zero-shot":
        rows = _model_rows(model, "zero-shot (the frozen backbone)", args.backbone or settings.get("backbone")
                           or "tiny-synthetic", 0)
    else:
        rows = _model_rows(model, args.checkpoint, args.backbone or meta["backbone"]["source"],
                           meta.get("trainable_parameters"))
    why = "--precision" if args.precision else ("as the run evaluated" if args.checkpoint != "zero-shot" else "default")
    rows += [("device", f"{device}, precision {args.precision or precision} (autocast, {why})"),
             ("data", f"{d.benchmark} {split_name}: {describe_source(opened)}")]
    _say(format_header(f"vop eval: {model.config.method} on {d.benchmark} {split_name}", rows))
    metrics = evaluate(model.to(device), opened, e, device=device,
                       precision=args.precision or precision, progress=not args.quiet)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        from vop.eval.report import format_metrics

        print(format_metrics(metrics, title=f"{d.benchmark} {split_name}"))
    return 0


def _check_eval_settings(settings: dict, args: argparse.Namespace, model) -> None:
    """A training config given to ``vop eval``: refuse a method other than the
    checkpoint's, and say which settings evaluation does not read (so that, say, a
    ``runtime.precision`` in the file is not taken for the precision used)."""
    from vop.configio import ConfigError, data_presets

    checkpoint = args.checkpoint != "zero-shot"
    method = settings.get("method")
    named = method.get("name") if isinstance(method, dict) else method
    if checkpoint and named is not None and named != model.config.method:
        raise ConfigError(f"{args.data or '--set'} names method {named!r} but {args.checkpoint} holds "
                          f"{model.config.method!r}; the checkpoint decides the method: remove method from the "
                          "config, or evaluate a checkpoint of that method")
    if args.data is None or args.data in data_presets():
        return  # a preset's training sections are its defaults for vop train, not the user's choices
    ignored = [k for k in ("optim", "runtime") if settings.get(k)]
    ignored += [k for k in ("method", "backbone") if checkpoint and settings.get(k) is not None]
    if ignored:
        _say(f"vop eval: not read from the config: {', '.join(ignored)} (training settings; the checkpoint gives "
             "the method and backbone, --backbone and --precision choose them here)")


# -- vop cache ----------------------------------------------------------------------------
def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmark", help="benchmark name (msrvtt-9k, didemo, ...)")
    p.add_argument("root", help="annotation folder (docs/data.md)")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--video-dir", default=None)
    p.add_argument("--splits", default="train,val,test", help="comma-separated splits to include")
    p.add_argument("--num-frames", type=int, default=12)
    p.add_argument("--backbone", default=None,
                   help="the backbone the cache is for (name, ARCH:TAG or file): frames are stored at its input "
                        "resolution (336 for ViT-L-14-336)")
    p.add_argument("--size", type=int, default=None,
                   help="frame side in pixels, instead of --backbone (default: 224, the ViT-B and ViT-L/14 resolution)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--overwrite", action="store_true")


@command("cache", "decode each video's sampled frames once into a memory-mapped frame cache")(_cache_args)
def _cache(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vop.data.benchmarks import load_split
    from vop.data.cache import build_frame_cache

    if args.size is not None and args.backbone is not None:
        raise ValueError("give --backbone (its resolution) or --size, not both")
    if args.backbone is not None:
        args.size = _backbone_resolution(args.backbone)
        print(f"frames at {args.size} px, the input resolution of {args.backbone}")
    elif args.size is None:
        args.size = 224
        print("frames at 224 px (ViT-B/32, ViT-B/16, ViT-L/14); for another backbone pass --backbone or --size")
    if args.num_frames < 1 or args.size < 1 or args.workers < 0:
        raise ValueError(f"--num-frames and --size must be >= 1 and --workers >= 0, got {args.num_frames}, "
                         f"{args.size}, {args.workers}")
    names = [n.strip() for n in args.splits.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--splits {args.splits!r} names no split; e.g. --splits train,val,test")
    keys = {}
    for name in names:
        split = load_split(args.benchmark, Path(args.root), name,
                           video_dir=Path(args.video_dir) if args.video_dir else None)
        for v, key in enumerate(split.video_ids):
            if key not in keys:
                keys[key] = split.source.describe(v)
    try:
        cache = build_frame_cache(list(keys.values()), args.out, num_frames=args.num_frames, size=args.size,
                                  keys=list(keys), workers=args.workers, overwrite=args.overwrite)
    except FileExistsError:
        raise FileExistsError(f"{args.out} already holds a frame cache; add --overwrite to rebuild it") from None
    print(f"cached {len(cache)} videos in {args.out}; {len(cache.failed)} unreadable")
    return 0


def _backbone_resolution(source: str) -> int:
    """The input resolution of backbone ``source``, without loading weights when a name
    (or ARCH:TAG) says it."""
    from vop.backbone.config import ARCHITECTURES
    from vop.backbone.pretrained import split_name

    arch = split_name(source)[0] if split_name(source) is not None else source
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch].image_resolution
    import vop.backbone

    return vop.backbone.load(source).config.image_resolution


# -- vop demo -----------------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="also train full fine-tuning (slower)")
    p.add_argument("--methods", default=None, help="comma-separated methods to train (default: vop,vop-fc)")
    p.add_argument("--steps", type=int, default=None, help="training steps per method (default: the config's 150)")
    p.add_argument("--out", default=None, help="output folder (default: ~/.cache/vop/demo or $VOP_DEMO_DIR)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every run, e.g. --set data.synthetic.train_pairs=200")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@command("demo", "zero-shot vs vop vs vop-fc on the built-in synthetic world (CPU: 5 min 25 s measured on an idle "
                 "2-core machine; longer when its cores are shared)")(_demo_args)
def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vop.demo import DEFAULT_METHODS, demo_home, demo_prompts_dir, format_table, run_demo, write_report

    methods = tuple(args.methods.split(",")) if args.methods else DEFAULT_METHODS
    if args.full and "full" not in methods:
        methods = (*methods, "full")
    out = Path(args.out) if args.out else demo_home()
    rows = run_demo(methods, steps=args.steps, out_dir=out, overrides=args.overrides, progress=not args.quiet,
                    seed=args.seed)
    print()
    print(format_table(rows))
    paths = write_report(rows, out)
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    print(f"trained prompts for `vop serve --demo`: {demo_prompts_dir()}")
    return 0


# -- vop pretrain -------------------------------------------------------------------------
def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=700, help="optimiser steps of 256 image-caption pairs")
    p.add_argument("--out", default=None,
                   help="checkpoint to write (default: ~/.cache/vop/pretrain/tiny-synthetic.safetensors, or "
                        "$VOP_CACHE/pretrain/...); load it with --set backbone=PATH")
    p.add_argument("--seed", type=int, default=0, help="initial weights and training-index stream")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite-shipped", action="store_true",
                   help="developers only: write the package's own vop/assets/tiny-synthetic.safetensors (read-only "
                        "to every command without this flag; every result built on it changes)")


@command("pretrain", "pretrain the tiny CLIP on the synthetic upstream world (builds tiny-synthetic)")(_pretrain_args)
def _pretrain(args: argparse.Namespace) -> int:
    import shlex

    from vop.display import escape
    from vop.train.pretrain import PretrainConfig, pretrain

    from vop.train.pretrain import default_out

    if args.steps < 1 or args.threads < 1:
        raise ValueError(f"--steps and --threads must be >= 1, got {args.steps} and {args.threads}")
    config = PretrainConfig(steps=args.steps, seed=args.seed, threads=args.threads,
                            warmup=min(PretrainConfig.warmup, args.steps - 1))
    # The command recorded in the checkpoint: the arguments that shape the weights.
    recorded = ["vop", "pretrain", "--steps", str(args.steps), "--seed", str(args.seed),
                "--threads", str(args.threads), *(["--out", args.out] if args.out else []),
                *(["--overwrite-shipped"] if args.overwrite_shipped else [])]
    result = pretrain(config, args.out, progress=not args.no_progress,
                      command=" ".join(map(shlex.quote, recorded)), overwrite_shipped=args.overwrite_shipped)
    print(f"zero-shot image-to-text R@1 on {result['pairs']} held-out pairs: "
          f"{result['i2t_r1_exact']:.1f} % exact caption, {result['i2t_r1_attributes']:.1f} % by attributes")
    print(f"trained {result['steps']} steps in {result['train_seconds'] / 60:.1f} min; "
          f"loss {result['loss_first']:.3f} -> {result['loss_last']:.3f}")
    print(f"wrote {escape(result['path'])} ({result['size_bytes'] / 1e6:.2f} MB, fingerprint {result['fingerprint']})")
    if args.out is None and not args.overwrite_shipped:
        print(f"train on it with: vop train --data synthetic --set backbone={escape(default_out())}")
    return 0


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
        rows = _model_rows(model, "zero-shot (the frozen backbone)" if zero else identity["checkpoint"],
                           identity["backbone"]["source"], trained)
        world = f"{dist.world_size} processes ({dist.backend})" if dist.enabled else "1 process (no process group)"
        rows += [("device", f"{device}, weights {args.precision} (weight cast)"), ("world", world),
                 ("videos", Path(args.video_dir).resolve()), ("output", Path(args.out).resolve())]
        _say(format_header(f"vop encode: {model.config.method}", rows))
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


# -- vop data check -----------------------------------------------------------------------
def _data_args(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    c = actions.add_parser("check", help="check a benchmark's annotation files, videos and frame cache",
                           description="For each split: the annotation files parsed, captions per video, videos "
                                       "present / missing / unreadable, frame cache coverage. Exit status 1 when "
                                       "there is a problem, 0 when the data is ready (docs/data.md).")
    c.add_argument("benchmark", nargs="?", help="benchmark name (msrvtt-9k, didemo, ...); default: the config's")
    c.add_argument("root", nargs="?", help="annotation folder (docs/data.md); default: the config's data.root")
    c.add_argument("--config", default=None,
                   help="a train YAML config: its data section gives benchmark, root, video_dir and cache_dir")
    c.add_argument("--video-dir", default=None, help="video folder (default: ROOT/videos)")
    c.add_argument("--cache", default=None, help="frame cache folder (vop cache --out) whose coverage to report")
    c.add_argument("--splits", default=None, help="comma-separated splits (default: all of the benchmark's)")
    c.add_argument("--decode", action="store_true",
                   help="decode the sampled frames of every video (slow, thorough) instead of opening each and "
                        "decoding its first frame")
    c.add_argument("--no-probe", action="store_true", help="only look for the video files, do not open them")
    c.add_argument("--num-frames", type=int, default=12, help="frames sampled by --decode")
    c.add_argument("--workers", type=int, default=2, help="probing threads")
    c.add_argument("--sample", type=int, default=5, help="names shown per list of missing/unreadable (0: all)")
    c.add_argument("--json", action="store_true", help="print one JSON document (counts complete, names cut to --sample)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")


@command("data", "check benchmark data: vop data check BENCHMARK ROOT (docs/data.md)")(_data_args)
def _data(args: argparse.Namespace) -> int:
    import json

    from vop.data.check import check_benchmark

    benchmark, root, video_dir, cache = args.benchmark, args.root, args.video_dir, args.cache
    if args.config:
        from vop.train.config import load_train_config

        data = load_train_config(args.config, []).data
        benchmark, root = benchmark or data.benchmark, root or data.root
        video_dir, cache = video_dir or data.video_dir, cache or data.cache_dir
    if not benchmark or not root:
        raise ValueError("give BENCHMARK and ROOT (e.g. vop data check msrvtt-9k data/msrvtt), or --config")
    if args.decode and args.no_probe:
        raise ValueError("--decode and --no-probe contradict each other; give one")
    if args.sample < 0:
        raise ValueError(f"--sample must be >= 0, got {args.sample}")
    report = check_benchmark(
        benchmark, root, video_dir=video_dir, cache_dir=cache,
        splits=[s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None,
        probe="none" if args.no_probe else "decode" if args.decode else "open", num_frames=args.num_frames,
        workers=args.workers, progress=not args.quiet and not args.json, sample=args.sample)
    print(json.dumps(report.to_dict(sample=args.sample), indent=2) if args.json else report.format(args.sample))
    return 0 if report.ok else 1


# -- vop weights (docs/weights.md) --------------------------------------------------------
def _weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "fetch"], help="list: the known pretrained weights; "
                   "fetch: download (and verify) into the cache, for machines without internet later")
    p.add_argument("name", nargs="?", help="fetch: ARCH (with --pretrained), ARCH:TAG, or hf-hub:ORG/NAME")
    p.add_argument("--pretrained", default=None, help="fetch: the pretrained tag, e.g. openai")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("weights", "list the known pretrained CLIP weights, or fetch some into the cache")(_weights_args)
def _weights(args: argparse.Namespace) -> int:
    from vop.backbone import pretrained as table
    from vop.backbone.download import cache_dir

    if args.action == "list":
        print(table.format_table())
        print(f"cache: {cache_dir()} (VOP_CACHE); hub weights: the Hugging Face cache. Load with "
              "vop.backbone.load('ARCH', pretrained='TAG') or the string 'ARCH:TAG'.")
        return 0
    if not args.name:
        raise ValueError("vop weights fetch needs a NAME: ARCH --pretrained TAG, ARCH:TAG or hf-hub:ORG/NAME")
    if args.pretrained is None and table.split_name(args.name) is None and "/" not in args.name:
        raise ValueError(f"{args.name!r}: give the weights with --pretrained TAG (tags: "
                         f"{', '.join(table.tags(args.name)) or 'see `vop weights list`'}), as ARCH:TAG, "
                         "or a hub id hf-hub:ORG/NAME")
    from vop.backbone.load import fetch_weights

    path = fetch_weights(args.name, pretrained=args.pretrained, progress=not args.no_progress)
    print(f"fetched {args.name}{':' + args.pretrained if args.pretrained else ''} -> {path}")
    return 0


# -- vop push (docs/weights.md) ------------------------------------------------------------
def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder written by vop train (e.g. runs/.../checkpoints/best)")
    p.add_argument("repo", help="Hugging Face hub repository to publish to: ORG/NAME (created if needed)")
    p.add_argument("--backbone", default=None,
                   help="where receivers get the backbone (e.g. ViT-B-32:openai), when the checkpoint names a "
                        "local file; its weights must match the recorded fingerprint")
    p.add_argument("--private", action="store_true", help="create the repository as private")


@command("push", "publish a prompt checkpoint to the Hugging Face hub (load it with vop.load('hf-hub:ORG/NAME'))")(
    _push_args)
def _push(args: argparse.Namespace) -> int:
    from vop.hub import push_checkpoint

    url = push_checkpoint(args.checkpoint, args.repo, backbone=args.backbone, private=args.private)
    print(f"published {args.checkpoint} -> {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vop._version import __version__

    parser = argparse.ArgumentParser(prog="vop", description="Text-video retrieval by prompt tuning a frozen CLIP (VoP).")
    parser.add_argument("--version", action="version", version=f"vop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _run) in _COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


# Where an unexpected error is reported (a traceback is always a bug: every bad input has its own message).
BUG_REPORT = "the issue tracker of the vop repository (with the traceback above and the command you ran)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``vop`` command: its exit code. The one error boundary of the command line:

    * bad input and missing, damaged or unwritable files (``ValueError``, which covers
      ``ConfigError``, ``CheckpointFormatError``, ``IndexFormatError`` ...; ``OSError``): one
      line on stderr, escaped (a message may quote a file name or file content), exit 2;
    * Ctrl-C: one line, exit 130;
    * anything else is a bug: the traceback, then one line saying so and where to report it,
      exit 1.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _COMMANDS[args.command][2](args) or 0
    except (ValueError, OSError) as exc:  # bad input and missing/unwritable files: no traceback
        _error(args.command, str(exc) or type(exc).__name__)
        return 2
    except KeyboardInterrupt:
        _error(args.command, "interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the boundary: anything unexpected is a bug, said as such
        import traceback

        from vop._version import __version__

        traceback.print_exc()
        _error(args.command, f"internal error ({type(exc).__name__}); this is a bug in vop {__version__}, "
                             f"please report it: {BUG_REPORT}", prefix="bug")
        return 1


def _error(command: str, message: str, prefix: str = "error") -> None:
    from vop.display import escape

    try:
        print(f"vop {command}: {prefix}: {escape(message)}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed or broken: nothing left to tell
        pass


if __name__ == "__main__":
    raise SystemExit(main())
