"""Crash-safe writes: a file or a whole folder is replaced so that, at every instant, its
path holds either the complete previous version or the complete new one.

A bottom-layer utility (imports nothing from ``vop``). The protocols:

* :func:`write_bytes` / :func:`write_text` (one file): write ``.NAME.tmp-TOKEN`` beside
  the target, ``fsync`` it, ``os.replace`` it over the target (atomic on POSIX), then
  ``fsync`` the folder so the rename itself survives a power cut.
* :func:`replace_dir` (a folder built beside its target): everything in the new folder
  is ``fsync``-ed, then the two folders are swapped in one step with Linux's
  ``renameat2(RENAME_EXCHANGE)``; the previous version, now under the temporary name, is
  removed. Where that call is missing (another OS, an old kernel, a file system without
  it) the fallback is two renames, target -> ``.NAME.old-TOKEN`` then new -> target;
  between them the target is missing, and :func:`recover_dir` (run by the next writer,
  and by readers that find the target missing) puts a complete version back.
* :func:`recover_dir` never guesses from names: a leftover counts only if the caller's
  ``is_complete`` accepts it, the newest complete one (by the modification time of its
  contents, then by name) wins, and every other leftover is removed.

Temporary names start with a dot, so folder walks that skip hidden entries ignore them.
Only one writer per target at a time is supported (leftovers of a live writer look like
those of a dead one).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

__all__ = ["fsync_file", "fsync_dir", "fsync_tree", "write_bytes", "write_text", "temp_sibling", "leftovers",
           "replace_dir", "recover_dir"]

_TMP, _OLD = "tmp", "old"
_RENAME_EXCHANGE = 2  # linux/fs.h


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data and metadata to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (creations, renames, removals) to stable storage."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms that cannot open folders (Windows)
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - some file systems refuse fsync on folders
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file and folder under ``path`` (folders after their contents)."""
    for folder, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                fsync_file(full)
        fsync_dir(folder)


def temp_sibling(path: str | os.PathLike, kind: str = _TMP) -> Path:
    """A fresh hidden name beside ``path``: ``.NAME.<kind>-<random hex>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:12]}")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace the file ``path`` with ``data``, atomically and durably."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """:func:`write_bytes` for text."""
    write_bytes(path, text.encode(encoding))


def leftovers(path: str | os.PathLike) -> list[Path]:
    """The temporary siblings of ``path`` that an interrupted write left (sorted by name)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = []
    for kind in (_TMP, _OLD):
        found += path.parent.glob(f".{_glob_escape(path.name)}.{kind}-*")
    return sorted(found)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # pragma: no cover - not glibc >= 2.28
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # the kernel or the file system cannot exchange
    raise OSError(err, f"cannot swap {b} for {a}: {os.strerror(err)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def replace_dir(new: str | os.PathLike, target: str | os.PathLike,
                on_swapped: Callable[[Path, Path], None] | None = None) -> None:
    """Put the folder ``new`` (a :func:`temp_sibling` of ``target``) in place of ``target``.

    ``new`` is fsync-ed first; ``target`` may be missing. ``on_swapped(target, previous)``
    runs after the swap, before the previous version is removed (to carry a cache over,
    say); a failure there leaves the new version in place and the previous one as a
    leftover for :func:`recover_dir`."""
    new, target = Path(new), Path(target)
    fsync_tree(new)
    parent = target.parent
    if not target.exists():
        os.rename(new, target)
        fsync_dir(parent)
        return
    if _exchange(new, target):
        previous = new  # the exchange left the previous version under the temporary name
    else:
        previous = temp_sibling(target, _OLD)
        os.rename(target, previous)
        os.rename(new, target)  # a crash before this line: recover_dir restores a version
    fsync_dir(parent)
    if on_swapped is not None:
        on_swapped(target, previous)
    _remove(previous)
    fsync_dir(parent)


def _age(path: Path) -> int:
    """The newest modification time (ns) among ``path`` and its direct children."""
    times = [path.stat().st_mtime_ns]
    if path.is_dir():
        times += [p.stat().st_mtime_ns for p in path.iterdir() if not p.is_symlink()]
    return max(times)


def recover_dir(target: str | os.PathLike, is_complete: Callable[[Path], bool]) -> Path | None:
    """Clean up after an interrupted :func:`replace_dir`; returns what now stands at ``target``.

    If ``target`` is missing, the newest complete leftover is renamed into its place.
    Every other leftover is removed. Returns ``target`` if it exists afterwards, else None."""
    target = Path(target)
    found = leftovers(target)
    if not target.exists():
        complete = [p for p in found if p.is_dir() and is_complete(p)]
        if complete:
            best = max(complete, key=lambda p: (_age(p), p.name))
            os.rename(best, target)
            found.remove(best)
    for path in found:
        _remove(path)
    if found or target.exists():
        fsync_dir(target.parent)
    return target if target.exists() else None
