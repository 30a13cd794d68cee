"""The upstream world: still images of coloured shapes with captions, on which a tiny
CLIP is pretrained. It is an indexable, practically endless dataset: item ``i`` is a pure
function of ``(seed, i)`` (a counter-based hash, no sequential RNG state), so training can
stream millions of distinct images from ``[0, HELD_OUT_START)`` and evaluation draws a
disjoint held-out set from ``[HELD_OUT_START, 2 * HELD_OUT_START)``.

Captions name every attribute of every object (shape, colour, size, position) through
paraphrase templates; the still-image phrases they teach ("on the right", "it is blue",
"it is large", "a scene with a red circle", "the scene is empty") are the ones the
downstream captions end with, so the frozen text tower already knows the end states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import torch

from vop.data.synthetic.render import COLOURS, NUM_PARAMS, POSITIONS, SHAPES, SIZES, render_scenes

__all__ = [
    "HELD_OUT_START",
    "SINGLE_TEMPLATES",
    "TWO_OBJECT_TEMPLATES",
    "EMPTY_CAPTIONS",
    "AttributeKey",
    "UpstreamConfig",
    "UpstreamWorld",
    "caption_texts",
]

HELD_OUT_START = 10**9  # training indices lie below, held-out ones at or above
_MAX_INDEX = 2**62

# Every template names shape, colour, size and position.
SINGLE_TEMPLATES: tuple[str, ...] = (
    "a scene with a {size} {colour} {shape} {position}",
    "a {colour} {shape} {position}, it is {size}",
    "a {size} {colour} {shape} {position}",
    "a {size} {shape} {position}, it is {colour}",
    "there is a {size} {colour} {shape} {position}",
    "the scene has a {size} {colour} {shape} {position}",
    "{position} there is a {size} {colour} {shape}",
)
TWO_OBJECT_TEMPLATES: tuple[str, ...] = (
    "a scene with a {a} and a {b}",
    "there is a {a} and a {b}",
)
_OBJECT_PHRASE = "{size} {colour} {shape} {position}"
EMPTY_CAPTIONS: tuple[str, ...] = ("the scene is empty", "an empty scene", "there is nothing in the scene")

# (shape, colour, size, position) per object; () for an empty scene, objects sorted for two.
AttributeKey = tuple[tuple[str, str, str, str], ...]

_COLOUR_NAMES = tuple(COLOURS)
_SIZE_NAMES = tuple(SIZES)
_POSITION_NAMES = tuple(POSITIONS)
_COLOUR_RGB = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float32)  # [C, 3]
_SIZE_FRAC = np.array([SIZES[s] for s in _SIZE_NAMES], dtype=np.float32)
_POSITION_XY = np.array([POSITIONS[p] for p in _POSITION_NAMES], dtype=np.float32)  # [P, 2]

# Hash streams: one independent uniform per (index, stream).
_S_EMPTY, _S_TWO, _S_TEMPLATE, _S_ORDER = 0, 1, 2, 3
_S_OBJECT = 8  # object k uses streams _S_OBJECT + 8 k + (0..6)


@dataclass(frozen=True)
class UpstreamConfig:
    """How the upstream image-caption world is drawn."""

    seed: int = 0  # world identity: same seed, same item i
    image_size: int = 64  # side of the square images in pixels
    empty_prob: float = 0.05  # share of empty scenes ("the scene is empty")
    two_object_prob: float = 0.0  # share of two-object scenes among non-empty ones
    jitter: float = 0.03  # position jitter (fraction of the side); radius varies by +-10 %

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        for name in ("empty_prob", "two_object_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.jitter <= 0.1:
            raise ValueError(f"jitter must be in [0, 0.1], got {self.jitter}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UpstreamConfig":
        return cls(**d)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, indices: np.ndarray, stream: int) -> np.ndarray:
    """``[N]`` float64 uniforms in [0, 1), a pure function of (seed, index, stream)."""
    base = _mix64(np.array([seed], dtype=np.uint64))[0]
    x = _mix64(indices.astype(np.uint64) ^ base)
    x = _mix64(x + np.uint64((stream * 0xD1B54A32D192ED03) % 2**64))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _choice(u: np.ndarray, n: int) -> np.ndarray:
    return np.minimum((u * n).astype(np.int64), n - 1)


class UpstreamWorld:
    """Procedural images of coloured shapes with captions.

    ``world[i]`` is ``(image [H, W, 3] uint8, caption, key)``; :meth:`batch` draws many at
    once, vectorised. There is deliberately no ``__len__`` (a default sampler would try to
    permute a billion indices): use :meth:`sample` for training and :meth:`held_out` for
    evaluation.
    """

    def __init__(
        self,
        seed: int = 0,
        image_size: int = 64,
        empty_prob: float = 0.05,
        two_object_prob: float = 0.0,
        jitter: float = 0.03,
    ):
        self.config = UpstreamConfig(seed, image_size, empty_prob, two_object_prob, jitter)

    @classmethod
    def from_config(cls, config: UpstreamConfig) -> "UpstreamWorld":
        return cls(**config.to_dict())

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, AttributeKey]:
        images, captions, keys = self.batch([index])
        return images[0], captions[0], keys[0]

    def sample(
        self, n: int, generator: torch.Generator | None = None, *, start: int | None = None
    ) -> tuple[torch.Tensor, list[str], list[AttributeKey]]:
        """``n`` items: indices ``start .. start + n - 1`` if ``start`` is given, else ``n``
        training indices drawn uniformly from ``[0, HELD_OUT_START)`` with ``generator``."""
        if start is not None:
            return self.batch(range(start, start + n))
        return self.batch(self.sample_indices(n, generator))

    @staticmethod
    def sample_indices(n: int, generator: torch.Generator | None = None) -> list[int]:
        """``n`` training indices, uniform in ``[0, HELD_OUT_START)``."""
        return torch.randint(0, HELD_OUT_START, (n,), generator=generator).tolist()

    def held_out(self, n: int, start: int = 0) -> tuple[torch.Tensor, list[str], list[AttributeKey]]:
        """Items ``HELD_OUT_START + start ..``: never produced by :meth:`sample` with a generator."""
        return self.batch(range(HELD_OUT_START + start, HELD_OUT_START + start + n))

    def batch(self, indices: Iterable[int]) -> tuple[torch.Tensor, list[str], list[AttributeKey]]:
        """Items at ``indices``: images ``[N, H, W, 3]`` uint8, captions, attribute keys."""
        idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= _MAX_INDEX):
            raise IndexError(f"indices must be in [0, 2**62), got {idx.min()}..{idx.max()}")
        cfg = self.config
        u = lambda stream: _uniform(cfg.seed, idx, stream)  # noqa: E731

        n = idx.size
        empty = u(_S_EMPTY) < cfg.empty_prob
        two = (u(_S_TWO) < cfg.two_object_prob) & ~empty
        shape = np.empty((n, 2), dtype=np.int64)
        colour = np.empty((n, 2), dtype=np.int64)
        size = np.empty((n, 2), dtype=np.int64)
        pos = np.empty((n, 2), dtype=np.int64)
        params = np.zeros((n, 2, NUM_PARAMS), dtype=np.float32)
        for k in range(2):
            s0 = _S_OBJECT + 8 * k
            shape[:, k] = _choice(u(s0), len(SHAPES))
            colour[:, k] = _choice(u(s0 + 1), len(_COLOUR_NAMES))
            size[:, k] = _choice(u(s0 + 2), len(_SIZE_NAMES))
            if k == 0:
                pos[:, k] = _choice(u(s0 + 3), len(_POSITION_NAMES))
            else:  # a different position from the first object
                step = 1 + _choice(u(s0 + 3), len(_POSITION_NAMES) - 1)
                pos[:, k] = (pos[:, 0] + step) % len(_POSITION_NAMES)
            params[:, k, 0:3] = _COLOUR_RGB[colour[:, k]]
            params[:, k, 3] = _POSITION_XY[pos[:, k], 0] + (2 * u(s0 + 4) - 1) * cfg.jitter
            params[:, k, 4] = _POSITION_XY[pos[:, k], 1] + (2 * u(s0 + 5) - 1) * cfg.jitter
            params[:, k, 5] = _SIZE_FRAC[size[:, k]] * (0.9 + 0.2 * u(s0 + 6))
        params[:, 0, 6] = np.where(empty, 0.0, 1.0)
        params[:, 1, 6] = np.where(two, 1.0, 0.0)
        shape_ids = np.where(params[..., 6] > 0, shape, -1)

        images = render_scenes(torch.from_numpy(shape_ids), torch.from_numpy(params), cfg.image_size)

        template_u = u(_S_TEMPLATE)
        order = u(_S_ORDER) < 0.5
        captions: list[str] = []
        keys: list[AttributeKey] = []
        for i in range(n):
            objs = [
                (SHAPES[shape[i, k]], _COLOUR_NAMES[colour[i, k]], _SIZE_NAMES[size[i, k]], _POSITION_NAMES[pos[i, k]])
                for k in range(2 if two[i] else (0 if empty[i] else 1))
            ]
            if not objs:
                captions.append(EMPTY_CAPTIONS[int(template_u[i] * len(EMPTY_CAPTIONS))])
            elif len(objs) == 1:
                captions.append(_format_single(SINGLE_TEMPLATES[int(template_u[i] * len(SINGLE_TEMPLATES))], objs[0]))
            else:
                a, b = (objs[1], objs[0]) if order[i] else (objs[0], objs[1])
                t = TWO_OBJECT_TEMPLATES[int(template_u[i] * len(TWO_OBJECT_TEMPLATES))]
                captions.append(t.format(a=_format_single(_OBJECT_PHRASE, a), b=_format_single(_OBJECT_PHRASE, b)))
            keys.append(tuple(sorted(objs)))
        return images, captions, keys


def _format_single(template: str, obj: tuple[str, str, str, str]) -> str:
    shape, colour, size, position = obj
    return template.format(shape=shape, colour=colour, size=size, position=position)


def caption_texts() -> list[str]:
    """Every upstream caption template filled with every attribute value (one object), the
    two-object templates once, and the empty captions: the upstream word list."""
    texts = [
        _format_single(t, (s, c, z, p))
        for t in SINGLE_TEMPLATES
        for s in SHAPES
        for c in _COLOUR_NAMES
        for z in _SIZE_NAMES
        for p in _POSITION_NAMES
    ]
    a = _format_single(_OBJECT_PHRASE, (SHAPES[0], _COLOUR_NAMES[0], _SIZE_NAMES[0], _POSITION_NAMES[0]))
    b = _format_single(_OBJECT_PHRASE, (SHAPES[1], _COLOUR_NAMES[1], _SIZE_NAMES[1], _POSITION_NAMES[1]))
    texts += [t.format(a=a, b=b) for t in TWO_OBJECT_TEMPLATES]
    texts += list(EMPTY_CAPTIONS)
    return texts
