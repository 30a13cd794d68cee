"""Benchmark readers: every format parsed from tiny fixtures, the protocol's splits,
missing files and videos reported, and the counts of the real split files."""

from __future__ import annotations

import csv
import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
from helpers_video import index_frames, write_video

from vop.data.benchmarks import READERS, get_reader, load_split, summarize
from vop.data.benchmarks.common import VideoFinder, hold_out, natural_key
from vop.data.benchmarks.lsmdc import movie_of

FIXTURES = Path(__file__).parent / "fixtures"
# The real split files sit beside the repository (CI: ../shared); see /shared/data/README.md.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real split files not found at {SHARED_DATA} (shared/ beside the repo)"
)

FIXTURE_DIR = {
    "msrvtt-9k": "msrvtt",
    "msrvtt-7k": "msrvtt",
    "didemo": "didemo",
    "activitynet": "activitynet",
    "lsmdc": "lsmdc",
    "msvd": "msvd",
}

# benchmark -> split -> (videos, captions) in the fixtures.
EXPECTED = {
    "msrvtt-9k": {"train": (4, 9), "train-minus-val": (3, 7), "val": (1, 1), "test": (2, 2)},
    "msrvtt-7k": {"train": (3, 7), "train-minus-val": (2, 5), "val": (1, 1), "test": (2, 2)},
    "didemo": {"train": (3, 3), "val": (1, 1), "test": (2, 2)},
    "activitynet": {"train": (4, 4), "train-minus-val": (3, 3), "val": (1, 1), "test": (2, 2)},
    "lsmdc": {"train": (5, 6), "train-minus-val": (3, 4), "val": (2, 2), "test": (2, 2)},
    "msvd": {"train": (3, 7), "val": (1, 2), "test": (2, 6)},
}


def fixture_root(benchmark: str) -> Path:
    return FIXTURES / FIXTURE_DIR[benchmark]


def touch_videos(video_dir: Path, names: list[str]) -> None:
    """Empty files under video names: enough for the existence scan, which never decodes."""
    for name in names:
        path = video_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def all_video_files(benchmark: str, split: str, ext: str = ".mp4") -> list[str]:
    """One file per video of the split, at the reader's first-choice name."""
    reader = get_reader(benchmark)
    ids = reader.annotations(fixture_root(benchmark), split).video_ids
    return [reader.video_names(v)[0] + ext for v in ids]


# -- registry --------------------------------------------------------------------------


def test_registry_names():
    assert set(READERS) == {"msrvtt-9k", "msrvtt-7k", "didemo", "activitynet", "lsmdc", "msvd"}
    assert set(EXPECTED) == set(READERS)
    for name, reader in READERS.items():
        assert reader.name == name
        assert set(EXPECTED[name]) == set(reader.splits)


def test_unknown_benchmark_lists_known():
    with pytest.raises(ValueError, match="known: msrvtt-9k, msrvtt-7k, didemo"):
        load_split("msrvt", FIXTURES, "test")


def test_unknown_split_lists_known():
    with pytest.raises(ValueError, match="no split 'valid'; known: train, val, test"):
        load_split("msvd", fixture_root("msvd"), "valid", check_videos=False)


# -- every reader on its fixture -------------------------------------------------------


@pytest.mark.parametrize(
    "benchmark,split", [(b, s) for b, splits in EXPECTED.items() for s in splits], ids=lambda x: str(x)
)
def test_fixture_counts(benchmark, split):
    result = load_split(benchmark, fixture_root(benchmark), split, check_videos=False)
    assert (result.num_videos, result.num_captions) == EXPECTED[benchmark][split]
    assert result.name == f"{benchmark}/{split}"
    assert len(result.source) == result.num_videos
    assert set(result.caption_to_video) == set(range(result.num_videos))  # every video has a caption
    assert result.missing == ()
    assert all(c and c == c.strip() for c in result.captions)


@pytest.mark.parametrize("benchmark", list(READERS))
def test_val_is_disjoint_from_what_tuning_trains_on_and_from_test(benchmark):
    root = fixture_root(benchmark)
    reader = get_reader(benchmark)
    val = set(reader.annotations(root, "val").video_ids)
    test = set(reader.annotations(root, "test").video_ids)
    fit = "train-minus-val" if "train-minus-val" in reader.splits else "train"
    assert val and not val & test
    assert not val & set(reader.annotations(root, fit).video_ids)


