"""Shared pieces of the performance benchmarks (``train_step.py``, ``encode.py``,
``scaling.py``): the machine description, interleaved timing, memory readings, the
symmetric InfoNCE loss, synthetic inputs and markdown tables.

Every benchmark reports a figure as a ratio against a baseline measured in the same
process: the candidates and the baseline run in alternation (A, base, B, base, ... with
the order rotated every repetition), and the medians are compared. On a shared machine
the absolute times drift with the neighbours' load; the ratios drift much less, and
single-threaded CPU runs are timed in CPU seconds of the process, which leave out the
time the scheduler gave to other jobs.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

MIB = 1024**2
EOT = 49407  # CLIP's end-of-text id: the largest id, which is where the text is read out
SOT = 49406


# -- the machine -------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        match = re.search(r"Model name:\s*(.+)", out)
        if match:
            return match.group(1).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def describe_machine(device: torch.device) -> str:
    """One line: the accelerator or the CPU (model, cores, bf16 matrix instructions)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; "
                f"torch {torch.__version__}")
    flags = cpu_flags()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
            f"bf16 instructions: {', '.join(bf16) or 'none'}; torch {torch.__version__}")


# -- timing ------------------------------------------------------------------------------
def start(args, device: str | None = None) -> torch.device:
    """A benchmark's common start: ``--threads`` applied (0: torch's default), the device
    (``device``, else ``args.device``) resolved, and the machine and clock printed."""
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    resolved = torch.device(device or args.device)
    print(f"# machine: {describe_machine(resolved)}; {default_clock(resolved)} seconds")
    return resolved


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_clock(device: torch.device) -> str:
    """``"cpu"`` (CPU seconds of this process) for single-threaded CPU runs: it leaves out
    the time the scheduler gave to other jobs, so it is the figure to trust on a shared
    machine; ``"wall"`` otherwise (GPU runs, and multi-threaded CPU runs, where the
    threads' spin-waiting would count as CPU time)."""
    return "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"


def interleaved(candidates: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                device: torch.device = torch.device("cpu"), clock: str | None = None) -> dict[str, list[float]]:
    """Seconds per call of each candidate (``clock``: ``"wall"`` or ``"cpu"``; default
    :func:`default_clock`), measured in alternation.

    Every repetition runs each candidate once, in an order rotated by one each time, so
    that no candidate always follows the same neighbour (cache state, allocator state,
    frequency drift). ``warmup`` untimed rounds come first.
    """
    timer = time.process_time if (clock or default_clock(device)) == "cpu" else time.perf_counter
    names = list(candidates)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            sync(device)
            t0 = timer()
            candidates[name]()
            sync(device)
            if r >= warmup:
                times[name].append(timer() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


# -- memory ------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Current resident set size (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (``VmHWM``; Linux >= 4.0).
    Returns False where that is not possible (then the peak covers the whole process)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """``VmHWM``: the largest RSS since the process started or the last reset."""
    with open("/proc/self/status") as f:
        match = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    if match is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return int(match.group(1)) * 1024


# Child processes that measure memory start with this environment: glibc then serves
# every allocation above 64 KiB with its own mmap and unmaps it on free, so the RSS
# follows the live tensors instead of keeping freed heap pages (and the dynamic mmap
# threshold cannot move between runs).
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def tune_glibc_malloc() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel.

    By default a tensor of more than a few MiB is served by a fresh ``mmap`` and unmapped
    when freed, so every new activation of that size is paid again in page faults (the
    kernel zeroes each page on first touch); on the CPU that costs a large share of a
    bf16 forward. Raising the mmap and trim thresholds keeps such buffers in the heap.
    The price: the process holds on to its peak memory. Returns False where this is not
    glibc. The same effect from outside: ``MALLOC_MMAP_THRESHOLD_=1073741824
    MALLOC_TRIM_THRESHOLD_=2147483647`` (or an allocator such as jemalloc via LD_PRELOAD).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


# -- model pieces ------------------------------------------------------------------------
def info_nce(video: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching pairs: video ``[B, D]``, text ``[B, D]``."""
    logits = scale * text.float() @ video.float().t()  # [B (texts), B (videos)]
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def fake_ids(n: int, length: int, words: int = 12, generator: torch.Generator | None = None) -> torch.Tensor:
    """Token ids ``[n, length]`` shaped like tokenised captions: SOT, ``words`` word ids,
    EOT, zero padding (the cost of the text tower does not depend on the words)."""
    words = min(words, length - 2)
    ids = torch.zeros(n, length, dtype=torch.long)
    ids[:, 0] = SOT
    ids[:, 1:1 + words] = torch.randint(1, 49000, (n, words), generator=generator)
    ids[:, 1 + words] = EOT
    return ids


def fake_frames(batch: int, frames: int, resolution: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Normalised random pixels ``[batch, frames, 3, R, R]``."""
    return torch.randn(batch, frames, 3, resolution, resolution, generator=generator)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if torch.is_tensor(t))


# -- output ------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def saved_bytes(fn, params) -> tuple[int, object]:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs, not
    counting the storages of ``params`` (held anyway), and ``fn``'s result."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    held = {q.untyped_storage().data_ptr() for q in params}
    return sum(n for ptr, n in seen.items() if ptr not in held), out
