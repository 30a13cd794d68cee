"""The ``vop`` command line. Argument parsing lives here only; every subcommand turns its
arguments into typed configs and calls the library. One module per group of commands
(``training``, ``search``, ``data``, ``weights``); ``common`` holds the registry they fill."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from vop.cli.common import _COMMANDS, command

# Each module registers its commands on import; `vop --help` lists them in this order.
# isort: off
from vop.cli import training, search, data, weights  # noqa: E402, F401
# isort: on

__all__ = ["build_parser", "command", "main"]


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

