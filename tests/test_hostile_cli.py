"""Every subcommand, fed every file format the project reads in a damaged form (truncated,
emptied, the wrong JSON type, keys missing, wrong types, dtypes or shapes), exits non-zero
with one clear line on stderr, no traceback, and changes none of the user's files.

The files are built once (a method checkpoint, a training run's ``last`` with its resume
state, a collection and its index, a benchmark folder and its frame cache, YAML configs);
each case damages one file, runs the command in-process (``vop.cli.main``), checks, and
puts the file back. The whole tree is hashed before and after each command."""

from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from test_search_support import encode, make_collection, save_prompts
from test_train_cli import make_msrvtt
from vop.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    save_prompts(base / "ckpt", method="vop")
    encode(make_collection(base / "videos", count=2, with_bad=False), base / "index", checkpoint=str(base / "ckpt"),
           backbone=None)
    make_msrvtt(base / "msrvtt")
    with redirect_stdout(io.StringIO()):
        assert main(["cache", "msrvtt-9k", str(base / "msrvtt"), "--out", str(base / "cache"), "--size", "32",
                     "--workers", "0", "--splits", "test"]) == 0
    _run_with_last(base)
    # Flow style: any truncation leaves a bracket open.
    (base / "run.yaml").write_text(f"{{backbone: tiny, data: {{benchmark: msrvtt-9k, root: '{base / 'msrvtt'}'}}, "
                                   "optim: {lr: 1.0e-3, batch_size: 4}, runtime: {device: cpu}}\n")
    (base / "eval.yaml").write_text(f"data:\n  benchmark: msrvtt-9k\n  root: {base / 'msrvtt'}\n")
    (base / "notes.txt").write_text("the user's own file, which no command may touch\n")
    return base


TRAIN = ["--data", "synthetic", "--method", "vop", "--set", "backbone=tiny", "--set", "data.synthetic.train_pairs=4",
         "--set", "data.synthetic.val_pairs=2", "--set", "data.synthetic.test_pairs=2",
         "--set", "data.synthetic.image_size=32", "--set", "data.num_frames=4", "--set", "optim.batch_size=4",
         "--set", "optim.max_steps=1", "--set", "runtime.progress=false", "--set", "runtime.tensorboard=false",
         "--set", "runtime.threads=1"]


def _run_with_last(base: Path) -> None:
    """A finished one-step run: its ``last`` holds weights, meta and the resume state."""
    with redirect_stdout(io.StringIO()):
        assert main(["train", *TRAIN, "--set", f"runtime.out_dir={base / 'run'}"]) == 0
    assert (base / "run" / "checkpoints" / "last" / "state.pt").is_file()


# -- damages ------------------------------------------------------------------------------------
def truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)])


def empty(f: Path) -> None:
    f.write_bytes(b"")


def garbage(f: Path) -> None:
    f.write_bytes(bytes(range(256)) * 3)


def json_list(f: Path) -> None:
    f.write_text(json.dumps([json.loads(f.read_text())]))


def json_edit(**changes):
    def damage(f: Path) -> None:
        data = json.loads(f.read_text())
        for key, value in changes.items():
            if value is _DROP:
                data.pop(key, None)
            else:
                data[key] = value
        f.write_text(json.dumps(data))
    damage.__name__ = "json_edit(" + ",".join(changes) + ")"
    return damage


_DROP = object()


def jsonl_drop_hash(f: Path) -> None:
    lines = [json.loads(line) for line in f.read_text().splitlines()]
    lines[0].pop("hash")
    f.write_text("".join(json.dumps(line) + "\n" for line in lines))


def jsonl_list_line(f: Path) -> None:
    f.write_text("[1, 2, 3]\n" + f.read_text().split("\n", 1)[1])


def npy(transform):
    def damage(f: Path) -> None:
        np.save(f, transform(np.load(f)))
    damage.__name__ = f"npy({transform.__name__})"
    return damage


def as_int(a):
    return a.astype(np.int64)


def one_wider(a):
    return np.concatenate([a, a[:, :1]], axis=1)


def no_rows(a):
    return a[:0]


def safetensors(transform):
    def damage(f: Path) -> None:
        from safetensors.torch import load_file, save_file

        save_file({k: transform(v) for k, v in load_file(str(f)).items()}, str(f))
    damage.__name__ = f"safetensors({transform.__name__})"
    return damage


def to_int(t):
    return t.to(torch.int32)


def one_more_row(t):
    return torch.cat([t, t[:1]]).contiguous()


