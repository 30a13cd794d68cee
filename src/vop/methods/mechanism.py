"""The contract every part of a tuning method follows.

A *mechanism* is a small module that adds trainable tensors to a frozen CLIP (text
prompts, frame prompts, joint frames, adapters) or selects backbone tensors to train. A
*method* is an ordered list of mechanisms (see :mod:`vop.methods.registry`). Each
mechanism file holds three things: the module, its typed options (a frozen dataclass whose
fields are the method options it reads), and a :class:`Part` that builds the module from a
backbone and the method's options. A new mechanism is one new file; a new method made of
existing mechanisms is one registry entry.

The model finds a mechanism by its ``role`` (what it does in the forward pass) and stores
it under its ``slot`` (the attribute name, which prefixes its tensors in checkpoints:
``text_prompts.*``, ``frame_prompts.*``, ``joint.*``, ``adapters.*``, ``head.*``, ``pool_frames.*``, ``dgl.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

# text, frame, joint, hooks, backbone: VoP's mechanisms and the baselines. head: a temporal
# head between the per-frame embeddings and the pooling (CLIP4Clip). pool: a text-conditioned
# pooling that replaces the mean (X-Pool). tower: a video-level image tower and its text side
# that replace both towers' forward passes (DGL).
ROLES = ("text", "frame", "joint", "hooks", "backbone", "head", "pool", "tower")


class Mechanism(nn.Module):
    """Base class of a method's parts. Subclasses set ``slot`` and ``role``."""

    slot: str = ""  # attribute name in the model; prefix of its tensors in checkpoints
    role: str = ""  # one of ROLES: where the model's forward pass calls it

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter-name prefix (relative to this module)."""
        return {}

    def selects(self, name: str) -> bool:
        """Whether backbone tensor ``name`` trains (role ``backbone`` only)."""
        return False


@dataclass(frozen=True, kw_only=True)
class Options:
    """Base of every mechanism's options. ``__post_init__`` chains cooperatively, so a
    method's composed options run every part's validation once."""

    def __post_init__(self) -> None:
        pass


def check_at_least(obj: object, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class Part:
    """How to build one mechanism: its options class and ``build(clip, options)`` (which may
    return None when the options switch it off, e.g. zero prompts).

    ``init_order`` fixes the order in which a method's parts are *built* (and so draw their
    random initial values); the order they are listed in fixes their place in the model.
    The built-in parts keep the order of earlier releases, so a seed gives the same initial
    prompts as before."""

    name: str
    options: type[Options]
    build: Callable[..., Mechanism | None]
    init_order: int = 100
