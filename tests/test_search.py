"""vop.search without HTTP: records, the on-disk index, incremental and distributed
encoding, encoder identity checks, the service's backbone sharing, FAISS search."""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest

from test_search_support import NUM_VIDEOS, built, clip_frames, copy_built, encode, save_prompts  # noqa: F401
from helpers_video import write_video
from vop.search.records import HASH_BLOCK, content_hash, video_id, walk_videos
from vop.search.store import read_index


# -- records ------------------------------------------------------------------------------
def test_walk_finds_videos_recursively_and_skips_hidden(tmp_path):
    for rel in ("a.mp4", "b.WEBM", "d/c.mkv", "d/e.avi", "f.mov", "g.txt", ".hidden.mp4", ".idx/x.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [s.path for s in walk_videos(tmp_path)] == ["a.mp4", "b.WEBM", "d/c.mkv", "d/e.avi", "f.mov"]


def test_content_hash_reads_the_ends_of_large_files(tmp_path):
    f = tmp_path / "big.bin"
    data = bytearray(os.urandom(3 * HASH_BLOCK))
    f.write_bytes(data)
    h = content_hash(f)
    data[HASH_BLOCK + 10] ^= 1  # the middle is not hashed (documented)
    f.write_bytes(data)
    assert content_hash(f) == h
    data[-1] ^= 1
    f.write_bytes(data)
    assert content_hash(f) != h
    assert video_id("a/b.mp4") == video_id("a/b.mp4") != video_id("a/c.mp4")


# -- encoding -------------------------------------------------------------------------------
def test_encode_writes_the_documented_format(built):
    videos, index, report = built
    assert (report.total, report.encoded, len(report.failed)) == (NUM_VIDEOS, NUM_VIDEOS, 1)
    assert report.failed[0]["path"] == "broken.mp4"
    stored = read_index(index)
    meta = json.loads((index / "index.json").read_text())
    assert meta["format"] == "vop-search-index" and meta["count"] == NUM_VIDEOS and meta["dim"] == 64
    assert meta["encoder"]["checkpoint"] == "zero-shot" and meta["encoder"]["method"]["method"] == "zero-shot"
    assert set(meta["encoder"]["backbone"]) == {"source", "architecture", "fingerprint"}
    assert meta["num_frames"] == 12 and meta["resolution"] == 32 and meta["root"] == str(videos.resolve())
    assert stored.embeddings.dtype == np.float32 and stored.embeddings.shape == (NUM_VIDEOS, 64)
    np.testing.assert_allclose(np.linalg.norm(stored.embeddings, axis=1), 1.0, atol=1e-5)
    paths = [r.path for r in stored.records]
    assert paths == sorted(paths) and "sub/clip1.mp4" in paths
    rec = stored.records[0]
    assert rec.width == rec.height == 32 and rec.duration == pytest.approx(8 / 30, abs=0.02)
    assert json.loads((index / "failed.json").read_text())[0]["path"] == "broken.mp4"
    assert not list(index.parent.glob(".index.*"))  # no temporary folders left behind


def test_embeddings_match_encoding_the_frames_directly(built):
    import torch

    import vop.backbone
    import vop.methods
    from vop.data import sample_frames
    from vop.data.transforms import normalize, resize_center_crop

    videos, index, _ = built
    stored = read_index(index)
    model = vop.create("zero-shot", vop.backbone.load("tiny")).eval()
    frames, _ = sample_frames(videos / stored.records[0].path, 12)
    with torch.inference_mode():
        want = model.encode_video(normalize(resize_center_crop(frames, 32))[None])[0].numpy()
    np.testing.assert_allclose(stored.embeddings[0], want, atol=1e-5)


def test_bf16_compiled_encoding_agrees_with_fp32_and_compiles_one_shape(built, tmp_path, monkeypatch):
    import torch

    videos, index, _ = built
    shapes, compiled = [], []
    real_compile = torch.compile

    def recording_compile(fn, **options):  # Dynamo only (no Inductor build): the wiring is what is tested
        compiled.append(options)
        traced = real_compile(fn, backend="eager", fullgraph=True, **options)
        return lambda frames: shapes.append(tuple(frames.shape)) or traced(frames)

    monkeypatch.setattr(torch, "compile", recording_compile)
    report = encode(videos, tmp_path / "bf16", precision="bf16", compile=True)  # batch 4: 6 videos -> 4 + 2
    fast, plain = read_index(tmp_path / "bf16"), read_index(index)
    assert report.total == NUM_VIDEOS and [r.path for r in fast.records] == [r.path for r in plain.records]
    assert fast.embeddings.dtype == np.float32
    cos = (fast.embeddings * plain.embeddings).sum(axis=1)  # both L2-normalised
    assert cos.min() > 0.99  # the tiny random backbone; ViT-B/32 measures >= 0.9999 (docs/performance.md)
    assert not np.array_equal(fast.embeddings, plain.embeddings)  # bf16 really ran
    assert compiled == [{"dynamic": False}]
    assert shapes == [(4, 12, 3, 32, 32)] * 2  # the short last batch was padded to the compiled shape


def test_unknown_precision_is_refused():
    from vop.search.encode import EncodeConfig

    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        EncodeConfig(precision="fp16")


def test_reencode_handles_added_changed_touched_and_deleted_files(built, tmp_path):
    videos, index = copy_built(built, tmp_path)
    first = encode(videos, index)
    before = read_index(index)
    rows = {r.path: i for i, r in enumerate(before.records)}

    write_video(videos / "new.mp4", clip_frames(40))  # added
    write_video(videos / "clip0.mp4", clip_frames(41))  # changed content
    os.utime(videos / "clip2.mp4", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched only
    (videos / "sub" / "clip1.mp4").unlink()  # deleted
    report = encode(videos, index)

    after = read_index(index)
    new_rows = {r.path: i for i, r in enumerate(after.records)}
    assert first.encoded == NUM_VIDEOS
    assert (report.encoded, report.removed, report.reused, report.total) == (2, 1, NUM_VIDEOS - 2, NUM_VIDEOS)
    assert "sub/clip1.mp4" not in new_rows and "new.mp4" in new_rows
    assert not np.allclose(after.embeddings[new_rows["clip0.mp4"]], before.embeddings[rows["clip0.mp4"]])
    for path in ("clip2.mp4", "sub/clip3.mp4", "clip4.mp4"):
        np.testing.assert_array_equal(after.embeddings[new_rows[path]], before.embeddings[rows[path]])
    touched = after.records[new_rows["clip2.mp4"]]
    assert touched.mtime_ns == (videos / "clip2.mp4").stat().st_mtime_ns  # recorded, not re-encoded
    assert [f["path"] for f in report.failed] == ["broken.mp4"]  # unchanged failure carried, not retried

    (videos / "broken.mp4").unlink()
    assert encode(videos, index).failed == []


def test_existing_index_of_another_encoder_is_refused_unless_rebuilt(built, tmp_path):
    from vop.search.method import IndexMismatch

    videos, index = copy_built(built, tmp_path)
    encode(videos, index)
    ckpt = save_prompts(tmp_path / "ckpt")
    with pytest.raises(IndexMismatch, match="zero-shot.*ckpt"):
        encode(videos, index, checkpoint=str(ckpt), backbone=None)
    report = encode(videos, index, checkpoint=str(ckpt), backbone=None, rebuild=True)
    assert report.encoded == NUM_VIDEOS and read_index(index).encoder["checkpoint"] == str(ckpt.resolve())


def test_zero_shot_needs_a_backbone():
    from vop.search.method import load_method

    with pytest.raises(ValueError, match="--backbone"):
        load_method("zero-shot")


# -- identity checks and the service --------------------------------------------------------
def test_querying_with_another_checkpoint_is_refused_naming_both(built, tmp_path):
    from vop.search.method import IndexMismatch
    from vop.search.service import SearchService

    _, index, _ = built
    a, b = save_prompts(tmp_path / "prompts-a", seed=1), save_prompts(tmp_path / "prompts-b", seed=2)
    with pytest.raises(IndexMismatch) as err:
        SearchService().add_index(index, checkpoint=str(a))
    assert "'zero-shot'" in str(err.value) and "prompts-a" in str(err.value)

    videos, idx_a = copy_built(built, tmp_path)
    encode(videos, idx_a, checkpoint=str(a), backbone=None)
    with pytest.raises(IndexMismatch, match="prompts-a.*prompts-b.*trained tensors differ"):
        SearchService().add_index(idx_a, checkpoint=str(b))
    (tmp_path / "moved").mkdir()
    moved = a.rename(tmp_path / "moved" / "a")  # the same checkpoint elsewhere is the same encoder
    assert len(SearchService().add_index(idx_a, checkpoint=str(moved))) == NUM_VIDEOS


def test_service_loads_the_backbone_once_for_many_indexes(built, tmp_path):
    from vop.search.service import SearchService

    videos, index, _ = built
    ckpt = save_prompts(tmp_path / "ckpt")
    encode(videos, tmp_path / "prompted", checkpoint=str(ckpt), backbone=None)
    service = SearchService()
    zs = service.add_index(index, name="zs")
    vp = service.add_index(tmp_path / "prompted", name="vop")
    again = service.add_index(index, name="zs2")
    assert service.cache.loads == 1
    assert zs.model.clip is vp.model.clip and again.model is zs.model
    hits_zs = service.search("a red square moves", 3, index="zs")
    hits_vp = service.search("a red square moves", 3, index="vop")
    assert [h.rank for h in hits_zs] == [1, 2, 3] and hits_vp[0].index == "vop"
    assert hits_zs[0].score >= hits_zs[1].score >= hits_zs[2].score
    assert [h.score for h in hits_zs] != [h.score for h in hits_vp]  # the prompts change the text side


def test_backbone_tuning_methods_do_not_touch_the_shared_backbone(built, tmp_path):
    import torch

    from vop.search.service import SearchService

    videos, index, _ = built
    ckpt = tmp_path / "bias"
    save_prompts(ckpt, method="bias")
    service = SearchService()
    zs = service.add_index(index)
    before = {k: v.clone() for k, v in zs.model.clip.state_dict().items()}
    encode(videos, tmp_path / "bias-index", checkpoint=str(ckpt), backbone=None, cache=service.cache)
    biased = service.add_index(tmp_path / "bias-index")
    assert biased.model.clip is not zs.model.clip
    assert all(torch.equal(before[k], v) for k, v in zs.model.clip.state_dict().items())


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_indexes_find_the_exact_neighbours_of_small_sets(kind, tmp_path):
    from vop.search import ann

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:20] + 0.05 * rng.standard_normal((20, 32)).astype(np.float32)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :5]
    config = ann.AnnConfig(kind=kind, ivf_nprobe=64)
    index = ann.load_or_build(x, config, tmp_path, "gen0")
    scores, rows = ann.search(index, q, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, exact)])
    assert recall >= (1.0 if kind == "flat" else 0.9)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert (tmp_path.glob("ann-*.faiss") and kind != "flat") or not list(tmp_path.glob("ann-*"))
    assert ann.search(index, q, 10_000)[1].shape == (20, 500)


