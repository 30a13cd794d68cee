"""The downstream world: short videos of one event each, captioned so that only the
order of the frames tells a video from its time reversal.

Every event has a reversal (move right <-> move left, grow <-> shrink, appear <->
disappear, colour A->B <-> B->A, A replaced by B <-> B replaced by A), and every caption
ends in a still-image phrase the upstream captions teach, describing the *end* state:
"a red circle moves and ends up on the right", "a square changes color and ends up blue".
A reversed video's frames are exactly the original's in reverse order, so a model that
mean-pools frame embeddings scores a caption and its reversal's caption alike; only a
model that sees order can tell them apart.

Videos are not stored: each is a small numeric description (two object slots with a start
and an end state, and a transition window in time) that :class:`SyntheticVideoSource`
renders at whatever frame count and time the reader asks for.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from vop.data.synthetic.render import COLOURS, NUM_PARAMS, POSITIONS, SHAPES, SIZES, render_scenes
from vop.data.types import RetrievalSplit

__all__ = [
    "FAMILIES",
    "SPLITS",
    "DEFAULT_HELD_OUT",
    "CAPTION_TEMPLATES",
    "VideoInfo",
    "DownstreamConfig",
    "DownstreamWorld",
    "SyntheticVideoSource",
    "caption_texts",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}

# An event family and its time reversal form one pair of videos.
FAMILIES: tuple[str, ...] = (
    "move-horizontal",  # move-left <-> move-right
    "move-vertical",  # move-up <-> move-down
    "color-change",  # colour A -> B <-> B -> A
    "size-change",  # grow <-> shrink
    "appear-disappear",  # appear <-> disappear
    "replace",  # shape A replaced by B <-> B replaced by A
)

# (shape, colour) combinations never shown in the train split; one per shape, each colour
# at most once, so every shape keeps five training colours.
DEFAULT_HELD_OUT: tuple[tuple[str, str], ...] = (
    ("circle", "purple"),
    ("square", "yellow"),
    ("triangle", "white"),
    ("cross", "green"),
)

# The deciding word (the end state) always comes last; template 0 is the fixed caption of
# val and test, train draws one per caption.
CAPTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "move": (
        "a {colour} {shape} moves and ends up {position}",
        "the {colour} {shape} slides across and ends up {position}",
        "a {colour} {shape} travels and ends up {position}",
    ),
    "color-change": (
        "a {shape} changes color and ends up {colour}",
        "the {shape} changes its color and ends up {colour}",
        "a {shape} switches color and ends up {colour}",
    ),
    "size-change": (
        "a {colour} {shape} changes size and ends up {size}",
        "the {colour} {shape} changes its size and ends up {size}",
        "a {colour} {shape} is resized and ends up {size}",
    ),
    "appear": (
        "a {colour} {shape} appears and the scene ends up with a {colour} {shape}",
        "a {colour} {shape} shows up and the scene ends up with a {colour} {shape}",
        "a {colour} {shape} comes into view and the scene ends up with a {colour} {shape}",
    ),
    "disappear": (
        "a {colour} {shape} disappears and the scene ends up empty",
        "a {colour} {shape} vanishes and the scene ends up empty",
        "a {colour} {shape} goes away and the scene ends up empty",
    ),
    "replace": (
        "a shape is replaced and the scene ends up with a {colour} {shape}",
        "one shape is swapped for another and the scene ends up with a {colour} {shape}",
        "a shape turns into another and the scene ends up with a {colour} {shape}",
    ),
}
_KIND_TEMPLATES = {
    "move-left": "move",
    "move-right": "move",
    "move-up": "move",
    "move-down": "move",
    "color-change": "color-change",
    "grow": "size-change",
    "shrink": "size-change",
    "appear": "appear",
    "disappear": "disappear",
    "replace": "replace",
}
_MAX_CAPTIONS_PER_VIDEO = min(len(t) for t in CAPTION_TEMPLATES.values())

_K = 2  # object slots per video (replace needs two)
_RANDOM_TIME_JITTER = 0.25  # "random" mode: +- this fraction of a segment around its middle


@dataclass(frozen=True)
class VideoInfo:
    """What one video of a split shows, as the captions and evaluation see it."""

    split: str
    index: int
    kind: str  # the event as seen in this video: "move-right", "grow", "appear", ...
    family: str  # its reversal family, one of FAMILIES
    subject: str  # the objects, readable: "red circle", "square red->blue", "red circle->blue square"
    caption_args: tuple[tuple[str, str], ...]  # fills the kind's caption templates
    reversal: int  # index of the time-reversed video in the same split
    unseen: bool  # shows a (shape, colour) combination held out of the train split
    combos: tuple[tuple[str, str], ...]  # every (shape, colour) combination shown

    def caption(self, template: int = 0) -> str:
        """The caption in paraphrase ``template`` (0 = the fixed evaluation caption)."""
        return CAPTION_TEMPLATES[_KIND_TEMPLATES[self.kind]][template].format(**dict(self.caption_args))

    def paraphrases(self) -> tuple[str, ...]:
        n = len(CAPTION_TEMPLATES[_KIND_TEMPLATES[self.kind]])
        return tuple(self.caption(t) for t in range(n))


@dataclass(frozen=True)
class DownstreamConfig:
    """How the downstream video-caption world and its splits are drawn."""

    seed: int = 0  # world identity: same seed, same splits and videos
    image_size: int = 64  # frame side in pixels
    num_frames: int = 12  # default frames per video when a reader does not say
    train_pairs: int = 2000  # reversal pairs in train (2 videos each)
    val_pairs: int = 150  # reversal pairs in val
    test_pairs: int = 300  # reversal pairs in test
    unseen_fraction: float = 0.5  # share of val/test pairs showing a held-out combination
    held_out: tuple[tuple[str, str], ...] = DEFAULT_HELD_OUT  # (shape, colour) never in train
    families: tuple[str, ...] = FAMILIES  # event families drawn, in equal numbers
    train_captions_per_video: int = 1  # distinct paraphrases per train video
    jitter: float = 0.03  # position jitter (fraction of the side); radius varies by +-10 %

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from JSON) to tuples so the config stays hashable.
        object.__setattr__(self, "held_out", tuple(tuple(p) for p in self.held_out))
        object.__setattr__(self, "families", tuple(self.families))
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {self.num_frames}")
        for name in ("train_pairs", "val_pairs", "test_pairs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0.0 <= self.unseen_fraction <= 1.0:
            raise ValueError(f"unseen_fraction must be in [0, 1], got {self.unseen_fraction}")
        if not self.families or any(f not in FAMILIES for f in self.families):
            raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {self.families}")
        for pair in self.held_out:
            if len(pair) != 2 or pair[0] not in SHAPES or pair[1] not in COLOURS:
                raise ValueError(
                    f"held_out entries must be (shape, colour) from {SHAPES} x {tuple(COLOURS)}, got {pair}"
                )
        for s in SHAPES:
            if sum((s, c) not in self.held_out for c in COLOURS) < 2:
                raise ValueError(f"held_out leaves shape {s!r} fewer than two training colours")
        if self.unseen_fraction > 0 and not self.held_out:
            raise ValueError("unseen_fraction > 0 needs at least one held_out combination")
        if not 1 <= self.train_captions_per_video <= _MAX_CAPTIONS_PER_VIDEO:
            raise ValueError(f"train_captions_per_video must be in [1, {_MAX_CAPTIONS_PER_VIDEO}]")
        if not 0.0 <= self.jitter <= 0.1:
            raise ValueError(f"jitter must be in [0, 0.1], got {self.jitter}")

    def num_pairs(self, split: str) -> int:
        return {"train": self.train_pairs, "val": self.val_pairs, "test": self.test_pairs}[split]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DownstreamConfig":
        return cls(**d)


class SyntheticVideoSource:
    """The videos of one synthetic split, rendered on demand (a :class:`VideoSource`).

    Video ``i`` is two object slots whose parameters move linearly from a start to an end
    state inside a time window ``[ta, tb]`` of the unit interval; a reversed video reads
    the same description at time ``1 - t``. Frame ``j`` of ``F`` is taken at the middle of
    segment ``j`` (``"middle"``: ``t = (2j + 1) / 2F``, computed from integers so that a
    reversal's frames equal the original's bit for bit) or at a random point within
    +-25 % of a segment around it (``"random"``).
    """

    def __init__(
        self,
        infos: tuple[VideoInfo, ...],
        shape_ids: np.ndarray,  # [N, K] int
        start: np.ndarray,  # [N, K, 7] float32
        end: np.ndarray,  # [N, K, 7] float32
        window: np.ndarray,  # [N, 2] float32
        reversed_: np.ndarray,  # [N] bool
        image_size: int,
        num_frames: int,
    ):
        self._infos = infos
        self._shape_ids = torch.as_tensor(shape_ids, dtype=torch.long).reshape(-1, _K)
        self._start = torch.as_tensor(start, dtype=torch.float32).reshape(-1, _K, NUM_PARAMS)
        self._end = torch.as_tensor(end, dtype=torch.float32).reshape(-1, _K, NUM_PARAMS)
        self._window = torch.as_tensor(window, dtype=torch.float32).reshape(-1, 2)
        self._reversed = torch.as_tensor(reversed_, dtype=torch.bool).reshape(-1)
        self.image_size = image_size
        self.num_frames = num_frames

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, index: int) -> VideoInfo:
        return self._infos[index]

    def describe(self, index: int) -> str:
        i = self._infos[index]
        return f"{i.split}/{i.index:05d} {i.kind} {i.subject}"

    def load(
        self,
        index: int,
        num_frames: int | None = None,
        mode: str = "middle",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Frames ``[F, H, W, 3]`` uint8 of video ``index``."""
        return self.load_batch([index], num_frames, mode, generator)[0]

    def load_batch(
        self,
        indices: list[int] | torch.Tensor,
        num_frames: int | None = None,
        mode: str = "middle",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Frames ``[B, F, H, W, 3]`` uint8 of many videos, rendered in one vectorised pass."""
        f = self.num_frames if num_frames is None else int(num_frames)
        if f < 1:
            raise ValueError(f"num_frames must be positive, got {f}")
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"video index out of range 0..{n - 1}: {idx.tolist()}")
        b = idx.numel()
        t = _frame_times(b, f, mode, generator)  # [B, F]
        t = torch.where(self._reversed[idx].view(b, 1), _reverse_times(t, f, mode), t)
        ta, tb = self._window[idx, 0:1], self._window[idx, 1:2]  # [B, 1]
        frac = ((t - ta) / (tb - ta)).clamp(0.0, 1.0)  # [B, F]
        start, end = self._start[idx].unsqueeze(1), self._end[idx].unsqueeze(1)  # [B, 1, K, 7]
        params = start + (end - start) * frac.view(b, f, 1, 1)  # [B, F, K, 7]
        shape_ids = self._shape_ids[idx].unsqueeze(1).expand(b, f, _K)  # [B, F, K]
        frames = render_scenes(shape_ids.reshape(b * f, _K), params.reshape(b * f, _K, NUM_PARAMS), self.image_size)
        return frames.view(b, f, self.image_size, self.image_size, 3)


def _frame_times(b: int, f: int, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """``[B, F]`` float32 sample times in (0, 1) for forward playback."""
    if mode == "middle":
        num = torch.arange(f, dtype=torch.float64) * 2 + 1
        return (num / (2 * f)).float().expand(b, f)
    if mode == "random":
        offset = (torch.rand(b, f, generator=generator, dtype=torch.float64) * 2 - 1) * _RANDOM_TIME_JITTER
        return ((torch.arange(f, dtype=torch.float64) + 0.5 + offset) / f).float()
    raise ValueError(f"mode must be 'middle' or 'random', got {mode!r}")


def _reverse_times(t: torch.Tensor, f: int, mode: str) -> torch.Tensor:
    if mode == "middle":
        # (2F - (2j + 1)) / 2F from integers: exactly frame F-1-j's time, no rounding.
        num = 2 * f - (torch.arange(f, dtype=torch.float64) * 2 + 1)
        return (num / (2 * f)).float().expand_as(t)
    return 1.0 - t


class DownstreamWorld:
    """Procedural text-video retrieval splits whose captions turn on temporal order.

    ``split(name)`` builds (once, deterministically from the seed) a
    :class:`~vop.data.types.RetrievalSplit` of reversal pairs: videos ``2p`` and ``2p + 1``
    are each other's time reversal; :meth:`reversal_pairs` lists them with their captions.
    """

    def __init__(
        self,
        seed: int = 0,
        image_size: int = 64,
        num_frames: int = 12,
        *,
        train_pairs: int = 2000,
        val_pairs: int = 150,
        test_pairs: int = 300,
        unseen_fraction: float = 0.5,
        held_out: tuple[tuple[str, str], ...] = DEFAULT_HELD_OUT,
        families: tuple[str, ...] = FAMILIES,
        train_captions_per_video: int = 1,
        jitter: float = 0.03,
    ):
        self.config = DownstreamConfig(
            seed=seed,
            image_size=image_size,
            num_frames=num_frames,
            train_pairs=train_pairs,
            val_pairs=val_pairs,
            test_pairs=test_pairs,
            unseen_fraction=unseen_fraction,
            held_out=held_out,
            families=families,
            train_captions_per_video=train_captions_per_video,
            jitter=jitter,
        )
        self._splits: dict[str, RetrievalSplit] = {}
        self._pairs: dict[str, list[tuple[int, int, int, int]]] = {}

    @classmethod
    def from_config(cls, config: DownstreamConfig) -> "DownstreamWorld":
        d = config.to_dict()
        return cls(d.pop("seed"), d.pop("image_size"), d.pop("num_frames"), **d)

    def split(self, name: str) -> RetrievalSplit:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        if name not in self._splits:
            self._splits[name], self._pairs[name] = _build_split(self.config, name)
        return self._splits[name]

    def reversal_pairs(self, name: str) -> list[tuple[int, int, int, int]]:
        """``(video_a, caption_a, video_b, caption_b)`` for every pair of the split: ``b`` is
        ``a`` played backwards; the captions are each video's first caption."""
        self.split(name)
        return list(self._pairs[name])

    def video_info(self, name: str, index: int) -> VideoInfo:
        return self.split(name).source.info(index)


# --- building the splits -------------------------------------------------------------

# (axis, moves towards larger coordinates) -> (kind, end position); y grows downwards.
_MOVES = {
    ("x", True): ("move-right", "on the right"),
    ("x", False): ("move-left", "on the left"),
    ("y", True): ("move-down", "at the bottom"),
    ("y", False): ("move-up", "at the top"),
}


@dataclass
class _Pair:
    """A forward video and what its reversal shows."""

    family: str
    shape_ids: list[int] = field(default_factory=lambda: [-1] * _K)
    start: np.ndarray = field(default_factory=lambda: np.zeros((_K, NUM_PARAMS), np.float32))
    end: np.ndarray = field(default_factory=lambda: np.zeros((_K, NUM_PARAMS), np.float32))
    window: tuple[float, float] = (0.0, 1.0)
    combos: tuple[tuple[str, str], ...] = ()
    forward: tuple[str, str, dict] = ("", "", {})  # kind, subject, caption args
    backward: tuple[str, str, dict] = ("", "", {})


class _Drawer:
    """Draws the random parts of one pair from a numpy generator."""

    def __init__(self, rng: np.random.Generator, config: DownstreamConfig, unseen: bool):
        self.rng, self.jitter, self.unseen = rng, config.jitter, unseen
        self.held_out = list(config.held_out)
        self.seen = [(s, c) for s in SHAPES for c in COLOURS if (s, c) not in config.held_out]

    def pick(self, items: list):
        return items[int(self.rng.integers(len(items)))]

    def combo(self) -> tuple[str, str]:
        return self.pick(self.held_out if self.unseen else self.seen)

    def jit(self) -> float:
        return float(self.rng.uniform(-self.jitter, self.jitter))

    def place(self) -> tuple[float, float]:
        x, y = POSITIONS[self.pick(list(POSITIONS))]
        return x + self.jit(), y + self.jit()

    def scale(self) -> float:
        return float(self.rng.uniform(0.9, 1.1))

    def short_window(self) -> tuple[float, float]:
        m = float(self.rng.uniform(0.4, 0.6))
        return m - 0.05, m + 0.05

    def flip(self) -> bool:
        return bool(self.rng.integers(2))


def _state(colour: str, xy: tuple[float, float], radius: float, alpha: float) -> np.ndarray:
    return np.array([*COLOURS[colour], xy[0], xy[1], radius, alpha], dtype=np.float32)


def _sample_pair(d: _Drawer, family: str) -> _Pair:
    p = _Pair(family)
    if family in ("move-horizontal", "move-vertical"):
        s, c = d.combo()
        radius = SIZES[d.pick(list(SIZES))] * d.scale()
        axis = "x" if family == "move-horizontal" else "y"
        across = 0.5 + d.jit()
        lo, hi = POSITIONS["on the left"][0], POSITIONS["on the right"][0]  # same on y
        a, b = lo + d.jit(), hi + d.jit()
        if d.flip():
            a, b = b, a
        xy = (lambda v: (v, across)) if axis == "x" else (lambda v: (across, v))
        p.shape_ids[0] = SHAPES.index(s)
        p.start[0], p.end[0] = _state(c, xy(a), radius, 1.0), _state(c, xy(b), radius, 1.0)
        p.window = (float(d.rng.uniform(0.05, 0.25)), float(d.rng.uniform(0.75, 0.95)))
        (k_fwd, pos_fwd), (k_bwd, pos_bwd) = _MOVES[(axis, b > a)], _MOVES[(axis, a > b)]
        p.combos = ((s, c),)
        p.forward = (k_fwd, f"{c} {s}", dict(colour=c, shape=s, position=pos_fwd))
        p.backward = (k_bwd, f"{c} {s}", dict(colour=c, shape=s, position=pos_bwd))
    elif family == "color-change":
        if d.unseen:
            s, c0 = d.combo()
            c1 = d.pick([c for c in COLOURS if c != c0 and (s, c) not in d.held_out])
        else:
            s = d.pick(list(SHAPES))
            colours = [c for c in COLOURS if (s, c) not in d.held_out]
            c0 = d.pick(colours)
            c1 = d.pick([c for c in colours if c != c0])
        if d.flip():
            c0, c1 = c1, c0
        xy, radius = d.place(), SIZES[d.pick(list(SIZES))] * d.scale()
        p.shape_ids[0] = SHAPES.index(s)
        p.start[0], p.end[0] = _state(c0, xy, radius, 1.0), _state(c1, xy, radius, 1.0)
        p.window = d.short_window()
        p.combos = ((s, c0), (s, c1))
        p.forward = ("color-change", f"{s} {c0}->{c1}", dict(shape=s, colour=c1))
        p.backward = ("color-change", f"{s} {c1}->{c0}", dict(shape=s, colour=c0))
    elif family == "size-change":
        s, c = d.combo()
        xy, scale = d.place(), d.scale()
        sizes = ["small", "large"]
        if d.flip():
            sizes.reverse()
        p.shape_ids[0] = SHAPES.index(s)
        p.start[0] = _state(c, xy, SIZES[sizes[0]] * scale, 1.0)
        p.end[0] = _state(c, xy, SIZES[sizes[1]] * scale, 1.0)
        p.window = (float(d.rng.uniform(0.2, 0.35)), float(d.rng.uniform(0.65, 0.8)))
        kinds = {"large": "grow", "small": "shrink"}
        p.combos = ((s, c),)
        p.forward = (kinds[sizes[1]], f"{c} {s}", dict(colour=c, shape=s, size=sizes[1]))
        p.backward = (kinds[sizes[0]], f"{c} {s}", dict(colour=c, shape=s, size=sizes[0]))
    elif family == "appear-disappear":
        s, c = d.combo()
        xy, radius = d.place(), SIZES[d.pick(list(SIZES))] * d.scale()
        alphas = (0.0, 1.0) if d.flip() else (1.0, 0.0)
        p.shape_ids[0] = SHAPES.index(s)
        p.start[0], p.end[0] = _state(c, xy, radius, alphas[0]), _state(c, xy, radius, alphas[1])
        p.window = d.short_window()
        args = dict(colour=c, shape=s)
        appear, disappear = ("appear", f"{c} {s}", args), ("disappear", f"{c} {s}", args)
        p.combos = ((s, c),)
        p.forward, p.backward = (appear, disappear) if alphas[1] > 0 else (disappear, appear)
    elif family == "replace":
        first = d.combo()  # held out when the pair is unseen
        second = d.pick([sc for sc in d.seen if sc[0] != first[0]])
        if d.flip():
            first, second = second, first
        xy = d.place()
        for k, ((s, c), alphas) in enumerate(((first, (1.0, 0.0)), (second, (0.0, 1.0)))):
            radius = SIZES[d.pick(list(SIZES))] * d.scale()
            p.shape_ids[k] = SHAPES.index(s)
            p.start[k], p.end[k] = _state(c, xy, radius, alphas[0]), _state(c, xy, radius, alphas[1])
        p.window = d.short_window()
        (s0, c0), (s1, c1) = first, second
        p.combos = (first, second)
        p.forward = ("replace", f"{c0} {s0}->{c1} {s1}", dict(colour=c1, shape=s1))
        p.backward = ("replace", f"{c1} {s1}->{c0} {s0}", dict(colour=c0, shape=s0))
    else:  # pragma: no cover - guarded by DownstreamConfig
        raise ValueError(f"unknown family {family!r}")
    return p


def _build_split(config: DownstreamConfig, name: str) -> tuple[RetrievalSplit, list[tuple[int, int, int, int]]]:
    rng = np.random.default_rng([config.seed, _SPLIT_CODES[name]])
    n_pairs, fams = config.num_pairs(name), config.families
    families = [fams[i % len(fams)] for i in range(n_pairs)]  # equal numbers per family
    unseen = [False] * n_pairs
    if name != "train":  # per family, the first round(fraction * count) pairs show held-out combos
        for fam in fams:
            members = [i for i, f in enumerate(families) if f == fam]
            for i in members[: round(config.unseen_fraction * len(members))]:
                unseen[i] = True
    order = rng.permutation(n_pairs)
    families, unseen = [families[i] for i in order], [unseen[i] for i in order]

    infos: list[VideoInfo] = []
    shape_ids, starts, ends, windows, reversed_ = [], [], [], [], []
    for i, (fam, u) in enumerate(zip(families, unseen)):
        p = _sample_pair(_Drawer(rng, config, u), fam)
        for j, (kind, subject, args) in enumerate((p.forward, p.backward)):
            v = 2 * i + j
            infos.append(
                VideoInfo(
                    split=name,
                    index=v,
                    kind=kind,
                    family=fam,
                    subject=subject,
                    caption_args=tuple(sorted(args.items())),
                    reversal=v + 1 - 2 * j,
                    unseen=u,
                    combos=p.combos,
                )
            )
            shape_ids.append(p.shape_ids)
            starts.append(p.start)
            ends.append(p.end)
            windows.append(p.window)
            reversed_.append(bool(j))

    per_video = config.train_captions_per_video if name == "train" else 1
    captions: list[str] = []
    caption_to_video: list[int] = []
    for info in infos:
        if name == "train":
            n_templates = len(CAPTION_TEMPLATES[_KIND_TEMPLATES[info.kind]])
            templates = rng.permutation(n_templates)[:per_video].tolist()
        else:
            templates = [0]
        captions += [info.caption(t) for t in templates]
        caption_to_video += [info.index] * per_video

    n = len(infos)
    source = SyntheticVideoSource(
        tuple(infos),
        np.asarray(shape_ids, dtype=np.int64).reshape(n, _K),
        np.asarray(starts, dtype=np.float32).reshape(n, _K, NUM_PARAMS),
        np.asarray(ends, dtype=np.float32).reshape(n, _K, NUM_PARAMS),
        np.asarray(windows, dtype=np.float32).reshape(n, 2),
        np.asarray(reversed_, dtype=bool).reshape(n),
        config.image_size,
        config.num_frames,
    )
    split = RetrievalSplit(
        name=name,
        video_ids=tuple(f"{name}/{i:05d}" for i in range(n)),
        captions=tuple(captions),
        caption_to_video=tuple(caption_to_video),
        source=source,
    )
    pairs = [(2 * i, 2 * i * per_video, 2 * i + 1, (2 * i + 1) * per_video) for i in range(n_pairs)]
    return split, pairs


def caption_texts() -> list[str]:
    """Every downstream caption template filled with every attribute value."""
    fills = {
        "colour": list(COLOURS),
        "shape": list(SHAPES),
        "position": list(POSITIONS),
        "size": list(SIZES),
    }
    texts: list[str] = []
    for templates in CAPTION_TEMPLATES.values():
        for t in templates:
            keys = [k for k in fills if "{" + k + "}" in t]
            for values in itertools.product(*(fills[k] for k in keys)):
                texts.append(t.format(**dict(zip(keys, values))))
    return texts
