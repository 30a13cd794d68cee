"""Every file the search layer reads is validated at the boundary: a damaged index gives one
clear line (exit 2 from the CLI), never a traceback; approximate-index caches that cannot be
written or read never stop a search."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from test_search_support import NUM_VIDEOS, built  # noqa: F401
from vop.search.store import IndexFormatError, read_index


def _edit_json(name):
    def edit(index, change):
        data = json.loads((index / name).read_text())
        (index / name).write_text(json.dumps(change(data)))
    return edit


def _meta(change):
    return lambda index: _edit_json("index.json")(index, change)


def _drop(key):
    return _meta(lambda m: {k: v for k, v in m.items() if k != key})


def _first_record(change):
    def edit(index):
        lines = (index / "videos.jsonl").read_text().splitlines()
        (index / "videos.jsonl").write_text("\n".join([change(lines[0]), *lines[1:]]) + "\n")
    return edit


def _embeddings(array):
    return lambda index: np.save(index / "embeddings.npy", array)


CORRUPTIONS = {
    "index.json is a list": (_meta(lambda m: [m]), "not a vop search index (a JSON list)"),
    "index.json lacks encoder": (_drop("encoder"), "'encoder' must be a JSON dict"),
    "index.json root not a string": (_meta(lambda m: {**m, "root": 5}), "'root' must be a JSON str"),
    "index.json root relative": (_meta(lambda m: {**m, "root": "videos"}), "absolute path"),
    "index.json truncated": (lambda i: (i / "index.json").write_bytes((i / "index.json").read_bytes()[:20]),
                             "not valid JSON"),
    "index.json count wrong": (_meta(lambda m: {**m, "count": 99}), "says 99"),
    "encoder lacks backbone": (_meta(lambda m: {**m, "encoder": {"checkpoint": "zero-shot"}}), "'encoder' lacks"),
    "record without hash": (_first_record(lambda line: json.dumps(
        {k: v for k, v in json.loads(line).items() if k != "hash"})), "'hash' is missing"),
    "record size is text": (_first_record(lambda line: json.dumps({**json.loads(line), "size": "12"})), "'size'"),
    "record is a list": (_first_record(lambda line: "[1, 2]"), "must be a JSON object"),
    "record not JSON": (_first_record(lambda line: line[:10]), "not valid JSON"),
    "embeddings empty file": (lambda i: (i / "embeddings.npy").write_bytes(b""), "not a readable .npy"),
    "embeddings truncated": (lambda i: (i / "embeddings.npy").write_bytes((i / "embeddings.npy").read_bytes()[:200]),
                             "embeddings.npy"),
    "embeddings empty array": (_embeddings(np.zeros((0, 64), np.float32)), "lists 6 videos"),
    "embeddings wrong shape": (_embeddings(np.zeros((NUM_VIDEOS, 63), np.float32)), "dimension 64"),
    "embeddings float64": (_embeddings(np.zeros((NUM_VIDEOS, 64))), "float64"),
    "embeddings NaN": (_embeddings(np.full((NUM_VIDEOS, 64), np.nan, np.float32)), "non-finite"),
    "embeddings pickled object": (_embeddings(np.array([{"a": 1}], dtype=object)), "not a readable .npy"),
    "failed.json a dict": (lambda i: (i / "failed.json").write_text("{}"), "failed.json"),
}


@pytest.fixture
def damaged(built, tmp_path):
    def make(name):
        index = tmp_path / "index"
        shutil.copytree(built[1], index)
        CORRUPTIONS[name][0](index)
        return index
    return make


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_damaged_index_is_one_clear_error(damaged, name, capsys):
    from vop.cli import main

    index = damaged(name)
    before = {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()}
    with pytest.raises(IndexFormatError, match=CORRUPTIONS[name][1].replace("(", r"\(").replace(")", r"\)")):
        read_index(index)
    assert main(["search", str(index), "a red square"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert str(index) in captured.err
    assert {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()} == before  # nothing "repaired"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
@pytest.mark.parametrize("failure", ["Read-only file system", "No space left on device"])
def test_approximate_search_on_an_unwritable_index_folder_still_answers(built, tmp_path, monkeypatch, capsys, kind,
                                                                        failure):
    import faiss

    from vop.cli import main

    index = tmp_path / "index"
    shutil.copytree(built[1], index)

    def cannot_write(idx, path):
        raise RuntimeError(f"Error in faiss::FileIOWriter: could not open {path} for writing: {failure}")

    monkeypatch.setattr(faiss, "write_index", cannot_write)
    with pytest.warns(RuntimeWarning, match=f"could not cache the {kind} index .*{failure}"):
        assert main(["search", str(index), "a red square", "--ann", kind, "-k", "2"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 3 and "Traceback" not in captured.err
    assert not [p.name for p in index.iterdir() if "ann" in p.name]  # no half-written cache left


def test_a_damaged_approximate_index_cache_is_rebuilt(built, tmp_path, capsys):
    from vop.cli import main

    index = tmp_path / "index"
    shutil.copytree(built[1], index)
    assert main(["search", str(index), "a red square", "--ann", "hnsw", "-k", "2"]) == 0
    [cache] = index.glob("ann-hnsw-*.faiss")
    want = capsys.readouterr().out
    cache.write_bytes(cache.read_bytes()[:50])
    assert main(["search", str(index), "a red square", "--ann", "hnsw", "-k", "2"]) == 0
    assert capsys.readouterr().out == want
    assert cache.stat().st_size > 50
