"""What every ``vop`` command shares: the command registry, the run header rows and where
a run talks to its user."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

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


def say(text: str) -> None:
    """What a run tells its user (headers, resuming, interruptions): on stderr, beside the
    progress bar, so that stdout keeps the results (and --json stays parseable)."""
    print(text, file=sys.stderr, flush=True)


def model_rows(model, checkpoint: str, backbone_source: str, trained: int | None) -> list[tuple[str, object]]:
    """Header rows naming a loaded model: its checkpoint, backbone (and where its weights
    came from) and method (with the parameters it trained)."""
    trained_words = "" if trained is None else f": {trained:,} trained parameters"
    return [("checkpoint", checkpoint),
            ("backbone", f"{backbone_source}: {model.clip.weights_source}"),
            ("method", f"{model.config.method}{trained_words}")]
