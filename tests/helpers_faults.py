"""Fault injection for the write-protocol tests: every call that changes the file system
(or makes it durable) is a *step*; a test counts the steps of a write, then for each k
kills a forked writer just before step k (``kill_before_step``) or makes step k fail
(``fail_at_step``), and checks that the previous or the new state is intact."""

from __future__ import annotations

import errno
import os
import shutil
from typing import Callable, Iterable

from vop import atomic

# (module, function) pairs patched as steps.
STEPS = (("os", "fsync"), ("os", "rename"), ("os", "replace"), ("os", "mkdir"), ("os", "open"), ("os", "write"),
         ("os", "unlink"), ("shutil", "rmtree"), ("shutil", "copy2"), ("atomic", "_exchange"))
_MODULES = {"os": os, "shutil": shutil, "atomic": atomic}


def patch_steps(monkeypatch, on_step: Callable[[str], None], steps: Iterable[tuple[str, str]] = STEPS,
                only: Callable[[str, tuple], bool] | None = None) -> None:
    """Call ``on_step("module.function")`` before every step (those ``only(name, args)``
    accepts, when given)."""
    for mod, name in steps:
        real = getattr(_MODULES[mod], name)

        def hooked(*args, _real=real, _name=f"{mod}.{name}", **kwargs):
            if only is None or only(_name, args):
                on_step(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(_MODULES[mod], name, hooked)


def no_exchange(monkeypatch) -> None:
    """Force the two-rename fallback of vop.atomic (no renameat2 RENAME_EXCHANGE)."""
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)


def record_steps(monkeypatch, write: Callable[[], object], **patch) -> list[str]:
    """The steps ``write()`` takes, in order."""
    seen: list[str] = []
    with monkeypatch.context() as m:
        patch_steps(m, seen.append, **patch)
        write()
    return seen


def kill_before_step(k: int, write: Callable[[], object], prepare: Callable[[object], None] | None = None,
                     **patch) -> int:
    """Run ``write()`` in a forked child that dies (``os._exit``: no clean-up, no exception
    handlers) just before its step ``k``; returns the child's exit status (9 when killed,
    0 when the write had fewer steps). ``prepare(monkeypatch)`` runs in the child first."""
    import pytest

    pid = os.fork()
    if pid == 0:
        try:
            calls = [0]

            def step(name):
                if calls[0] == k:
                    os._exit(9)
                calls[0] += 1

            mp = pytest.MonkeyPatch()
            if prepare is not None:
                prepare(mp)
            patch_steps(mp, step, **patch)
            write()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status)


def fail_at_step(k: int, code: int = errno.EIO) -> Callable[[str], None]:
    """An ``on_step`` that raises ``OSError(code)`` at step ``k`` (0-based)."""
    calls = [0]

    def step(name):
        calls[0] += 1
        if calls[0] == k + 1:
            raise OSError(code, f"injected failure at {name}")

    return step