def test_png_encoder_round_trips(tmp_path):
    import io

    from PIL import Image

    from vop.search.thumbs import png_bytes

    img = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(img)))), img)


# -- two processes --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, videos: str, out: str) -> None:
    import torch

    from vop.search.encode import EncodeConfig, encode_collection
    from vop.search.method import load_method
    from vop.runtime import init_distributed as init_from_env

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    dist = init_from_env("cpu")
    try:
        model, identity = load_method("zero-shot", "tiny")
        encode_collection(videos, out, model, identity, EncodeConfig(batch_size=2, progress=False), dist=dist)
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_encoding_matches_one_process(built, tmp_path):
    import torch.multiprocessing as mp

    videos, index, _ = built
    out = tmp_path / "dist-index"
    # fork: the children inherit the imported modules (spawn would re-import torch: seconds)
    context = mp.start_processes(_rank_main, args=(2, _free_port(), str(videos), str(out)), nprocs=2, join=False,
                                 start_method="fork")
    deadline = time.monotonic() + 60  # a hung collective must fail the test, not CI
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in context.processes:
                proc.kill()
            pytest.fail("two-process encoding did not finish in 60 s")
    single, merged = read_index(index), read_index(out)
    assert [r.path for r in merged.records] == [r.path for r in single.records]
    assert [f["path"] for f in merged.failed] == ["broken.mp4"]
    np.testing.assert_allclose(merged.embeddings, single.embeddings, atol=1e-5)
    assert not (tmp_path / ".dist-index.shards").exists()


