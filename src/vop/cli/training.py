"""``vop params``, ``train``, ``eval``, ``cache``, ``demo`` and ``pretrain``: training and
evaluating methods (docs/training.md)."""

from __future__ import annotations

import argparse
import sys

from vop.cli.common import command, model_rows, say


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
    trainer = Trainer(config, say=say)
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
        rows = model_rows(model, "zero-shot (the frozen backbone)", args.backbone or settings.get("backbone")
                           or "tiny-synthetic", 0)
    else:
        rows = model_rows(model, args.checkpoint, args.backbone or meta["backbone"]["source"],
                           meta.get("trainable_parameters"))
    why = "--precision" if args.precision else ("as the run evaluated" if args.checkpoint != "zero-shot" else "default")
    rows += [("device", f"{device}, precision {args.precision or precision} (autocast, {why})"),
             ("data", f"{d.benchmark} {split_name}: {describe_source(opened)}")]
    say(format_header(f"vop eval: {model.config.method} on {d.benchmark} {split_name}", rows))
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
        say(f"vop eval: not read from the config: {', '.join(ignored)} (training settings; the checkpoint gives "
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
