"""What a plain ``pip install vop`` brings: every third-party package the search commands
import (``vop encode`` / ``search`` / ``serve``, ``--demo`` included) is a core dependency,
so ``vop serve --demo`` right after the README's install runs instead of a traceback."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
# (starlette comes with fastapi, which is built on it)
DISTRIBUTION = {"faiss": "faiss-cpu", "yaml": "pyyaml", "starlette": "fastapi"}
# Optional: hub ids need huggingface_hub (its own extra and message); thumbnails fall back
# from Pillow's JPEG to a built-in PNG writer.
OPTIONAL = {"huggingface_hub", "PIL"}


def _project() -> dict:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def _third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names) | {"vop", "__future__"}
    return {n for n in found if n not in stdlib}


def test_every_package_the_search_commands_import_is_a_core_dependency():
    core = _names(_project()["dependencies"])
    files = [*sorted((ROOT / "src/vop/search").glob("*.py")), *sorted((ROOT / "src/vop/cli").glob("*.py"))]
    missing = {}
    for path in files:
        for name in _third_party_imports(path) - OPTIONAL:
            dist = DISTRIBUTION.get(name, name).lower()
            if dist not in core:
                missing.setdefault(dist, []).append(path.name)
    assert not missing, f"imported by the search commands but not a core dependency: {missing}"
    assert {"faiss-cpu", "fastapi", "uvicorn"} <= core


def test_the_search_extra_stays_as_an_empty_alias():
    # `pip install vop[search]` from older instructions must keep working.
    extras = _project()["optional-dependencies"]
    assert "search" in extras and extras["search"] == []
