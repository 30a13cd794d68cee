"""Nothing lost: the index write protocol survives a kill or a failure at every step, a
rebuild never deletes a user's folder, and an interrupted encode keeps its committed pieces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from test_search_support import NUM_VIDEOS, built, copy_built, encode, make_collection  # noqa: F401
from helpers_faults import fail_at_step, kill_before_step, no_exchange, patch_steps, record_steps
from vop import atomic
from vop.search.records import VideoRecord
from vop.search.store import IndexFormatError, read_index, write_index

ENCODER = {"checkpoint": "zero-shot", "method": {"method": "zero-shot"}, "backbone": {"source": "tiny"}}


def _records(n: int, tag: str) -> list[VideoRecord]:
    return [VideoRecord(f"{i:016x}", f"{tag}{i}.mp4", 10, 20, "h" * 64, 1.0, 32, 32, 12) for i in range(n)]


def _write(path: Path, n: int, tag: str, seed: int):
    emb = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    write_index(path, root=path.parent, encoder=ENCODER, num_frames=12, resolution=32, records=_records(n, tag),
                embeddings=emb, failed=[])
    return emb


# Every call that changes the file system (or makes it durable) during a write is a step.
_STEPS = [("os", "fsync"), ("os", "rename"), ("os", "replace"), ("os", "mkdir"), ("shutil", "rmtree"),
          ("atomic", "_exchange")]


def _count_steps(tmp_path, monkeypatch, exchange: bool) -> list[str]:
    path = tmp_path / "count" / "index"
    path.parent.mkdir()
    _write(path, 3, "old", 0)
    if not exchange:
        no_exchange(monkeypatch)
    return record_steps(monkeypatch, lambda: _write(path, 4, "new", 1), steps=_STEPS)


def _state(path: Path, old: np.ndarray, new: np.ndarray) -> str:
    stored = read_index(path)
    if stored.embeddings.shape == old.shape and np.array_equal(stored.embeddings, old):
        assert [r.path for r in stored.records] == [f"old{i}.mp4" for i in range(len(old))]
        return "old"
    assert np.array_equal(stored.embeddings, new), "neither the previous nor the new index"
    assert [r.path for r in stored.records] == [f"new{i}.mp4" for i in range(len(new))]
    return "new"


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_kill_at_every_step_of_the_index_write_leaves_the_old_or_the_new_index(tmp_path, monkeypatch, exchange):
    steps = _count_steps(tmp_path, monkeypatch, exchange)
    assert "os.fsync" in steps and ("atomic._exchange" in steps)
    seen_states = set()
    for k in range(len(steps) + 1):
        path = tmp_path / f"kill{k}" / "index"
        path.parent.mkdir()
        old = _write(path, 3, "old", 0)
        new = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
        status = kill_before_step(k, lambda: _write(path, 4, "new", 1),
                                  prepare=None if exchange else no_exchange, steps=_STEPS)
        assert status == (9 if k < len(steps) else 0)
        seen_states.add(_state(path, old, new))  # a reader recovers the leftovers if needed
        _write(path, 2, "next", 2)  # the next write cleans up and succeeds
        assert read_index(path).embeddings.shape == (2, 8)
        assert atomic.leftovers(path) == []
    assert seen_states == {"old", "new"}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_failure_at_every_step_of_the_index_write_leaves_the_old_or_the_new_index(tmp_path, monkeypatch, exchange):
    steps = _count_steps(tmp_path, monkeypatch, exchange)
    for k in range(len(steps)):
        path = tmp_path / f"fail{k}" / "index"
        path.parent.mkdir()
        old = _write(path, 3, "old", 0)
        new = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
        with monkeypatch.context() as m:
            if not exchange:
                no_exchange(m)
            patch_steps(m, fail_at_step(k, 28), steps=_STEPS)
            try:
                _write(path, 4, "new", 1)
            except OSError as exc:
                assert "injected" in str(exc)
        _state(path, old, new)
        _write(path, 2, "next", 2)
        assert atomic.leftovers(path) == []


def test_recovery_picks_the_complete_leftover_not_the_name(tmp_path):
    path = tmp_path / "index"
    _write(path, 3, "old", 0)
    # A crash of the two-rename fallback between its renames: the index moved aside, the new
    # one complete under its temporary name, plus a half-written leftover with a "later" name.
    os.rename(path, tmp_path / ".index.old-0000")
    (tmp_path / ".index.tmp-ffff").mkdir()
    (tmp_path / ".index.tmp-ffff" / "embeddings.npy").write_bytes(b"half")
    assert [r.path for r in read_index(path).records] == ["old0.mp4", "old1.mp4", "old2.mp4"]
    assert atomic.leftovers(path) == []


def test_rebuild_never_replaces_a_folder_that_is_not_a_vop_index(built, tmp_path, capsys):
    from vop.cli import main

    videos, _ = copy_built(built, tmp_path)
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.json").write_text('{"name": "my web project"}')
    (web / "app.js").write_text("keep me")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.json").write_text('{"num_frames": 12, "size": 32, "videos": {}, "failed": {}}')
    for folder in (web, cache):
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert main(["encode", str(videos), "--checkpoint", "zero-shot", "--backbone", "tiny", "--out", str(folder),
                     "--quiet", "--rebuild"]) == 2
        err = capsys.readouterr().err
        assert "not a vop search index" in err and "Traceback" not in err
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_an_index_folder_holding_user_files_is_not_replaced(built, tmp_path):
    videos, index = copy_built(built, tmp_path)
    encode(videos, index)
    (index / "notes.txt").write_text("mine")
    with pytest.raises(IndexFormatError, match="notes.txt"):
        encode(videos, index, rebuild=True)
    assert (index / "notes.txt").read_text() == "mine" and len(read_index(index)) == NUM_VIDEOS


_SLOW_ENCODE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import vop.search.encode as enc
    from test_search_support import encode
    real = enc._load_one
    def slow(*args):
        time.sleep(0.4)
        return real(*args)
    enc._load_one = slow
    encode(__import__("pathlib").Path({videos!r}), __import__("pathlib").Path({index!r}), piece_videos=2, workers=1,
           batch_size=2)
""")


