"""`vop data check`: fake benchmark layouts in tmp dirs (tiny real videos, missing and broken
ones, a frame cache), checked through the library and the command line; and the real
split files of ../shared/data when they are there."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers_video import index_frames, write_audio_only, write_corrupt_file, write_empty_file, write_video

from vop.cli import main
from vop.data.benchmarks import READERS, get_reader, load_split
from vop.data.cache import build_frame_cache
from vop.data.check import check_benchmark, probe_video, terminal_safe

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real split files not found at {SHARED_DATA} (shared/ beside the repo)"
)
FIXTURE_DIR = {"msrvtt-9k": "msrvtt", "msrvtt-7k": "msrvtt", "didemo": "didemo", "activitynet": "activitynet",
               "lsmdc": "lsmdc", "msvd": "msvd"}


def split_ids(benchmark: str, root: Path, split: str) -> tuple[str, ...]:
    return get_reader(benchmark).annotations(root, split).video_ids


def video_file(benchmark: str, video_id: str, ext: str) -> str:
    """The reader's first-choice file name of a video (LSMDC: inside its movie folder)."""
    return get_reader(benchmark).video_names(video_id)[0] + ext


def lay_out(tmp_path: Path, benchmark: str, *, real_videos: bool = True, skip: tuple[str, ...] = ()) -> Path:
    """A copy of the benchmark's fixture annotations with one file per video under
    ``videos/``: a tiny real video, or an empty file when ``real_videos`` is False."""
    root = tmp_path / FIXTURE_DIR[benchmark]
    shutil.copytree(FIXTURES / FIXTURE_DIR[benchmark], root)
    ids = {v for split in get_reader(benchmark).splits for v in split_ids(benchmark, root, split)}
    for video_id in sorted(ids - set(skip)):
        path = root / "videos" / video_file(benchmark, video_id, ".mp4")
        path.parent.mkdir(parents=True, exist_ok=True)
        if real_videos:
            write_video(path, index_frames(6, 16, 16), fps=6)
        else:
            path.write_bytes(b"")
    return root


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "check", *args])
    out, err = capsys.readouterr()
    return code, out, err


# -- clean layouts ------------------------------------------------------------------------


def test_clean_layout_passes(tmp_path, capsys):
    root = lay_out(tmp_path, "msvd")
    code, out, _ = run_cli(capsys, "msvd", str(root), "--quiet")
    assert code == 0, out
    assert out.rstrip().endswith("OK")
    assert "train_list.txt, captions_msvd.json" in out
    assert "3 videos, 7 captions (2 / 2.3 / 3 per video" in out  # the fixture: 2, 3 and 2 captions
    assert "3 present (0 unreadable), 0 missing" in out


@pytest.mark.parametrize("benchmark", sorted(READERS))
def test_every_reader_clean_without_probing(benchmark, tmp_path):
    root = lay_out(tmp_path, benchmark, real_videos=False)
    report = check_benchmark(benchmark, root, probe="none")
    assert report.ok, report.format()
    reader = get_reader(benchmark)
    assert [s.split for s in report.splits] == list(reader.splits)
    for s in report.splits:
        parsed = reader.annotations(root, s.split)
        assert (s.videos, s.captions, s.present) == (len(parsed.video_ids), len(parsed.captions), len(parsed.video_ids))
        assert s.files and all(Path(f).is_absolute() and Path(f).parent == root for f in s.files)
    # The same empty files fail the default probe: each one, in every split that lists it.
    probed = check_benchmark(benchmark, root)
    assert {p.kind for p in probed.problems} == {"unreadable"}
    assert all(set(s.unreadable.values()) == {"empty file (0 bytes)"} for s in probed.splits)


# -- problems -----------------------------------------------------------------------------


