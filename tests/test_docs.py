"""Docs that run: every fenced ```bash and ```python block of README.md and docs/*.md is a
test (id ``FILE:LINE``, the line of its opening fence), so a wrong doc fails CI.

How a block runs
  - Bash blocks run with ``bash -euo pipefail -c BLOCK``, python blocks with ``python -c
    BLOCK``, stdin closed, in a temporary working dir. All blocks of one file share that dir
    and run in file order, so a walk-through (docs/tutorial.md) is one story; asking for one
    block (``-k tutorial.md:120``) runs the earlier blocks of its file first.
  - Environment: ``HOME``, ``XDG_CACHE_HOME``, ``VOP_CACHE`` and ``VOP_DEMO_DIR`` point into
    that dir (so ``~/Videos`` and every cache are private to the test); ``VOP_OFFLINE=1`` and
    ``HF_HUB_OFFLINE=1`` (nothing is downloaded); ``OMP_NUM_THREADS=1``; ``PATH`` starts with
    a ``bin/`` where ``vop`` is ``python -m vop.cli`` of this checkout, ``torchrun`` is
    ``python -m torch.distributed.run``, and ``python`` / ``python3`` are the interpreter
    running the tests; ``PYTHONPATH`` is this checkout's ``src``.
  - After a block, every process it left behind (a server started with ``&``) is killed.
  - Other fence languages are never run: ``text`` for output, ``json``, ``diff``, none.

Marks: HTML comments (invisible on GitHub) on the lines right above the opening fence
  <!-- doctest: skip (REASON) -->    not run; reported as skipped with REASON. Its commands
                                     are still checked without running them: each ``vop ...``
                                     (also after ``torchrun ... -m vop.cli``) must parse with
                                     the CLI's own parser, each ``vop train`` must compose into
                                     a valid config, each repository file it names
                                     (``benchmarks/x.py``, ``tests/test_x.py``) must exist, and a
                                     python block must compile and its ``from vop... import``
                                     names must exist.
  <!-- doctest: setup NAME[ NAME] --> run the named fixtures (SETUPS below) in the working
                                     dir before the block, e.g. a fake benchmark layout at the
                                     path the block uses.
  <!-- doctest: timeout SECONDS -->  the block's time limit (default 120 s).
An unknown mark, or a skip without a reason, fails the block's test.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGUAGES = ("bash", "python")
DEFAULT_TIMEOUT = 120.0
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)\s*$")
MARK = re.compile(r"^\s*<!--\s*doctest:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    source: str
    marks: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        path = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path.name
        return f"{path}:{self.line}"

    def parsed_marks(self) -> dict:
        """{"skip": reason | None, "setup": [names], "timeout": seconds}; ValueError on a bad mark."""
        out: dict = {"skip": None, "setup": [], "timeout": DEFAULT_TIMEOUT}
        for mark in self.marks:
            word, _, rest = mark.partition(" ")
            rest = rest.strip()
            if word == "skip":
                m = re.fullmatch(r"\((.+)\)", rest)
                if not m:
                    raise ValueError(f"{self.id}: 'doctest: skip' needs a reason in parentheses: "
                                     "<!-- doctest: skip (needs real CLIP weights) -->")
                out["skip"] = m.group(1).strip()
            elif word == "setup":
                names = rest.replace(",", " ").split()
                unknown = [n for n in names if n not in SETUPS]
                if not names or unknown:
                    raise ValueError(f"{self.id}: unknown doctest setup {unknown or names!r}; "
                                     f"known: {', '.join(sorted(SETUPS))}")
                out["setup"] += names
            elif word == "timeout":
                try:
                    out["timeout"] = float(rest)
                except ValueError:
                    raise ValueError(f"{self.id}: 'doctest: timeout' needs seconds, got {rest!r}") from None
            else:
                raise ValueError(f"{self.id}: unknown doctest mark {mark!r}; use skip (REASON), setup NAME "
                                 "or timeout SECONDS (tests/test_docs.py)")
        return out


def extract_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file whose language is bash or python, with the
    doctest marks on the lines right above each opening fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, language = m.group(1), m.group(2), m.group(3).lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{ticks}\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: fence never closed")
        i += 1
        if language not in RUN_LANGUAGES:
            continue
        marks, j = [], start - 1
        while j >= 0 and MARK.match(lines[j]):
            marks.insert(0, MARK.match(lines[j]).group(1))
            j -= 1
        blocks.append(Block(path, start + 1, language, "\n".join(body) + "\n", marks))
    return blocks


BLOCKS = [b for doc in DOCS for b in extract_blocks(doc)]


# -- setups: fixtures a block asks for with <!-- doctest: setup NAME --> ------------------
def _fake_benchmark(root: Path, benchmark: str, video_dir: Path | None = None) -> None:
    """``root``: a copy of the benchmark's fixture annotations (tests/fixtures), with a tiny
    real video for every id of every split under ``video_dir`` (default ``root/videos``)."""
    from helpers_video import index_frames, write_video

    from vop.data.benchmarks import get_reader

    fixture = {"msrvtt-9k": "msrvtt", "msrvtt-7k": "msrvtt"}.get(benchmark, benchmark)
    shutil.copytree(REPO / "tests" / "fixtures" / fixture, root, dirs_exist_ok=True)
    reader = get_reader(benchmark)
    ids = {v for split in reader.splits for v in reader.annotations(root, split).video_ids}
    for video_id in sorted(ids):
        path = (video_dir or root / "videos") / (reader.video_names(video_id)[0] + ".mp4")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, index_frames(6, 16, 16), fps=6)


def setup_benchmarks(work: Path) -> None:
    """data/msrvtt, data/msvd, data/didemo, data/activitynet and data/lsmdc in the real file
    formats (a few videos each); LSMDC's videos in disk2/lsmdc (docs/data.md's video_dir=)."""
    for benchmark in ("msrvtt-9k", "msvd", "didemo", "activitynet"):
        _fake_benchmark(work / "data" / benchmark.split("-")[0], benchmark)
    _fake_benchmark(work / "data" / "lsmdc", "lsmdc", video_dir=work / "disk2" / "lsmdc")


def setup_indexes(work: Path) -> None:
    """Two search indexes of one small collection (videos/) by two tiny vop-fc checkpoints
    on one backbone: idx/msrvtt-vop-fc and idx/didemo-vop-fc."""
    from helpers_video import index_frames, write_video

    import vop
    from vop.checkpoint import save_checkpoint
    from vop.search.encode import EncodeConfig, encode_collection
    from vop.search.method import load_method

    for i in range(3):
        (work / "videos").mkdir(exist_ok=True)
        frames = index_frames(8, 32, 32) + 3 * i  # [8, 32, 32, 3]: three distinct clips
        write_video(work / "videos" / f"clip{i}.mp4", frames[::-1] if i == 1 else frames)
    for name in ("msrvtt", "didemo"):
        ckpt = work / "ckpt" / f"{name}-vop-fc"
        save_checkpoint(ckpt, vop.create("vop-fc", "tiny"), backbone_source="tiny")
        model, identity = load_method(ckpt)
        encode_collection(work / "videos", work / "idx" / f"{name}-vop-fc", model, identity,
                          EncodeConfig(batch_size=3, progress=False))


SETUPS = {"benchmarks": setup_benchmarks, "indexes": setup_indexes}


# -- running ------------------------------------------------------------------------------
def _shim(folder: Path, name: str, command: str) -> None:
    (folder / name).write_text(f"#!/bin/sh\nexec {command} \"$@\"\n")
    (folder / name).chmod(0o755)


class DocRun:
    """One markdown file's working dir and environment, and its blocks' outcomes so far."""

    def __init__(self, work: Path):
        self.work = work / "work"
        self.work.mkdir()
        bin_dir = work / "bin"
        bin_dir.mkdir()
        py = shlex.quote(sys.executable)
        for name, command in {"python": py, "python3": py, "vop": f"{py} -m vop.cli",
                              "torchrun": f"{py} -m torch.distributed.run"}.items():
            _shim(bin_dir, name, command)
        home = self.work / "home"
        home.mkdir()
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": str(REPO / "src"), "HOME": str(home),
                    "XDG_CACHE_HOME": str(home / ".cache"), "VOP_CACHE": str(home / ".cache" / "vop"),
                    "VOP_DEMO_DIR": str(home / ".cache" / "vop" / "demo"), "VOP_OFFLINE": "1",
                    "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.log_dir = work / "logs"
        self.log_dir.mkdir()
        self.outcomes: dict[int, str | None] = {}  # block line -> None (passed) or the failure

    def run(self, block: Block, marks: dict) -> str | None:
        """Run ``block``; None when it passed, else what went wrong (with its output)."""
        for name in marks["setup"]:
            SETUPS[name](self.work)
        argv = ["bash", "-euo", "pipefail", "-c", block.source] if block.language == "bash" else \
            [sys.executable, "-c", block.source]
        log = self.log_dir / f"{block.line}.log"
        started = time.monotonic()
        with open(log, "wb") as out:
            # A session of its own: whatever the block leaves running is killed with it.
            proc = subprocess.Popen(argv, cwd=self.work, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=marks["timeout"])
            except subprocess.TimeoutExpired:
                code = None
            finally:
                _kill_session(proc.pid)
                proc.wait()
        took = time.monotonic() - started
        if code == 0:
            return None
        text = log.read_text(errors="replace")[-4000:]
        what = f"timed out after {marks['timeout']:.0f} s" if code is None else f"exit status {code}"
        return f"{block.id} ({block.language}) {what} after {took:.1f} s in {self.work}; output:\n{text}"


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (the block's shell and whatever it started,
    including jobs that ``set -m`` moved to process groups of their own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGKILL)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)"
            if int(fields[3]) == sid:  # state ppid pgrp session ...
                os.kill(int(stat.parent.name), signal.SIGKILL)


@pytest.fixture(scope="session")
def doc_runs(tmp_path_factory):
    runs: dict[Path, DocRun] = {}

    def get(path: Path) -> DocRun:
        if path not in runs:
            runs[path] = DocRun(tmp_path_factory.mktemp(path.stem))
        return runs[path]

    return get


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block: Block, doc_runs):
    marks = block.parsed_marks()
    if marks["skip"] is not None:
        problems = static_problems(block)
        assert not problems, f"{block.id} (skipped: {marks['skip']}) does not match the code:\n" + "\n".join(problems)
        pytest.skip(f"{block.id}: {marks['skip']}")
    run = doc_runs(block.path)
    for earlier in [b for b in BLOCKS if b.path == block.path and b.line < block.line]:
        earlier_marks = earlier.parsed_marks()
        if earlier_marks["skip"] is None and earlier.line not in run.outcomes:
            run.outcomes[earlier.line] = run.run(earlier, earlier_marks)
        if run.outcomes.get(earlier.line):
            pytest.fail(f"{block.id} not run: it follows {earlier.id}, which failed:\n{run.outcomes[earlier.line]}")
    run.outcomes[block.line] = run.run(block, marks)
    if run.outcomes[block.line]:
        pytest.fail(run.outcomes[block.line], pytrace=False)


# -- checks of skipped blocks, without running them ----------------------------------------
_REPO_PATH = re.compile(r"^(?:benchmarks|tests|scripts|src|configs|docs)/[\w./-]+\.(?:py|sh|yaml|md)$")


def _commands(source: str) -> list[list[str]]:
    """The simple commands of a bash block: continuations joined, comments dropped, split at
    ``&& || ; |`` and ``&``; leading ``VAR=value`` assignments removed."""
    text = source.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token and set(token) <= set(";&|"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    out = []
    for tokens in commands:
        while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):
            tokens = tokens[1:]
        if tokens and tokens[0] in ("export",):
            continue
        if tokens:
            out.append(tokens)
    return out


def _vop_arguments(tokens: list[str]) -> list[str] | None:
    if tokens[0] == "vop":
        return tokens[1:]
    if "-m" in tokens and tokens[0] in ("torchrun", "python", "python3"):
        i = tokens.index("-m")
        if tokens[i + 1:i + 2] == ["vop.cli"]:
            return tokens[i + 2:]
        if tokens[i + 1:i + 2] == ["torch.distributed.run"] and "vop.cli" in tokens[i + 2:]:
            return tokens[tokens.index("vop.cli") + 1:]
    if tokens[0] == "torchrun" and "vop.cli" in tokens:
        return tokens[tokens.index("vop.cli") + 1:]
    return None


def static_problems(block: Block) -> list[str]:
    """What in a block that is not run already disagrees with the code."""
    problems = []
    if block.language == "python":
        try:
            tree = ast.parse(block.source)
        except SyntaxError as exc:
            return [f"python does not parse: {exc}"]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vop":
                try:
                    module = importlib.import_module(node.module)
                except ImportError as exc:
                    problems.append(f"line {node.lineno}: {exc}")
                    continue
                problems += [f"line {node.lineno}: {node.module} has no {a.name!r}" for a in node.names
                             if not hasattr(module, a.name)
                             and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "vop" and importlib.util.find_spec(a.name) is None:
                        problems.append(f"line {node.lineno}: no module {a.name}")
        return problems
    from vop.cli import build_parser

    for tokens in _commands(block.source):
        problems += [f"{' '.join(tokens)}: no file {t} in the repository" for t in tokens
                     if _REPO_PATH.match(t) and not (REPO / t).exists()]
        args = _vop_arguments(tokens)
        if args is None:
            continue
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parsed = build_parser().parse_args(args)
        except SystemExit as exc:
            if exc.code:
                problems.append(f"vop {' '.join(args)}: {err.getvalue().strip().splitlines()[-1]}")
            continue
        if parsed.command == "train":
            from vop.train.config import load_train_config

            try:
                load_train_config(parsed.config, parsed.overrides, data=parsed.data, method=parsed.method)
            except (ValueError, OSError) as exc:
                problems.append(f"vop {' '.join(args)}: {exc}")
    return problems


# -- the harness itself ---------------------------------------------------------------------
def test_every_doc_has_been_read():
    assert (REPO / "README.md") in DOCS and len(DOCS) > 3
    assert any(b.path.name == "tutorial.md" for b in BLOCKS), "docs/tutorial.md has no runnable block"


def test_extract_marks_and_languages(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("text\n<!-- doctest: setup benchmarks -->\n<!-- doctest: timeout 5 -->\n```bash\necho hi\n```\n"
                   "```text\nnot run\n```\n- item:\n  ```python\n  print(1)\n  ```\n"
                   "<!-- doctest: skip (needs a GPU) -->\n\n```bash\nnvidia-smi\n```\n")
    blocks = extract_blocks(doc)
    assert [(b.line, b.language, b.source) for b in blocks] == [
        (4, "bash", "echo hi\n"), (11, "python", "print(1)\n"), (16, "bash", "nvidia-smi\n")]
    assert blocks[0].parsed_marks() == {"skip": None, "setup": ["benchmarks"], "timeout": 5.0}
    assert blocks[2].parsed_marks()["skip"] is None  # a blank line separates the mark from the fence
    for bad in ("skip", "skip needs a GPU", "setup nothing", "timeout soon", "run twice"):
        with pytest.raises(ValueError, match="doctest"):
            Block(doc, 1, "bash", "", [bad]).parsed_marks()


def test_static_checks_catch_what_rots():
    block = Block(REPO / "x.md", 1, "bash", "")
    block.source = ("vop train --data msrvtt-9k --method vop --set optim.nonsense=1\n"
                    "torchrun --nproc_per_node 2 -m vop.cli eval --checkpont x \\\n  --json\n"
                    "python benchmarks/no_such_benchmark.py --quick  # a comment\n"
                    "X=1 vop serve idx --port 8000 && vop weights list\n")
    problems = static_problems(block)
    assert len(problems) == 3, problems
    assert "optim.nonsense" in problems[0] and "--checkpoint" in problems[1] and "no_such_benchmark" in problems[2]
    block.source = "vop train --data msrvtt-9k --method vop-fc --set backbone=ViT-B-32:openai --set data.root=/d\n"
    assert static_problems(block) == []
    py = Block(REPO / "x.md", 1, "python", "from vop.data.benchmarks import load_split, no_such_name\nimport vop.nope\n")
    assert [p.split(":")[0] for p in static_problems(py)] == ["line 1", "line 2"]


def test_a_failing_block_fails_and_leaves_nothing_running(tmp_path):
    run = DocRun(tmp_path)
    ok = Block(tmp_path / "d.md", 3, "bash", "vop --version > version.txt\n")
    assert run.run(ok, ok.parsed_marks()) is None
    assert (run.work / "version.txt").read_text().startswith("vop ")
    bad = Block(tmp_path / "d.md", 9, "bash", "sleep 30 &\necho $! > pid\nfalse\necho never\n")
    message = run.run(bad, bad.parsed_marks())
    assert "d.md:9" in message and "exit status 1" in message
    pid = int((run.work / "pid").read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    slow = Block(tmp_path / "d.md", 12, "python", "import time\ntime.sleep(30)\n", ["timeout 1"])
    assert "timed out after 1 s" in run.run(slow, slow.parsed_marks())
