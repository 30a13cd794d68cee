"""``vop weights`` and ``vop push``: pretrained CLIP weights and published prompt checkpoints
(docs/weights.md)."""

from __future__ import annotations

import argparse

from vop.cli.common import command


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
