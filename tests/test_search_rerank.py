"""Two-stage search for text-conditioned methods (X-Pool, issue 15): the index keeps each
video's per-frame features (frames.npy, float16) aligned with its records through every
kind of write, validates them when read, and two_stage_search re-ranks the first stage's
candidates with the text-conditioned scorer."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_video import write_video
from test_search_support import built, clip_frames, encode, make_collection, save_prompts  # noqa: F401
from vop.search.store import IndexFormatError, read_index, write_index

VIDEOS = 10
QUERIES = ["a red square", "a blue square moving left", "green background", "a small yellow box", "something dark"]
PRIOR_INDEX = Path(__file__).resolve().parent / "fixtures" / "prior_format" / "index"


@pytest.fixture(scope="module")
def xpool(tmp_path_factory):
    """An xpool checkpoint on the random ``tiny`` backbone (every tensor perturbed, the
    pooling head's identity projections too, so pooling depends on the caption), a
    collection and its index."""
    base = tmp_path_factory.mktemp("rerank")
    ckpt = save_prompts(base / "xpool", seed=3, method="xpool")
    videos = make_collection(base / "videos", count=VIDEOS)
    report = encode(videos, base / "index", checkpoint=str(ckpt), backbone=None)
    return videos, base / "index", ckpt, report


def _model(ckpt):
    from vop.search.method import load_method

    return load_method(str(ckpt))[0]


def _decoded(videos: Path, stored, num_frames: int = 12) -> torch.Tensor:
    """The normalised frames the encoder saw, ``[N, F, 3, R, R]`` in the index's row order."""
    from vop.data import sample_frames
    from vop.data.transforms import normalize, resize_center_crop

    clips = [resize_center_crop(sample_frames(videos / r.path, num_frames, mode="middle")[0], 32)
             for r in stored.records]
    return normalize(torch.stack(clips))


def _copy_index(index: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(index, out)
    return out


# -- the index format ----------------------------------------------------------------------
def test_text_conditioned_index_stores_the_frame_features_as_float16(xpool):
    videos, index, ckpt, report = xpool
    stored = read_index(index)
    meta = json.loads((index / "index.json").read_text())
    assert report.total == VIDEOS and meta["frame_features"] == {"frames": 12, "dtype": "float16"}
    assert sorted(p.name for p in index.iterdir()) == ["embeddings.npy", "failed.json", "frames.npy", "index.json",
                                                       "videos.jsonl"]
    assert stored.frame_features.dtype == np.float16 and stored.frame_features.shape == (VIDEOS, 12, 64)
    model = _model(ckpt)
    x = _decoded(videos, stored)
    with torch.inference_mode():
        want_frames, want_emb = model.frame_features(x).numpy(), model.encode_video(x).numpy()
    np.testing.assert_allclose(stored.embeddings, want_emb, atol=1e-5)  # the embedding: the mean pool, in fp32
    got = stored.frame_features.astype(np.float32)
    np.testing.assert_allclose(got, want_frames, rtol=2 ** -10, atol=1e-3)  # float16 rounding, nothing more
    assert np.abs(got - want_frames).max() > 0  # really rounded to float16


def test_other_encoders_write_what_they_always_wrote_and_old_indexes_read(tmp_path):
    videos = make_collection(tmp_path / "videos", count=2, with_bad=False)
    encode(videos, tmp_path / "index")
    index = tmp_path / "index"
    assert sorted(p.name for p in index.iterdir()) == ["embeddings.npy", "failed.json", "index.json", "videos.jsonl"]
    assert "frame_features" not in json.loads((index / "index.json").read_text())
    assert read_index(index).frame_features is None
    prior = read_index(PRIOR_INDEX)  # written by the code before the redesign
    assert prior.frame_features is None and len(prior) == 3


@pytest.mark.parametrize("damage, message", [
    ("missing", "frames.npy is missing but .*declares per-frame features"),
    ("float32", r"holds float32 \(10, 12, 64\) but the index declares float16 \(10, 12, 64\)"),
    ("rows", r"holds float16 \(9, 12, 64\) but the index declares float16 \(10, 12, 64\)"),
    ("nan", "non-finite values"),
    ("pickle", "not a readable .npy array"),
    ("undeclared", "frames.npy is present but .*does not declare 'frame_features'"),
    ("spec", "'frame_features' must be"),
])
def test_damaged_frame_features_are_one_clear_error(xpool, tmp_path, damage, message):
    index = _copy_index(xpool[1], tmp_path)
    frames_file, meta_file = index / "frames.npy", index / "index.json"
    frames = np.load(frames_file)
    meta = json.loads(meta_file.read_text())
    if damage == "missing":
        frames_file.unlink()
    elif damage == "float32":
        np.save(frames_file, frames.astype(np.float32))
    elif damage == "rows":
        np.save(frames_file, frames[1:])
    elif damage == "nan":
        frames[3, 2, 1] = np.nan
        np.save(frames_file, frames)
    elif damage == "pickle":
        np.save(frames_file, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif damage == "undeclared":
        meta.pop("frame_features")
    elif damage == "spec":
        meta["frame_features"] = {"frames": 0, "dtype": "float16"}
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match=message) as err:
        read_index(index)
    assert "re-run vop encode" in str(err.value) and "\n" not in str(err.value)


def test_write_index_refuses_misaligned_or_overflowing_frame_features(tmp_path):
    from vop.search.records import VideoRecord

    records = [VideoRecord(f"{i:016x}", f"v{i}.mp4", 1, 1, "h", None, 8, 8, 4) for i in range(3)]
    emb = np.eye(3, 4, dtype=np.float32)
    common = dict(root=tmp_path, encoder={"checkpoint": "x", "method": {}, "backbone": {}}, num_frames=4,
                  resolution=8, records=records, embeddings=emb, failed=[])
    with pytest.raises(ValueError, match=r"frame features of shape \(2, 4, 4\); expected \(3, F >= 1, 4\)"):
        write_index(tmp_path / "a", frame_features=np.zeros((2, 4, 4)), **common)
    with pytest.raises(ValueError, match=r"expected \(3, F >= 1, 4\)"):
        write_index(tmp_path / "b", frame_features=np.zeros((3, 4, 5)), **common)
    with pytest.raises(ValueError, match="non-finite .*float16 holds magnitudes up to 65504"):
        write_index(tmp_path / "c", frame_features=np.full((3, 4, 4), 1e6), **common)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_rebuild_accepts_an_index_with_frame_features_but_not_foreign_files(xpool, tmp_path):
    videos, index, ckpt, _ = xpool
    out = _copy_index(index, tmp_path)
    report = encode(videos, out, checkpoint=str(ckpt), backbone=None, rebuild=True)
    assert report.encoded == VIDEOS and read_index(out).frame_features.shape == (VIDEOS, 12, 64)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(IndexFormatError, match="'notes.txt'"):
        encode(videos, out, checkpoint=str(ckpt), backbone=None, rebuild=True)


# -- alignment through every kind of write -------------------------------------------------
def _rows_by_path(stored) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {r.path: (stored.embeddings[i], stored.frame_features[i]) for i, r in enumerate(stored.records)}


def test_incremental_encode_keeps_frame_features_with_their_videos(xpool, tmp_path):
    src_videos, _, ckpt, _ = xpool
    videos, index = tmp_path / "videos", tmp_path / "index"
    shutil.copytree(src_videos, videos, copy_function=shutil.copy2)
    encode(videos, index, checkpoint=str(ckpt), backbone=None)
    before = _rows_by_path(read_index(index))

    write_video(videos / "a-new.mp4", clip_frames(40))  # added (sorts first: every row moves)
    write_video(videos / "clip0.mp4", clip_frames(41))  # changed
    os.utime(videos / "clip2.mp4", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched only
    (videos / "sub" / "clip1.mp4").unlink()  # removed
    report = encode(videos, index, checkpoint=str(ckpt), backbone=None)
    assert (report.encoded, report.removed, report.reused) == (2, 1, VIDEOS - 2)

    after = read_index(index)
    assert after.frame_features.shape == (VIDEOS, 12, 64)
    rows = _rows_by_path(after)
    fresh = _rows_by_path(read_index(encode(videos, tmp_path / "fresh", checkpoint=str(ckpt), backbone=None).index))
    assert rows.keys() == fresh.keys() and "sub/clip1.mp4" not in rows
    for path, (emb, frames) in rows.items():
        np.testing.assert_allclose(emb, fresh[path][0], atol=1e-5)
        np.testing.assert_allclose(frames.astype(np.float32), fresh[path][1].astype(np.float32), atol=1e-2)
        if path in before and path != "clip0.mp4":  # kept rows are copied, not recomputed
            np.testing.assert_array_equal(frames, before[path][1])
    assert not np.allclose(rows["clip0.mp4"][1].astype(np.float32), before["clip0.mp4"][1].astype(np.float32))


def test_every_piece_commit_is_an_aligned_index(xpool, tmp_path, monkeypatch):
    import vop.search.encode as enc

    videos, _, ckpt, _ = xpool
    commits = []
    real_write = enc.write_index

    def recording_write(path, **kw):
        stored = real_write(path, **kw)
        again = read_index(path)  # what a reader finds at this instant
        commits.append({r.path: again.frame_features[i].copy() for i, r in enumerate(again.records)})
        return stored

    monkeypatch.setattr(enc, "write_index", recording_write)
    encode(videos, tmp_path / "index", checkpoint=str(ckpt), backbone=None, piece_videos=3, batch_size=2)
    final = commits[-1]
    assert len(commits) >= 4 and len(final) == VIDEOS
    assert [len(c) for c in commits] == sorted(len(c) for c in commits) and len(commits[0]) < VIDEOS
    for commit in commits:
        for path, frames in commit.items():
            np.testing.assert_array_equal(frames, final[path])


def test_an_index_without_frame_features_is_reencoded_whole(xpool, tmp_path):
    """An X-Pool index written before the per-frame features (none to re-rank with): the
    next incremental encode re-encodes every video rather than keep rows it cannot use."""
    videos, index, ckpt, _ = xpool
    old = read_index(index)
    out = tmp_path / "old-index"
    write_index(out, root=videos, encoder=old.encoder, num_frames=12, resolution=32, records=old.records,
                embeddings=old.embeddings, failed=old.failed)
    assert read_index(out).frame_features is None
    report = encode(videos, out, checkpoint=str(ckpt), backbone=None)
    assert (report.encoded, report.reused) == (VIDEOS, 0)
    np.testing.assert_array_equal(read_index(out).frame_features, old.frame_features)


def _rank_main(rank: int, world: int, port: int, videos: str, out: str, ckpt: str) -> None:
    from vop.runtime import init_distributed
    from vop.search.encode import EncodeConfig, encode_collection
    from vop.search.method import load_method

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    dist = init_distributed("cpu")
    try:
        model, identity = load_method(ckpt)
        encode_collection(videos, out, model, identity, EncodeConfig(batch_size=2, progress=False), dist=dist)
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_encoding_merges_the_frame_features_in_record_order(xpool, tmp_path):
    import socket

    import torch.multiprocessing as mp

    videos, index, ckpt, _ = xpool
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "dist-index"
    context = mp.start_processes(_rank_main, args=(2, port, str(videos), str(out), str(ckpt)), nprocs=2,
                                 join=False, start_method="fork")
    deadline = time.monotonic() + 90
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in context.processes:
                proc.kill()
            pytest.fail("two-process encoding did not finish in 90 s")
    single, merged = read_index(index), read_index(out)
    assert [r.path for r in merged.records] == [r.path for r in single.records]
    np.testing.assert_allclose(merged.embeddings, single.embeddings, atol=1e-5)
    np.testing.assert_allclose(merged.frame_features.astype(np.float32), single.frame_features.astype(np.float32),
                               atol=1e-2)
    assert not (tmp_path / ".dist-index.shards").exists()


# -- two-stage search ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def brute(xpool):
    """The model, the index, and ``model.score`` of every query against every decoded video."""
    videos, index, ckpt, _ = xpool
    model, stored = _model(ckpt), read_index(index)
    with torch.inference_mode():
        scores = model.score(model.tokenize(QUERIES), _decoded(videos, stored)).numpy()  # [Q, N]
    return model, stored, scores


def test_recalling_every_video_gives_the_brute_force_ranking(brute):
    from vop.search.rerank import first_stage, two_stage_search

    model, stored, want = brute
    scores, rows = two_stage_search(model, stored, QUERIES, k=VIDEOS, recall_k=VIDEOS)
    np.testing.assert_array_equal(rows, np.argsort(-want, axis=1, kind="stable"))
    np.testing.assert_allclose(scores, np.take_along_axis(want, rows, 1), atol=2e-3)  # float16 frame features
    top5, _ = two_stage_search(model, stored, QUERIES, k=5, recall_k=VIDEOS)
    np.testing.assert_array_equal(top5, scores[:, :5])
    # the pooling matters here: the first stage alone (mean-pooled embeddings) ranks differently
    with torch.inference_mode():
        query = model.encode_text(model.tokenize(QUERIES)).numpy()
    _, first_rows = first_stage(stored, query, VIDEOS)
    assert (first_rows != rows).any(axis=1).sum() >= 3


def test_a_smaller_recall_only_reorders_the_first_stages_candidates(brute):
    from vop.search.rerank import first_stage, two_stage_search

    model, stored, want = brute
    with torch.inference_mode():
        query = model.encode_text(model.tokenize(QUERIES)).numpy()
    _, candidates = first_stage(stored, query, 4)
    scores, rows = two_stage_search(model, stored, QUERIES, k=3, recall_k=4)
    assert rows.shape == (len(QUERIES), 3)
    for q in range(len(QUERIES)):
        assert set(rows[q]) <= set(candidates[q])
        by_score = sorted(candidates[q], key=lambda r: -want[q, r])
        assert list(rows[q]) == by_score[:3]
    reordered = [list(rows[q]) != list(candidates[q][:3]) for q in range(len(QUERIES))]
    outside = [any(r not in candidates[q] for r in np.argsort(-want[q])[:3]) for q in range(len(QUERIES))]
    assert any(reordered) and any(outside)  # the test can tell re-ranking, and recall, from their absence


def test_reranking_holds_at_most_chunk_videos_of_frame_features(brute, monkeypatch):
    from vop.search.rerank import rerank

    model, stored, _ = brute
    ids = model.tokenize(QUERIES)
    candidates = np.tile(np.arange(VIDEOS), (len(QUERIES), 1))
    full_scores, full_rows = rerank(model, stored, ids, candidates, chunk=256)
    seen = []
    real = model.score_features
    monkeypatch.setattr(model, "score_features",
                        lambda text, feats, chunk=256: seen.append((text.shape[0], feats.shape[0], chunk))
                        or real(text, feats, chunk=chunk))
    scores, rows = rerank(model, stored, ids, candidates, chunk=3)
    assert seen and max(s[1] for s in seen) == 3 and {s[0] for s in seen} == {1} and {s[2] for s in seen} == {3}
    np.testing.assert_array_equal(rows, full_rows)
    np.testing.assert_allclose(scores, full_scores, atol=1e-6)
    with torch.inference_mode():
        feats = model.text_features(ids)
    np.testing.assert_array_equal(rerank(model, stored, feats, candidates)[1], full_rows)  # features or ids


def test_missing_candidates_come_last_and_bad_input_is_refused(brute, xpool, tmp_path):
    from vop.search.rerank import NoFrameFeatures, rerank, two_stage_search

    model, stored, want = brute
    ids = model.tokenize(QUERIES[:1])
    scores, rows = rerank(model, stored, ids, np.array([[4, -1, 2, -1]]))
    assert list(rows[0, 2:]) == [-1, -1] and np.isneginf(scores[0, 2:]).all()
    assert list(rows[0, :2]) == sorted([4, 2], key=lambda r: -want[0, r])
    with pytest.raises(ValueError, match=r"candidate rows must lie in 0..9"):
        rerank(model, stored, ids, np.array([[0, 10]]))
    with pytest.raises(ValueError, match=r"candidates must be integer rows \(Q, K\) for the 1 queries"):
        rerank(model, stored, ids, np.array([[0, 1], [2, 3]]))
    with pytest.raises(ValueError, match=r"recall_k \(2\) must be at least k \(3\)"):
        two_stage_search(model, stored, "a red square", k=3, recall_k=2)
    old = tmp_path / "no-frames"
    write_index(old, root=xpool[0], encoder=stored.encoder, num_frames=12, resolution=32, records=stored.records,
                embeddings=stored.embeddings, failed=[])
    with pytest.raises(NoFrameFeatures, match="stores no per-frame features .*re-run vop encode"):
        two_stage_search(model, read_index(old), "a red square", k=3)


def test_faiss_first_stage_and_memory_mapped_index_give_the_same_results(brute, xpool):
    from vop.search import ann
    from vop.search.rerank import two_stage_search

    model, stored, _ = brute
    exact = two_stage_search(model, stored, QUERIES, k=4, recall_k=6)
    via_faiss = two_stage_search(model, stored, QUERIES, k=4, recall_k=6, index=ann.build(stored.embeddings))
    mapped = read_index(xpool[1], mmap=True)
    assert isinstance(mapped.frame_features, np.memmap)
    via_mmap = two_stage_search(model, mapped, QUERIES, k=4, recall_k=6)
    for other in (via_faiss, via_mmap):
        np.testing.assert_array_equal(other[1], exact[1])
        np.testing.assert_allclose(other[0], exact[0], atol=1e-6)


def test_other_methods_get_the_one_stage_search_unchanged(built):
    from vop.search import ann
    from vop.search.method import load_method
    from vop.search.rerank import two_stage_search

    _, index, _ = built
    model, _ = load_method("zero-shot", "tiny")
    stored = read_index(index)
    with torch.inference_mode():
        query = model.encode_text(model.tokenize(QUERIES)).numpy()
    want_scores, want_rows = ann.search(ann.build(stored.embeddings), query, 4)  # what the service does today
    scores, rows = two_stage_search(model, stored, QUERIES, k=4, recall_k=5)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)
    brute_rows = np.argsort(-(query @ stored.embeddings.T), axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(rows, brute_rows)


def test_bf16_compiled_encoding_stores_frame_features_from_the_same_pass(xpool, tmp_path, monkeypatch):
    videos, index, ckpt, _ = xpool
    compiled = []
    real_compile = torch.compile

    def recording_compile(fn, **options):  # Dynamo only (no Inductor build): the wiring is what is tested
        compiled.append(options)
        return real_compile(fn, backend="eager", fullgraph=True, **options)

    monkeypatch.setattr(torch, "compile", recording_compile)
    encode(videos, tmp_path / "bf16", checkpoint=str(ckpt), backbone=None, precision="bf16", compile=True)
    fast, plain = read_index(tmp_path / "bf16"), read_index(index)
    assert compiled == [{"dynamic": False}] and fast.frame_features.dtype == np.float16
    a, b = fast.frame_features.astype(np.float32), plain.frame_features.astype(np.float32)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)  # bf16 really ran, and stayed close
    pooled = a / np.linalg.norm(a, axis=-1, keepdims=True)
    pooled = pooled.mean(1) / np.linalg.norm(pooled.mean(1), axis=-1, keepdims=True)
    np.testing.assert_allclose(fast.embeddings, pooled, atol=2e-2)  # the embedding is their mean pool


def test_cli_encode_writes_the_frame_features_of_an_xpool_checkpoint(xpool, tmp_path, capsys):
    from vop.cli import main

    videos, _, ckpt, _ = xpool
    assert main(["encode", str(videos), "--checkpoint", str(ckpt), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    assert f"{VIDEOS} videos indexed" in capsys.readouterr().out
    assert read_index(tmp_path / "idx").frame_features.shape == (VIDEOS, 12, 64)


def test_the_precision_benchmark_runs_and_reports_agreement():
    import re
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "rerank_precision.py"
    done = subprocess.run([sys.executable, str(script), "--backbone", "tiny", "--pairs", "8", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "8 videos x 12 frames, 8 captions" in done.stdout
    diff = re.search(r"\|score fp16 - fp32\|: max ([0-9.e+-]+), mean ([0-9.e+-]+)", done.stdout)
    overlap = re.search(r"mean top-10 overlap: ([0-9.]+)", done.stdout)
    assert diff and overlap and 0 < float(diff[1]) < 1e-2 and float(overlap[1]) == 1.0  # 8 videos: all in the top 10


def test_vop_search_and_the_service_rerank_an_xpool_index(brute, xpool, capsys):
    """Through the CLI (and so the service): the ranking of the text-conditioned scores, not
    of the mean-pooled first stage."""
    from vop.cli import main

    model, stored, want = brute
    _, index, ckpt, _ = xpool
    for q, query in enumerate(QUERIES[:3]):
        assert main(["search", str(index), query, "-k", str(VIDEOS), "--recall-k", str(VIDEOS), "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        paths = [stored.records[r].path for r in np.argsort(-want[q], kind="stable")]
        assert [h["path"] for h in hits] == paths