@pytest.mark.parametrize("benchmark", list(READERS))
def test_missing_annotation_file_names_it_and_the_layout(benchmark, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_split(benchmark, tmp_path, "test", check_videos=False)
    message = str(err.value)
    assert "Expected layout" in message and "docs/data.md" in message
    assert str(tmp_path) in message
    assert any(name in message for name in ("MSRVTT_JSFUSION_test.csv", "test_data.json", "val_1.json",
                                             "LSMDC16_challenge_1000_publictect.csv", "test_list.txt"))


def test_msrvtt_protocol():
    root = fixture_root("msrvtt-9k")
    train = load_split("msrvtt-9k", root, "train", check_videos=False)
    assert train.video_ids == ("video2", "video10", "video1", "video0")  # file order
    # every caption of every training video, each pointing at its own video
    pairs = {(train.video_ids[v], c) for c, v in zip(train.captions, train.caption_to_video)}
    assert ("video0", "a chef in a kitchen") in pairs and ("video10", "a child on a bike") in pairs
    # val: the last 5 % of the ids in natural order (video10, not video2), lowest sen_id
    val = load_split("msrvtt-9k", root, "val", check_videos=False)
    assert val.video_ids == ("video10",) and val.captions == ("a child on a bike",)
    assert load_split("msrvtt-7k", root, "val", check_videos=False).video_ids == ("video2",)
    test = load_split("msrvtt-9k", root, "test", check_videos=False)
    assert test.video_ids == ("video7", "video8")
    assert test.captions == ("a woman sings on stage", "a cartoon cat chases a mouse")
    assert test.caption_to_video == (0, 1)
    assert test.source.describe(0) == str(root / "videos" / "video7.mp4")  # the guessed path


def test_didemo_paragraphs_in_annotation_order():
    split = load_split("didemo", fixture_root("didemo"), "train", check_videos=False)
    assert split.video_ids == ("10001@N01_1111_aaaa.mov", "20002@N02_2222_bbbb.mp4", "30003@N03_3333_cccc.avi")
    assert split.captions[0] == "a girl walks into the room she sits down camera pans to the window"
    assert split.captions[1] == "the dog jumps a dog catches a frisbee"


def test_activitynet_paragraphs_and_val_slice():
    root = fixture_root("activitynet")
    train = load_split("activitynet", root, "train", check_videos=False)
    assert train.captions[0] == (
        "A young woman is seen standing in a room. She then begins dancing around. She ends by bowing."
    )
    val = load_split("activitynet", root, "val", check_videos=False)
    assert val.video_ids == ("v_nwznKOuZM7w",)
    assert load_split("activitynet", root, "test", check_videos=False).video_ids == ("v_uqiMw7tQ1Cc", "v_bYUmtLBL7W4")


def test_lsmdc_movies_and_val_file(tmp_path):
    assert movie_of("0001_Movie_One_00.01.10.250-00.01.12.000") == "0001_Movie_One"
    assert movie_of("not_a_clip") is None
    root = fixture_root("lsmdc")
    train = load_split("lsmdc", root, "train", check_videos=False)
    clip = "0001_Movie_One_00.00.04.000-00.00.06.000"
    assert [c for c, v in zip(train.captions, train.caption_to_video) if train.video_ids[v] == clip] == [
        "He looks around the empty hall.", "SOMEONE hesitates."]
    # no val file: the held-out slice is widened to the whole last movie
    val = load_split("lsmdc", root, "val", check_videos=False)
    assert {movie_of(v) for v in val.video_ids} == {"0002_Movie_Two"} and val.num_videos == 2
    # with the official val file, val is that file and training stays whole
    shutil.copytree(root, tmp_path / "lsmdc")
    row = "0003_Val_Movie_00.00.01.000-00.00.02.000\t0\t0\t0\t0\tA door slams.\n"
    (tmp_path / "lsmdc" / "LSMDC16_annos_val.csv").write_text(row)
    val = load_split("lsmdc", tmp_path / "lsmdc", "val", check_videos=False)
    assert val.video_ids == ("0003_Val_Movie_00.00.01.000-00.00.02.000",) and val.captions == ("A door slams.",)
    assert load_split("lsmdc", tmp_path / "lsmdc", "train-minus-val", check_videos=False).num_videos == 5


def test_lsmdc_malformed_row(tmp_path):
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text("clip\tonly two\n")
    with pytest.raises(ValueError, match=r"publictect.csv:1: expected 6 tab-separated fields"):
        load_split("lsmdc", tmp_path, "test", check_videos=False)


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "test_list.txt").write_text("\n")
    (tmp_path / "captions_msvd.json").write_text("{}")
    with pytest.raises(ValueError, match="msvd/test: .* list no captioned video"):
        load_split("msvd", tmp_path, "test", check_videos=False)