def test_a_killed_encode_keeps_its_committed_pieces(tmp_path):
    videos = make_collection(tmp_path / "videos", count=8, with_bad=False)
    index = tmp_path / "index"
    script = _SLOW_ENCODE.format(tests=str(Path(__file__).parent), videos=str(videos), index=str(index))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        committed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                committed = json.loads((index / "index.json").read_text())["count"]
            except (OSError, ValueError, KeyError):
                committed = 0
            if committed >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the encode finished before it could be killed; slow it down"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = read_index(index)  # what the kill left: a valid index of the committed pieces
    assert 2 <= len(kept) < 8
    report = encode(videos, index)
    assert report.reused == len(kept) and report.encoded == 8 - len(kept) and report.total == 8
    full = encode(videos, tmp_path / "fresh")
    np.testing.assert_allclose(read_index(index).embeddings, read_index(tmp_path / "fresh").embeddings, atol=1e-5)
    assert full.total == 8


def test_non_finite_embeddings_are_refused_and_nothing_is_written(built, tmp_path):
    import torch

    from vop.search.encode import EncodeConfig, NonFiniteEmbeddings, encode_collection
    from vop.search.method import load_method

    videos, index = copy_built(built, tmp_path)
    model, identity = load_method("zero-shot", "tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # a damaged checkpoint
    with pytest.raises(NonFiniteEmbeddings, match="non-finite"):
        encode_collection(videos, index, model, identity, EncodeConfig(progress=False))
    assert not index.exists() and atomic.leftovers(index) == []


def test_encode_pieces_grow_with_the_index(tmp_path, monkeypatch):
    """Each commit rewrites the whole index: pieces of at least half the committed videos
    keep the rows written by a long first encode linear in its size, not quadratic."""
    import vop.search.encode as enc

    assert [enc.piece_size(1000, c) for c in (0, 1000, 2000, 3000, 4500)] == [1000, 1000, 1000, 1500, 2250]
    videos = make_collection(tmp_path / "videos", count=12, with_bad=False)
    sizes = []
    real_write = enc.write_index

    def recording_write(path, **kw):
        sizes.append(len(kw["records"]))
        return real_write(path, **kw)

    monkeypatch.setattr(enc, "write_index", recording_write)
    encode(videos, tmp_path / "index", piece_videos=1, piece_seconds=1e9, workers=1, batch_size=2)
    assert sizes == [1, 2, 3, 4, 6, 9, 12]  # pieces 1, 1, 1, 1, 2, 3, then the rest; fixed pieces: 12 commits
    assert len(read_index(tmp_path / "index")) == 12
