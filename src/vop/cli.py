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


# -- vop params ---------------------------------------------------------------------------
def _params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="ViT-B-32", help="architecture name (ViT-B-32, ViT-B-16, ViT-L-14, tiny)")
    p.add_argument("--num-frames", type=int, default=12, help="frames per video (sizes vop-p and vop-f tables)")


@command("params", "print every method's trainable parameters")(_params_args)
def _params(args: argparse.Namespace) -> int:
    from vop.methods.accounting import count_parameters, format_table

    print(format_table(count_parameters(args.backbone, num_frames=args.num_frames)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vop import __version__

    parser = argparse.ArgumentParser(prog="vop", description="Text-video retrieval by prompt tuning a frozen CLIP (VoP).")
    parser.add_argument("--version", action="version", version=f"vop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _run) in _COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _COMMANDS[args.command][2](args) or 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"vop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