def test_msvd_pickle_equals_json(tmp_path):
    root = fixture_root("msvd")
    for name in ("train_list.txt", "val_list.txt", "test_list.txt"):
        shutil.copy(root / name, tmp_path / name)
    captions = json.loads((root / "captions_msvd.json").read_text())
    with open(tmp_path / "raw-captions.pkl", "wb") as f:
        pickle.dump({v: [c.split() for c in cs] for v, cs in captions.items()}, f)
    from_pickle = load_split("msvd", tmp_path, "test", check_videos=False)
    from_json = load_split("msvd", root, "test", check_videos=False)
    assert from_pickle.captions == from_json.captions and from_pickle.video_ids == from_json.video_ids
    assert from_json.caption_to_video == (0, 0, 0, 1, 1, 1)  # every caption is a query


def test_msvd_pickle_with_classes_is_refused(tmp_path):
    for name in ("train_list.txt", "val_list.txt", "test_list.txt"):
        shutil.copy(fixture_root("msvd") / name, tmp_path / name)
    with open(tmp_path / "raw-captions.pkl", "wb") as f:
        pickle.dump({"x": [Path("a")]}, f)
    with pytest.raises(pickle.UnpicklingError, match="only plain data"):
        load_split("msvd", tmp_path, "test", check_videos=False)


def test_msvd_no_caption_file_names_both(tmp_path):
    shutil.copy(fixture_root("msvd") / "test_list.txt", tmp_path / "test_list.txt")
    with pytest.raises(FileNotFoundError, match="'captions_msvd.json' or 'raw-captions.pkl'"):
        load_split("msvd", tmp_path, "test", check_videos=False)


# -- finding videos --------------------------------------------------------------------


def test_helpers():
    assert sorted(["video10", "video9", "video1"], key=natural_key) == ["video1", "video9", "video10"]
    kept, held = hold_out([f"video{i}" for i in range(40)], 0.05)
    assert held == ("video38", "video39") and len(kept) == 38


def test_finder_extensions_and_preference(tmp_path):
    touch_videos(tmp_path, ["a.webm", "b.MKV", "c.avi", "d.mov", "e.mov", "e.mp4", "f.txt", "sub/g.mp4"])
    finder = VideoFinder(tmp_path)
    assert finder.find(["a"]).name == "a.webm"
    assert finder.find(["b"]).name == "b.MKV"
    assert finder.find(["e"]).name == "e.mp4"  # .mp4 preferred over .mov
    assert finder.find(["f"]) is None
    assert finder.find(["g"]) is None and finder.find(["sub/g"]).name == "g.mp4"
    assert finder.find(["zzz", "c"]).name == "c.avi"


@pytest.mark.parametrize(
    "benchmark,split,files",
    [
        ("activitynet", "test", ["uqiMw7tQ1Cc.mp4", "v_bYUmtLBL7W4.mkv"]),  # with and without "v_"
        ("didemo", "test", ["50005@N05_5555_eeee.mov.mp4", "60006@N06_6666_ffff.mp4"]),  # AWS and renamed
        ("lsmdc", "test", ["3001_Test_Movie/3001_Test_Movie_00.02.00.000-00.02.04.000.avi",
                           "3001_Test_Movie_00.03.00.000-00.03.02.500.mp4"]),  # movie folder and flat
        ("msvd", "test", ["eyhzdC936uk_15_27.avi", "f-24IxG9ijw_25_40.webm"]),
    ],
)
def test_alternative_file_names(benchmark, split, files, tmp_path):
    touch_videos(tmp_path, files)
    result = load_split(benchmark, fixture_root(benchmark), split, video_dir=tmp_path)
    assert result.missing == () and result.num_videos == 2
    assert sorted(Path(result.source.describe(i)).name for i in range(2)) == sorted(Path(f).name for f in files)
    assert result.source.keys == result.video_ids  # the frame cache is keyed by video id


def test_missing_videos_left_out_and_reported(tmp_path, caplog):
    root = tmp_path / "msvd"
    shutil.copytree(fixture_root("msvd"), root)
    touch_videos(root / "videos", ["-7KMZQEsJW4_205_208.avi"])  # 1 of the 3 training videos
    with caplog.at_level(logging.WARNING, logger="vop.data.benchmarks"):
        result = load_split("msvd", root, "train")
    assert result.video_ids == ("-7KMZQEsJW4_205_208",)
    assert result.missing == ("-4wsuPCjDBc_5_15", "-8y1Q0rA3n8_108_115")
    assert result.captions == ("a man is slicing a tomato", "someone cuts a tomato", "a tomato is being sliced")
    assert result.caption_to_video == (0, 0, 0)
    assert "2 of 3 videos not found" in caplog.text and "-4wsuPCjDBc_5_15" in caplog.text


