"""The package's layers (docs/architecture.md): every ``vop`` import, at module level or
inside a function, goes to the importer's own layer or a lower one, and the import graph
has no cycle. No exceptions are listed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vop"

# Bottom to top. A module belongs to the first entry whose prefix names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("vop._version", "vop.defaults", "vop.paths", "vop.configio", "vop.runtime", "vop.atomic",
              "vop.display")),
    ("backbone", ("vop.backbone",)),
    ("methods", ("vop.methods",)),
    ("model", ("vop.model",)),
    ("checkpoint", ("vop.checkpoint", "vop.hub")),
    ("data", ("vop.data",)),
    ("eval", ("vop.eval",)),
    ("inference", ("vop.inference",)),
    ("train", ("vop.train",)),
    ("search", ("vop.search",)),
    ("app", ("vop.demo", "vop.cli", "vop")),
]
# Layers that sit above another but must still not import it: the search service runs
# without the trainer.
FORBIDDEN = {("search", "train")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    if module == "vop":  # the package's facade (vop.create, vop.load) sits on top
        return len(LAYERS) - 1
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "vop"):
            return i
    raise AssertionError(f"module {module} is in no layer; add it to LAYERS in tests/test_layers.py")


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> list[tuple[str, int]]:
    """The vop modules ``module`` imports (module level and function level), with lines."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "vop"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "vop":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return found


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    mine = _layer(module)
    for target, line in _imports(module):
        if target not in MODULES:
            raise AssertionError(f"{module}:{line} imports {target}, which does not exist")
        theirs = _layer(target)
        name_mine, name_theirs = LAYERS[mine][0], LAYERS[theirs][0]
        assert theirs <= mine, (f"{MODULES[module].relative_to(SRC)}:{line}: layer {name_mine} imports {target} "
                                f"from the higher layer {name_theirs}")
        assert (name_mine, name_theirs) not in FORBIDDEN, (
            f"{MODULES[module].relative_to(SRC)}:{line}: layer {name_mine} must not import {name_theirs} ({target})")


def test_the_import_graph_has_no_cycle():
    graph = {m: sorted({t for t, _ in _imports(m) if t in MODULES and t != m}) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_the_checker_sees_upward_and_function_level_imports(tmp_path):
    # The checker itself must fail on what it is meant to catch.
    code = "def f():\n    from vop.train.trainer import Trainer\n"
    tree_imports = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.ImportFrom)]
    assert tree_imports and tree_imports[0].module == "vop.train.trainer"
    assert _layer("vop.train.trainer") > _layer("vop.backbone.load") > _layer("vop.runtime")
    assert _layer("vop") == len(LAYERS) - 1 and _layer("vop.cli") == len(LAYERS) - 1


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(m for m in sys.modules if m.startswith('vop'))))"],
                         capture_output=True, text=True, check=True, cwd=str(SRC.parent))
    import json

    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_search_server_and_eval_do_not_import_the_trainer():
    served = _loaded_after("import vop.search.app, vop.search.service, vop.search.encode, vop.search.method")
    assert not any(m.startswith("vop.train") for m in served), sorted(served)
    evaluated = _loaded_after("import vop.checkpoint, vop.eval.evaluate, vop.data.datasets")
    assert not any(m.startswith("vop.train") for m in evaluated), sorted(evaluated)


def test_vop_eval_from_the_command_line_does_not_import_the_trainer():
    loaded = _loaded_after(
        "from vop.cli import main\n"
        "main(['eval', '--checkpoint', 'zero-shot', '--backbone', 'tiny', '--set', "
        "'data.synthetic={train_pairs: 2, val_pairs: 2, test_pairs: 2}', '--set', 'data.num_frames=4', "
        "'--device', 'cpu', '--quiet', '--json'])")
    assert "vop.eval.evaluate" in loaded and not any(m.startswith("vop.train") for m in loaded), sorted(loaded)
