"""Where vop keeps its files on the user's machine (a base-layer module, so the demo, the
search service and the weights cache agree without importing each other)."""

from __future__ import annotations

import os
from pathlib import Path


def demo_home() -> Path:
    """Where the demo keeps its outputs and prompts (``VOP_DEMO_DIR`` or ~/.cache/vop/demo)."""
    return Path(os.environ.get("VOP_DEMO_DIR", Path.home() / ".cache" / "vop" / "demo"))


def demo_prompts_dir() -> Path:
    """The checkpoint folder `vop serve --demo` loads (the demo's best video-prompt method)."""
    return demo_home() / "prompts"