def test_no_video_folder_or_no_video_at_all(tmp_path):
    with pytest.raises(FileNotFoundError, match="video folder .* not found"):
        load_split("msvd", fixture_root("msvd"), "test", video_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="none of the 2 videos found"):
        load_split("msvd", fixture_root("msvd"), "test", video_dir=tmp_path)


def test_decoding_through_the_split(tmp_path):
    write_video(tmp_path / "video7.mp4", index_frames(6, 16, 16), fps=6)
    write_video(tmp_path / "video8.mkv", index_frames(6, 16, 16), fps=6)
    result = load_split("msrvtt-9k", fixture_root("msrvtt-9k"), "test", video_dir=tmp_path)
    assert result.missing == ()
    for index in range(2):
        assert tuple(result.source.load(index, num_frames=3).shape) == (3, 16, 16, 3)


def test_summarize(tmp_path):
    root = tmp_path / "msvd"
    shutil.copytree(fixture_root("msvd"), root)
    (root / "val_list.txt").unlink()
    touch_videos(root / "videos", all_video_files("msvd", "train", ".avi") + ["eyhzdC936uk_15_27.mp4"])
    report = summarize("msvd", root)
    assert report["benchmark"] == "msvd" and report["videos_checked"] is True
    assert report["splits"]["train"] == {"videos": 3, "captions": 7, "missing": 0, "missing_examples": []}
    test = {"videos": 2, "captions": 6, "missing": 1, "missing_examples": ["f-24IxG9ijw_25_40"]}
    assert report["splits"]["test"] == test
    assert "val_list.txt" in report["splits"]["val"]["error"]
    json.dumps(report)  # printable as JSON by the CLI
    unchecked = summarize("msvd", root, check_videos=False)
    assert unchecked["videos_checked"] is False and unchecked["splits"]["test"]["missing"] is None


# -- the real split files ---------------------------------------------------------------


@needs_shared
def test_real_msrvtt_test_and_training_lists():
    root = SHARED_DATA / "msrvtt"
    test = load_split("msrvtt-9k", root, "test", check_videos=False)
    assert (test.num_videos, test.num_captions) == (1000, 1000)
    assert load_split("msrvtt-7k", root, "test", check_videos=False).video_ids == test.video_ids
    assert len(get_reader("msrvtt-9k").train_video_ids(root)) == 9000
    assert len(get_reader("msrvtt-7k").train_video_ids(root)) == 7010


@pytest.fixture(scope="module")
def msrvtt_with_stand_in_captions(tmp_path_factory):
    """The real id lists with a stand-in MSRVTT_data.json (the real one is not stored
    here): two captions for each of video0..video9999."""
    root = tmp_path_factory.mktemp("msrvtt")
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv"):
        (root / name).symlink_to(SHARED_DATA / "msrvtt" / name)
    sentences = [{"caption": f"caption {k} of video{i}", "video_id": f"video{i}", "sen_id": 2 * i + k}
                 for i in range(10000) for k in range(2)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    return root


@needs_shared
@pytest.mark.parametrize("benchmark,n_train,n_val", [("msrvtt-9k", 9000, 450), ("msrvtt-7k", 7010, 350)])
def test_real_msrvtt_training_lists(benchmark, n_train, n_val, msrvtt_with_stand_in_captions):
    splits = {s: load_split(benchmark, msrvtt_with_stand_in_captions, s, check_videos=False)
              for s in ("train", "train-minus-val", "val")}
    counts = {s: (r.num_videos, r.num_captions) for s, r in splits.items()}
    n_fit = n_train - n_val
    assert counts == {"train": (n_train, 2 * n_train), "train-minus-val": (n_fit, 2 * n_fit), "val": (n_val, n_val)}
    with open(SHARED_DATA / "msrvtt" / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        test_ids = {row["video_id"] for row in csv.DictReader(f)}
    assert not test_ids & set(splits["val"].video_ids)
    assert not set(splits["train-minus-val"].video_ids) & set(splits["val"].video_ids)


@needs_shared
def test_real_msvd_counts():
    report = summarize("msvd", SHARED_DATA / "msvd", check_videos=False)
    counts = {split: (entry["videos"], entry["captions"]) for split, entry in report["splits"].items()}
    assert counts == {"train": (1200, 48774), "val": (100, 4290), "test": (670, 27763)}
