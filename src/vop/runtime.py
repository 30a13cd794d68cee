"""Where and how a model runs: device choice, the two precision vocabularies, and the
torch.distributed rank/world set-up. Training, evaluation, encoding and the CLI all use
these, so a device string or a precision name means the same thing everywhere.

Two different things are both loosely called "precision" in ML code; here they have
different names:

- ``precision`` (:data:`PRECISIONS`): *autocast*. The weights stay fp32; matmuls run in
  bf16/fp16 under :func:`autocast`. Used by training and evaluation.
- ``weights`` (:data:`WEIGHT_DTYPES`): a *weight cast*. The model's tensors are converted
  (``model.to(dtype)``), halving memory; used by ``vop encode`` / search, where nothing
  trains.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

# autocast: name -> the dtype matmuls run in (None: no autocast, plain fp32)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# weight casts: name -> the dtype the model's tensors are converted to
WEIGHT_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"precision (autocast) must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def check_weight_dtype(name: str) -> str:
    if name not in WEIGHT_DTYPES:
        raise ValueError(f"weights (a weight cast) must be one of {', '.join(WEIGHT_DTYPES)}, got {name!r}")
    return name


def autocast(device: torch.device | str, precision: str):
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(name: str) -> str:
    """Check that ``name`` is a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)
    without asking whether this machine has it: configs are checked with this when they are
    read (a config may be written on one machine for another); :func:`resolve_device`, at the
    start of every command, then refuses a device this machine lacks."""
    if not isinstance(name, str):
        raise ValueError(f"a device must be a string like auto, cpu, cuda or cuda:1, got {name!r}")
    if name == "auto":
        return name
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"device {name!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return name


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
    Refuses devices this torch build cannot use, with the reason."""
    if isinstance(name, torch.device):
        return name
    if check_device(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch build has no usable CUDA GPU; use --device cpu "
                         "(or device: auto), or install a CUDA build of torch")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available on this machine; use cpu")
    return device


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun launch (rank 0 of 1 otherwise)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl" | "gloo" when a process group is up

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device | str = "cpu") -> DistInfo:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE`` > 1):
    NCCL on CUDA, gloo on CPU. A plain ``python`` launch returns a single-process info."""
    import torch.distributed as dist

    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())


def current_distributed() -> DistInfo:
    """The process group already set up in this process, if any."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                        dist.get_backend())
    return DistInfo()


def setup(device: str | torch.device = "auto", threads: int | None = None) -> tuple[torch.device, DistInfo]:
    """Resolve the device, join a torchrun process group if there is one, and move each rank
    to its own GPU: the one start-up sequence of ``vop train``, ``eval`` and ``encode``."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be >= 1 (or unset for torch's default), got {threads}")
        torch.set_num_threads(threads)
    resolved = resolve_device(device)
    dist = init_distributed(resolved)  # NCCL for "auto" on a GPU too
    if dist.enabled and resolved.type == "cuda":
        resolved = torch.device("cuda", dist.local_rank)
    return resolved, dist
