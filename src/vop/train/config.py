"""The typed configuration of a training run, one section per concern, and how a run's
config is composed: ``vop train --data msrvtt-9k --method vop-fc`` stacks the shipped base
config, the method's recipe (from the registry), the data preset (``configs/data/``, with
its per-method table) and the user's YAML file and ``--set`` overrides. Defaults are the
paper's recipe where it gives one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vop.configio import (ConfigError, apply_overrides, configs_dir, from_dict, load_preset,
                          load_yaml, merge, to_dict)
from vop.data.config import DataConfig
from vop.eval.config import EvalConfig
from vop.methods.registry import get as get_method
from vop.methods.registry import make_config
from vop.runtime import PRECISIONS, check_device

# The data section's class under its old name (configs and code written before DataConfig).
DataSection = DataConfig
EvalSection = EvalConfig


def _at_least(section, low: int, *names: str) -> None:
    """Each named integer field of ``section`` is >= ``low``."""
    for name in names:
        value = getattr(section, name)
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


@dataclass(frozen=True)
class MethodSection:
    name: str = "vop"  # registry name (vop.methods.names())
    options: dict = field(default_factory=dict)  # MethodConfig options, e.g. {intra_layers: 8}


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-3  # peak learning rate (with --data/--method, the method's registry recipe sets it)
    weight_decay: float = 0.2  # AdamW, as in the paper
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    epochs: int = 5
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs)
    batch_size: int = 32  # global batch (all ranks together), before accumulation
    grad_accum: int = 1  # optimiser step every k batches
    warmup_ratio: float = 0.1  # linear warm-up over this share of the steps, then cosine decay
    grad_clip: float = 1.0  # max gradient norm (0: off)

    def __post_init__(self) -> None:
        _at_least(self, 1, "epochs", "batch_size", "grad_accum")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, or null to train for `epochs`, got {self.max_steps}")
        if not self.lr > 0 or not self.eps > 0:
            raise ValueError(f"lr and eps must be > 0, got lr={self.lr}, eps={self.eps}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"weight_decay and grad_clip must be >= 0 (grad_clip 0: off), got "
                             f"{self.weight_decay}, {self.grad_clip}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class RuntimeSection:
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    precision: str = "fp32"  # fp32, bf16 (autocast, CPU and GPU), fp16 (GPU, with a grad scaler)
    gradient_checkpointing: bool = False
    compile: bool = False  # run the model's forward (and so its backward) through torch.compile (docs/training.md)
    checkpoint_image_blocks: int | None = None  # with checkpointing: only the first N image blocks (None: all blocks)
    seed: int = 0
    out_dir: str = "runs/default"
    log_every: int = 10  # steps between JSONL log lines
    save_every: int = 200  # optimiser steps between `last` checkpoints (and at every epoch end)
    eval_every: int = 1  # epochs between validations
    val_every_steps: int = 0  # also validate every N optimiser steps (0: only at epoch ends)
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    threads: int | None = None  # torch CPU threads (None: torch's default)
    progress: bool = True  # progress bars
    tensorboard: bool = True  # also log to TensorBoard when it is installed

    def __post_init__(self) -> None:
        check_device(self.device)  # the name; whether this machine has it: vop.runtime.setup, first thing
        _at_least(self, 1, "log_every", "eval_every", "max_bad_steps")
        _at_least(self, 0, "save_every", "val_every_steps", "seed")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, or null for torch's default, got {self.threads}")
        if not self.out_dir:
            raise ValueError("out_dir must name a folder")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        if self.checkpoint_image_blocks is not None and self.checkpoint_image_blocks < 0:
            raise ValueError(f"checkpoint_image_blocks must be >= 0 or null (every block), got {self.checkpoint_image_blocks}")
        if self.checkpoint_image_blocks is not None and not self.gradient_checkpointing:
            raise ValueError("runtime.checkpoint_image_blocks only applies with runtime.gradient_checkpointing: true; "
                             "set both, or leave checkpoint_image_blocks out")


@dataclass(frozen=True)
class TrainConfig:
    backbone: str = "tiny-synthetic"  # name or path given to vop.backbone.load
    method: MethodSection = field(default_factory=MethodSection)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        try:  # fail before any work starts if the method or its options are wrong
            make_config(self.method.name, num_frames=self.data.num_frames, **self.method.options)
        except ValueError as exc:
            raise ConfigError(f"method: {exc}") from exc

    def method_config(self):
        return make_config(self.method.name, num_frames=self.data.num_frames, **self.method.options)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return from_dict(cls, data)


def compose(data: str | None = None, method: str | None = None) -> dict:
    """The config of ``--data DATA --method METHOD`` before the user's own settings:
    base, then the method's recipe, then the data preset and its entry for the method, then
    ``runtime.out_dir: runs/DATA/METHOD``."""
    config = load_yaml(configs_dir() / "base.yaml")
    if method is not None:
        spec = get_method(method)
        config = merge(config, spec.recipe)
        config = merge(config, {"method": {"name": method}})
    if data is not None:
        preset, table = load_preset(data)
        config = merge(config, preset)
        name = method or config.get("method", {}).get("name", "vop")
        config = merge(config, table.get(name, {}))
        config = merge(config, {"runtime": {"out_dir": f"runs/{data}/{name}"}})
    return config


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                      data: str | None = None, method: str | None = None) -> TrainConfig:
    """A run's config: :func:`compose` (when ``data`` or ``method`` is given), then the YAML
    file ``path`` (with its ``defaults:`` list), then ``key=value`` overrides.

    With a data preset, a method named in the YAML file or an override counts as
    ``method`` (its recipe, the preset's entry for it and its output folder apply)."""
    user = load_yaml(path) if path is not None else {}
    overrides = list(overrides or [])
    named = _named_method(user, overrides)
    if method is not None and named is not None and named != method:
        raise ConfigError(f"--method {method} but the config names method {named}; give one")
    if data is not None:
        method = method or named
    config = compose(data, method) if (data or method) else {}
    return TrainConfig.from_dict(apply_overrides(merge(config, user), overrides))


def _named_method(user: dict, overrides: list[str]) -> str | None:
    """The method a user's YAML settings and overrides name, if any (the last word wins)."""
    section = user.get("method")
    name = section.get("name") if isinstance(section, dict) else None
    probe = apply_overrides({}, [o for o in overrides if o.split("=", 1)[0].strip() in ("method.name", "method")])
    section = probe.get("method")
    if isinstance(section, dict) and "name" in section:
        name = section["name"]
    return name if isinstance(name, str) else None
