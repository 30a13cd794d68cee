"""End to end from the command line: tiny generated videos in the MSR-VTT layout, one of
them corrupt; `vop train` on a shipped config with --set overrides, then `vop eval`."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from helpers_video import write_corrupt_file, write_video
from vop.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30), "white": (240, 240, 240), "purple": (140, 30, 160)}
PATTERNS = ("plain", "striped")
TRAIN_VIDEOS, CORRUPT = 8, 3  # video0..7 train (video7 is the held-out val), video8..11 test


def _frames(rgb: tuple[int, int, int], pattern: str, num: int = 16, side: int = 48) -> np.ndarray:
    x = np.empty((num, side, side, 3), np.uint8)  # [T, H, W, 3]
    x[:] = rgb
    if pattern == "striped":
        for k in range(4):
            x[:, :, k::8] = 0  # black vertical stripes, 4 px wide
    return x


def make_msrvtt(root: Path) -> dict[str, str]:
    """12 videos (6 colours x plain/striped, 16 frames of 48 px), two captions each naming
    the colour, in the CLIP4Clip MSR-VTT layout; ``video3`` is random bytes."""
    (root / "videos").mkdir(parents=True)
    videos = [(colour, pattern) for pattern in PATTERNS for colour in COLOURS]
    sentences = []
    for i, (colour, pattern) in enumerate(videos):
        path = root / "videos" / f"video{i}.mp4"
        if i == CORRUPT:
            write_corrupt_file(path)
        else:
            write_video(path, _frames(COLOURS[colour], pattern))
        for k, caption in enumerate([f"a {pattern} {colour} picture", f"the whole video is {colour}"]):
            sentences.append({"caption": caption, "video_id": f"video{i}", "sen_id": 2 * i + k})
    (root / "MSRVTT_data.json").write_text(json.dumps({
        "videos": [{"video_id": f"video{i}"} for i in range(len(videos))], "sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"video{i}\n" for i in range(TRAIN_VIDEOS)))
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for i in range(TRAIN_VIDEOS, len(videos)):
            colour, pattern = videos[i]
            writer.writerow([f"ret{i}", f"msr{i}", f"video{i}", f"a {pattern} {colour} picture"])
    return {"corrupt": str(root / "videos" / f"video{CORRUPT}.mp4")}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{args[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_train_then_eval_from_the_command_line(tmp_path):
    data = make_msrvtt(tmp_path / "msrvtt")
    out = tmp_path / "run"
    overrides = {
        "backbone": "tiny", "data.root": str(tmp_path / "msrvtt"), "data.num_frames": 4, "data.workers": 1,
        "optim.batch_size": 8, "optim.epochs": 8, "optim.lr": 1e-2,  # 16 training captions: 2 steps/epoch
        "runtime.device": "cpu", "runtime.precision": "fp32", "runtime.threads": 1, "runtime.out_dir": str(out),
        "runtime.log_every": 1, "runtime.eval_every": 100, "runtime.progress": False,
        "runtime.tensorboard": False,
    }
    sets = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]
    train = _run([sys.executable, "-m", "vop.cli", "train", "--data", "msrvtt-9k", "--method", "proj", *sets],
                 tmp_path)

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["kind"] == "train"]
    assert len(losses) == 16
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.75 * first, f"loss did not fall: {losses}"
    assert {r["kind"] for r in log} == {"train", "val", "test"}

    # The corrupt video was skipped and reported once, by path; training went on.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 16
    assert summary["skipped_videos"] == 1 and summary["skipped_examples"] == [data["corrupt"]]
    assert "skipped 1 unreadable videos during training" in train.stdout and data["corrupt"] in train.stdout
    assert train.stderr.count(f"skipped unreadable video {data['corrupt']}") == 1  # warned once, not per read
    printed = json.loads(train.stdout[train.stdout.index("\n{") + 1:train.stdout.rindex("}") + 1])
    assert printed["steps"] == 16 and printed["test"] == pytest.approx(summary["test"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "last"]

    # `vop eval` rebuilds the model and the data from the checkpoint alone.
    entry = Path(sys.executable).with_name("vop")
    vop = [str(entry)] if entry.exists() else [sys.executable, "-m", "vop.cli"]
    ev = _run([*vop, "eval", "--checkpoint", str(out / "checkpoints" / "best"), "--json",
               "--set", "runtime.progress=false", "--set", "runtime.device=cpu"], tmp_path)
    metrics = json.loads(ev.stdout)
    assert metrics["num_videos"] == 4 and metrics["num_captions"] == 4 and metrics["skipped_videos"] == 0
    for key in ("t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "t2v_mnr", "v2t_r1", "v2t_mdr"):
        assert isinstance(metrics[key], float), key
    assert metrics == pytest.approx(summary["test"])  # the same model on the same split

    # On the split holding the corrupt video, evaluation leaves it (and its captions) out.
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(["eval", "--checkpoint", str(out / "checkpoints" / "best"), "--split", "train", "--json",
                     "--set", "runtime.progress=false", "--set", "runtime.device=cpu"]) == 0
    train_metrics = json.loads(buffer.getvalue())
    assert train_metrics["skipped_videos"] == 1
    assert (train_metrics["num_videos"], train_metrics["num_captions"]) == (TRAIN_VIDEOS - 1, 2 * (TRAIN_VIDEOS - 1))


def train_on_fake_msrvtt(tmp_path: Path, method: str, **sets) -> Path:
    """`vop train --data msrvtt-9k --method METHOD` for 2 steps of the tiny backbone on a fake
    MSR-VTT laid out by make_msrvtt; ``sets`` adds or replaces --set keys. Returns the run folder."""
    make_msrvtt(tmp_path / "msrvtt")
    out = tmp_path / "run"
    base = {"backbone": "tiny", "data.root": str(tmp_path / "msrvtt"), "data.num_frames": 4, "data.workers": 0,
            "optim.batch_size": 8, "optim.max_steps": 2, "runtime.device": "cpu", "runtime.precision": "fp32",
            "runtime.out_dir": str(out), "runtime.progress": False, "runtime.tensorboard": False}
    args = [a for k, v in {**base, **sets}.items() for a in ("--set", f"{k}={v}")]
    _run([sys.executable, "-m", "vop.cli", "train", "--data", "msrvtt-9k", "--method", method, *args], tmp_path)
    return out