def state_of(value):
    def damage(f: Path) -> None:
        torch.save(value, f)
    damage.__name__ = f"state({type(value).__name__})"
    return damage


def yaml_text(text: str):
    def damage(f: Path) -> None:
        f.write_text(text)
    damage.__name__ = f"yaml({text[:12]!r})"
    return damage


BOMB = "data:\n synthetic:\n" + "".join(f"  {c}: &{c} [{', '.join([f'*{p}'] * 9 if p else ['1'] * 9)}]\n"
                        for p, c in zip([None, *"abcdefg"], "abcdefgh"))
JSON_FILE = [truncate, empty, garbage, json_list]
BINARY_FILE = [truncate, empty, garbage]

# -- the commands, by the file they read -------------------------------------------------------
CKPT_READERS = {
    "eval": lambda w: ["eval", "--checkpoint", str(w / "ckpt"), "--data", str(w / "eval.yaml"), "--split", "test",
                       "--device", "cpu", "--quiet"],
    "encode": lambda w: ["encode", str(w / "videos"), "--checkpoint", str(w / "ckpt"), "--out", str(w / "new-index"),
                         "--quiet"],
    "search": lambda w: ["search", str(w / "index"), "a red square", "--checkpoint", str(w / "ckpt")],
}
INDEX_READERS = {
    "search": lambda w: ["search", str(w / "index"), "a red square"],
    "serve": lambda w: ["serve", str(w / "index"), "--port", "0"],
    "encode": lambda w: ["encode", str(w / "videos"), "--checkpoint", str(w / "ckpt"), "--out", str(w / "index"),
                         "--quiet"],
}
CACHE_READERS = {
    "eval": lambda w: ["eval", "--checkpoint", "zero-shot", "--backbone", "tiny", "--split", "test", "--quiet",
                       "--device", "cpu", "--set", "data.benchmark=msrvtt-9k", "--set", f"data.root={w / 'msrvtt'}",
                       "--set", f"data.cache_dir={w / 'cache'}"],
    "data-check": lambda w: ["data", "check", "msrvtt-9k", str(w / "msrvtt"), "--cache", str(w / "cache"),
                             "--no-probe", "--quiet"],
    "cache": lambda w: ["cache", "msrvtt-9k", str(w / "msrvtt"), "--out", str(w / "cache"), "--splits", "test",
                        "--size", "32", "--workers", "0"],
}
RESUME = {"train": lambda w: ["train", *TRAIN, "--set", f"runtime.out_dir={w / 'run'}"]}
YAML_READERS = {
    "train": lambda w: ["train", str(w / "run.yaml"), "--print-config"],
    "data-check": lambda w: ["data", "check", "--config", str(w / "run.yaml"), "--no-probe", "--quiet"],
}
EVAL_YAML = {"eval": lambda w: ["eval", "--checkpoint", "zero-shot", "--backbone", "tiny", "--data",
                                str(w / "eval.yaml"), "--quiet", "--device", "cpu"]}

CASES = []


def _add(readers: dict, file: str, damages: list) -> None:
    for name, command in readers.items():
        for damage in damages:
            CASES.append(pytest.param(command, file, damage, id=f"{name}-{file.replace('/', '.')}-{damage.__name__}"))


_add(CKPT_READERS, "ckpt/meta.json", [*JSON_FILE, json_edit(backbone=_DROP), json_edit(method=_DROP),
                                      json_edit(method=3), json_edit(backbone={"source": 1}), json_edit(data=[1])])
_add(CKPT_READERS, "ckpt/weights.safetensors", [*BINARY_FILE, safetensors(to_int), safetensors(one_more_row)])
_add(RESUME, "run/checkpoints/last/state.pt", [*BINARY_FILE, state_of([1, 2]), state_of({"run": {}})])
_add(RESUME, "run/checkpoints/last/weights.safetensors", [truncate, empty, garbage])
_add(INDEX_READERS, "index/index.json", [*JSON_FILE, json_edit(encoder=_DROP), json_edit(root=5),
                                         json_edit(count="many"), json_edit(dim=_DROP)])
_add(INDEX_READERS, "index/videos.jsonl", [truncate, garbage, jsonl_drop_hash, jsonl_list_line])
_add(INDEX_READERS, "index/embeddings.npy", [*BINARY_FILE, npy(as_int), npy(one_wider), npy(no_rows)])
_add(INDEX_READERS, "index/failed.json", [garbage, json_edit()])  # json_edit() on a list: the wrong type
_add(CACHE_READERS, "cache/index.json", [*JSON_FILE, json_edit(videos=_DROP), json_edit(num_frames="x")])
_add(YAML_READERS, "run.yaml", [truncate, garbage, yaml_text("- a list\n- of things\n"), yaml_text("optim: 3\n"),
                                yaml_text("optim: {lr: [1\n"), yaml_text("optim: {lr: .nan}\n"), yaml_text(BOMB),
                                yaml_text("runtime: {device: tpu9}\n")])