# -- the command line -----------------------------------------------------------------------
def test_cli_encode_search_and_refusals(built, tmp_path, capsys):
    from vop.cli import main

    videos, index = copy_built(built, tmp_path)
    assert main(["encode", str(videos), "--checkpoint", "zero-shot", "--backbone", "tiny", "--out", str(index),
                 "--quiet", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{NUM_VIDEOS} videos indexed ({NUM_VIDEOS} encoded" in out and "unreadable: broken.mp4" in out

    assert main(["search", str(index), "a red square", "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["file"].startswith(str(videos))
    assert main(["search", str(index), "a red square", "-k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4

    ckpt = save_prompts(tmp_path / "other-prompts")
    assert main(["search", str(index), "a dog", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "'zero-shot'" in err and "other-prompts" in err
    assert main(["search", str(index), "   "]) == 2 and "empty" in capsys.readouterr().err
    (tmp_path / "not-an-index").mkdir()
    (tmp_path / "not-an-index" / "keep.txt").write_text("mine")
    assert main(["encode", str(videos), "--checkpoint", "zero-shot", "--backbone", "tiny", "--out",
                 str(tmp_path / "not-an-index"), "--quiet"]) == 2
    assert (tmp_path / "not-an-index" / "keep.txt").read_text() == "mine"


def test_thumbnails_are_cached_and_survive_a_reencode(built, tmp_path):
    from vop.search.service import SearchService

    videos, index = copy_built(built, tmp_path)
    encode(videos, index)
    service = SearchService()
    loaded = service.add_index(index)
    vid = loaded.stored.records[0].id
    data, media = service.thumbnail(vid)
    assert media in ("image/jpeg", "image/png") and len(data) > 100
    cached = sorted(p.name for p in (index / "thumbs").iterdir())
    assert cached and cached[0].startswith(vid)
    write_video(videos / "another.mp4", clip_frames(50))
    encode(videos, index)
    assert sorted(p.name for p in (index / "thumbs").iterdir()) == cached


def test_demo_writes_real_videos_and_prefers_trained_prompts(tmp_path):
    from vop.search.demo import prepare_demo
    from vop.search.records import walk_videos

    setup = prepare_demo(tmp_path, count=4, progress=False)
    assert setup.checkpoint == "zero-shot" and "vop demo" in setup.notes[0]
    assert len(list(walk_videos(setup.videos))) == 4 and setup.examples
    assert read_index(setup.index).meta["count"] == 4

    save_prompts(tmp_path / "prompts")  # what `vop demo` leaves behind
    setup = prepare_demo(tmp_path, count=4, progress=False)
    assert setup.checkpoint == str(tmp_path / "prompts") and setup.index.name == "index-prompts"
    assert read_index(setup.index).encoder["method"]["method"] == "vop"