def test_missing_videos_are_named_and_fail(tmp_path, capsys):
    root = lay_out(tmp_path, "msrvtt-9k", real_videos=False, skip=("video8", "video10"))
    code, out, _ = run_cli(capsys, "msrvtt-9k", str(root), "--no-probe")
    assert code == 1
    assert f"msrvtt-9k/test: 1 of 2 videos not found under {root / 'videos'}: video8" in out
    assert "msrvtt-9k/train: 1 of 4 videos not found" in out and "video10" in out
    assert "val" in out and out.rstrip().endswith("see docs/data.md for the expected layout")

    code, out, _ = run_cli(capsys, "msrvtt-9k", str(root), "--no-probe", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    by_split = {s["split"]: s for s in doc["splits"]}
    assert {k: (s["videos"], s["present"], s["missing_count"]) for k, s in by_split.items()} == {
        "train": (4, 3, 1), "train-minus-val": (3, 3, 0), "val": (1, 0, 1), "test": (2, 1, 1)}
    assert by_split["test"]["missing"] == ["video8"]
    assert {(p["kind"], p["split"]) for p in doc["problems"]} == {
        ("missing", "train"), ("missing", "val"), ("missing", "test")}


def test_all_videos_missing_hints_at_the_names_looked_for(tmp_path):
    root = lay_out(tmp_path, "msrvtt-9k", real_videos=False, skip=("video7", "video8"))
    report = check_benchmark("msrvtt-9k", root, splits=["test"], probe="none")
    (problem,) = report.problems
    assert "2 of 2 videos not found" in problem.message and "looked for e.g. video7{.mp4," in problem.message


def test_missing_annotation_file_and_video_folder(tmp_path, capsys):
    root = lay_out(tmp_path, "msvd", real_videos=False)
    (root / "val_list.txt").unlink()
    shutil.rmtree(root / "videos")
    code, out, _ = run_cli(capsys, "msvd", str(root), "--json")
    doc = json.loads(out)
    assert code == 1
    val = next(s for s in doc["splits"] if s["split"] == "val")
    assert "'val_list.txt' not found" in val["error"]
    kinds = {(p["kind"], p["split"]) for p in doc["problems"]}
    assert kinds == {("annotations", "val"), ("video-folder", None)}
    folder = next(p for p in doc["problems"] if p["kind"] == "video-folder")
    assert str(root / "videos") in folder["message"] and "--video-dir" in folder["message"]
    # The splits that parsed still report their annotations.
    test = next(s for s in doc["splits"] if s["split"] == "test")
    assert (test["videos"], test["captions"], test["videos_checked"]) == (2, 6, False)


def test_malformed_annotation_file_names_it(tmp_path):
    root = lay_out(tmp_path, "didemo", real_videos=False)
    (root / "test_data.json").write_text("{not json")
    report = check_benchmark("didemo", root, splits=["test"], probe="none")
    (problem,) = report.problems
    assert problem.kind == "annotations" and str(root / "test_data.json") in problem.message


def test_empty_split_fails(tmp_path):
    root = lay_out(tmp_path, "msvd", real_videos=False)
    (root / "val_list.txt").write_text("\n")
    report = check_benchmark("msvd", root, probe="none")
    assert [(p.kind, p.split) for p in report.problems] == [("empty", "val")]


def test_unreadable_videos_are_named_and_fail(tmp_path, capsys):
    root = lay_out(tmp_path, "msvd")
    videos = root / "videos"
    write_corrupt_file(videos / "-4wsuPCjDBc_5_15.mp4")  # train
    write_audio_only(videos / "eyhzdC936uk_15_27.wav")
    (videos / "eyhzdC936uk_15_27.mp4").unlink()
    (videos / "eyhzdC936uk_15_27.wav").rename(videos / "eyhzdC936uk_15_27.mkv")  # test: no video stream
    code, out, _ = run_cli(capsys, "msvd", str(root), "--json", "--quiet")
    doc = json.loads(out)
    assert code == 1
    by_split = {s["split"]: s for s in doc["splits"]}
    assert list(by_split["train"]["unreadable"]) == ["-4wsuPCjDBc_5_15"]
    assert by_split["test"]["unreadable"] == {"eyhzdC936uk_15_27": "no video stream"}
    assert by_split["val"]["unreadable_count"] == 0 and by_split["train"]["present"] == 3
    code, out, _ = run_cli(capsys, "msvd", str(root), "--decode", "--quiet")
    assert code == 1 and "unreadable: eyhzdC936uk_15_27: no video stream" in out
    assert "-4wsuPCjDBc_5_15 (" in out


def test_probes_on_single_files(tmp_path):
    good = write_video(tmp_path / "good.mp4", index_frames(6, 16, 16), fps=6)
    assert probe_video(good) is None and probe_video(good, "decode", num_frames=4) is None
    assert probe_video(write_empty_file(tmp_path / "empty.mp4")) == "empty file (0 bytes)"
    assert "no video stream" in probe_video(write_audio_only(tmp_path / "a.wav"), "decode")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    assert probe_video(truncated) is not None  # mp4's index sits at the end: a cut file does not open
    with pytest.raises(ValueError, match="probe must be one of"):
        probe_video(good, "full")


def test_frame_cache_coverage(tmp_path, capsys):
    root = lay_out(tmp_path, "msvd")
    train = load_split("msvd", root, "train")
    write_corrupt_file(train.source.describe(0))  # the cache records it as failed
    build_frame_cache([train.source.describe(i) for i in range(3)], tmp_path / "cache", num_frames=2, size=16,
                      keys=train.video_ids, progress=False)
    code, out, _ = run_cli(capsys, "msvd", str(root), "--cache", str(tmp_path / "cache"), "--no-probe", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["cache_settings"] == {"num_frames": 2, "size": 16}
    by_split = {s["split"]: s["cache"] for s in doc["splits"]}
    assert (by_split["train"]["cached"], by_split["train"]["failed_count"], by_split["train"]["absent_count"]) == (2, 1, 0)
    assert list(by_split["train"]["failed"]) == [train.video_ids[0]]
    assert (by_split["test"]["cached"], by_split["test"]["absent_count"]) == (0, 2)
    assert [(p["kind"], p["split"]) for p in doc["problems"]] == [("cache-failed", "train")]
    assert any("test: 2 of 2 videos are not in the frame cache" in w for w in doc["warnings"])  # warning only

    code, out, _ = run_cli(capsys, "msvd", str(root), "--cache", str(tmp_path / "nowhere"), "--no-probe")
    assert code == 1 and "is not a frame cache" in out and "vop cache" in out


def test_names_are_escaped_for_the_terminal(tmp_path, capsys):
    root = lay_out(tmp_path, "msvd", real_videos=False)
    hostile = "evil\x1b[2J\x07id"
    captions = json.loads((root / "captions_msvd.json").read_text())
    captions[hostile] = ["a caption"]
    (root / "captions_msvd.json").write_text(json.dumps(captions))
    (root / "test_list.txt").write_text((root / "test_list.txt").read_text() + hostile + "\n")
    code, out, _ = run_cli(capsys, "msvd", str(root), "--no-probe", "--splits", "test")
    assert code == 1 and "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J\\x07id" in out
    assert terminal_safe("a\nb\tc") == "a\\nb\\tc" and terminal_safe("café 東京") == "café 東京"
    code, out, _ = run_cli(capsys, "msvd", str(root), "--no-probe", "--splits", "test", "--json")
    assert json.loads(out)["splits"][0]["missing"] == [hostile]  # JSON keeps the name itself


def test_sample_limits_names(tmp_path, capsys):
    root = tmp_path / "msvd"
    shutil.copytree(FIXTURES / "msvd", root)
    (root / "videos").mkdir()
    code, out, _ = run_cli(capsys, "msvd", str(root), "--splits", "train", "--sample", "1")
    assert code == 1 and "-4wsuPCjDBc_5_15, ... (2 more)" in out
    doc = json.loads(run_cli(capsys, "msvd", str(root), "--splits", "train", "--sample", "1", "--json")[1])
    assert doc["splits"][0]["missing_count"] == 3 and len(doc["splits"][0]["missing"]) == 1


def test_bad_arguments(tmp_path, capsys):
    code, _, err = run_cli(capsys, "msvd", str(FIXTURES / "msvd"), "--splits", "valid")
    assert code == 2 and "msvd has no split 'valid'" in err
    code, _, err = run_cli(capsys, "msvd")
    assert code == 2 and "give BENCHMARK and ROOT" in err


def test_config_supplies_the_data_section(tmp_path, capsys):
    root = lay_out(tmp_path, "msvd", real_videos=False)
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  benchmark: msvd\n  root: {root}\n")
    code, out, _ = run_cli(capsys, "--config", str(config), "--no-probe")
    assert code == 0 and out.startswith(f"msvd: annotations {root},")


# -- the reader's no-caption message names its files ------------------------------------


def test_uncaptioned_videos_name_the_files_they_came_from(tmp_path, caplog):
    root = tmp_path / "msrvtt"
    shutil.copytree(FIXTURES / "msrvtt", root)
    with open(root / "MSRVTT_train.9k.csv", "a") as f:
        f.write("video99\n")
    with caplog.at_level(logging.WARNING, logger="vop.data.benchmarks"):
        load_split("msrvtt-9k", root, "train", check_videos=False)
    expected = (f"1 video(s) listed in {root / 'MSRVTT_train.9k.csv'} have no caption in "
                f"{root / 'MSRVTT_data.json'} and are left out: video99")
    assert expected in caplog.text
    report = check_benchmark("msrvtt-9k", root, splits=["train"], probe="none")
    assert report.splits[0].uncaptioned == ["video99"]
    assert any(expected in w for w in report.warnings)


def test_uncaptioned_message_with_a_relative_root(tmp_path, caplog, monkeypatch):
    shutil.copytree(FIXTURES / "didemo", tmp_path / "didemo")
    moments = json.loads((tmp_path / "didemo" / "test_data.json").read_text())
    moments.append({"annotation_id": 99, "description": " ", "video": "nobody_says_anything.mp4", "times": []})
    (tmp_path / "didemo" / "test_data.json").write_text(json.dumps(moments))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="vop.data.benchmarks"):
        load_split("didemo", "didemo", "test", check_videos=False)
    assert f"1 video(s) listed in {tmp_path / 'didemo' / 'test_data.json'} have no caption and" in caplog.text


# -- the real split files -----------------------------------------------------------------


@needs_shared
def test_real_msvd_files(tmp_path, capsys):
    root = tmp_path / "msvd"
    shutil.copytree(SHARED_DATA / "msvd", root)
    code, out, _ = run_cli(capsys, "msvd", str(root), "--json")
    doc = json.loads(out)
    assert code == 1 and [(p["kind"], p["split"]) for p in doc["problems"]] == [("video-folder", None)]
    counts = {s["split"]: (s["videos"], s["captions"]) for s in doc["splits"]}
    assert counts == {"train": (1200, 48774), "val": (100, 4290), "test": (670, 27763)}
    per_video = [s["captions_per_video"] for s in doc["splits"]]
    assert min(p["min"] for p in per_video) == 18 and max(p["max"] for p in per_video) == 81


@needs_shared
def test_real_msrvtt_files(tmp_path, capsys):
    """The real 1k-A test list with an empty file per video: found, but every file fails
    the probe; train and val need MSRVTT_data.json, which is not stored here."""
    root = tmp_path / "msrvtt"
    root.mkdir()
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv"):
        shutil.copy(SHARED_DATA / "msrvtt" / name, root / name)
    (root / "videos").mkdir()
    for video_id in split_ids("msrvtt-9k", root, "test"):
        (root / "videos" / f"{video_id}.mp4").write_bytes(b"")
    code, out, _ = run_cli(capsys, "msrvtt-9k", str(root), "--splits", "test", "--no-probe")
    assert code == 0 and "1000 videos, 1000 captions (1 / 1.0 / 1 per video" in out
    code, out, _ = run_cli(capsys, "msrvtt-9k", str(root), "--json", "--quiet")
    doc = json.loads(out)
    by_split = {s["split"]: s for s in doc["splits"]}
    assert code == 1 and by_split["test"]["unreadable_count"] == 1000 and by_split["test"]["present"] == 1000
    for split in ("train", "train-minus-val", "val"):
        assert "'MSRVTT_data.json' not found" in by_split[split]["error"]