_add(EVAL_YAML, "eval.yaml", [truncate, garbage, yaml_text("[1, 2]\n"), yaml_text("data: [1]\n"),
                              yaml_text("data: {benchmark: msrvtt-9k, root: 5}\n")])


def _tree(base: Path) -> dict[str, str]:
    out = {}
    for folder, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(files) + sorted(d for d in dirs):
            path = Path(folder) / name
            rel = str(path.relative_to(base))
            out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _without_run_header(err: str) -> str:
    """stderr less the run header that vop eval/encode print before starting (a title line
    followed by indented ``name: value`` lines): what remains must be the one error line."""
    lines, out, i = err.splitlines(), [], 0
    while i < len(lines):
        if i + 1 < len(lines) and lines[i + 1].startswith("  ") and ": error: " not in lines[i]:
            i += 1
            while i < len(lines) and lines[i].startswith("  "):
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


@pytest.mark.parametrize("command,file,damage", CASES)
def test_a_damaged_file_is_one_clear_line_and_nothing_changes(world, capsys, command, file, damage):
    target = world / file
    original = target.read_bytes()
    try:
        if damage.__name__ == "json_edit()":  # failed.json: a list, made the wrong type
            target.write_text(json.dumps({"not": "a list"}))
        else:
            damage(target)
        assert target.read_bytes() != original, "the damage changed nothing"
        capsys.readouterr()
        before = _tree(world)
        code = main(command(world))
        captured = capsys.readouterr()
        after = _tree(world)
    finally:
        target.write_bytes(original)
    err = _without_run_header(captured.err.strip())
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    if command(world)[:2] == ["data", "check"] and file.startswith("cache/"):
        # `vop data check` is a report: a frame cache it cannot open is one of its problems (exit 1).
        assert code == 1 and err == "" and f"frame cache {target.parent}" in captured.out, captured
        assert after == before
        return
    assert code == 2, f"exit {code}; stderr:\n{captured.err[-3000:]}"
    assert len(err.splitlines()) == 1 and err.startswith("vop ") and ": error: " in err, err
    if not file.endswith(".yaml"):  # a config's message names the key instead
        assert str(target.parent) in err, err
    assert after == before, f"files changed: {sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))}"


def test_the_undamaged_world_works(world, capsys):
    """The corpus is meaningful: every command above succeeds on the files as built."""
    for command in [*CKPT_READERS.values(), INDEX_READERS["search"], YAML_READERS["train"], *EVAL_YAML.values()]:
        capsys.readouterr()
        assert main(command(world)) == 0, capsys.readouterr().err[-2000:]
    assert main(CACHE_READERS["data-check"](world)) in (0, 1)  # 1: the benchmark's corrupt video is reported
    assert "frame cache" in capsys.readouterr().out


# -- the error boundary ---------------------------------------------------------------------------
@pytest.fixture
def failing(monkeypatch):
    """``vop params`` made to raise the given exception."""
    import vop.cli as cli

    def install(exc: BaseException):
        help_text, add_args, _run = cli._COMMANDS["params"]

        def run(args):
            raise exc

        monkeypatch.setitem(cli._COMMANDS, "params", (help_text, add_args, run))
    return install


@pytest.mark.parametrize("exc,code", [
    (ValueError("bad \x1b]0;PWNED\x07 name\nsecond line"), 2),
    (FileNotFoundError(2, "no such file: x\x1b[2J"), 2),
    (KeyboardInterrupt(), 130),
])
def test_known_errors_are_one_escaped_line(failing, capsys, exc, code):
    failing(exc)
    assert main(["params"]) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "\x1b" not in err and "Traceback" not in err
    assert err.startswith("vop params: error: ")
    if code == 2:
        assert "\\x1b" in err  # shown escaped, not acted on


def test_anything_else_is_a_bug_with_its_traceback(failing, capsys):
    failing(KeyError("surprise"))
    assert main(["params"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'surprise'" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vop params: bug: internal error (KeyError)") and "please report it" in last


def test_serve_refuses_a_port_out_of_range(world, capsys):
    assert main(["serve", str(world / "index"), "--port", "99999"]) == 2
    assert capsys.readouterr().err.strip() == "vop serve: error: --port must be between 0 and 65535, got 99999"
