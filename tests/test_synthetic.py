"""The synthetic worlds: determinism, shapes, the exact-reversal property, held-out
combinations, caption/video consistency and vocabulary coverage."""

from __future__ import annotations

import re

import pytest
import torch

from vop.data.synthetic import (
    CAPTION_TEMPLATES,
    COLOURS,
    DEFAULT_HELD_OUT,
    FAMILIES,
    HELD_OUT_START,
    POSITIONS,
    SHAPES,
    SIZES,
    DownstreamConfig,
    DownstreamWorld,
    UpstreamConfig,
    UpstreamWorld,
    render_scenes,
    vocabulary_texts,
)
from vop.data.synthetic.upstream import EMPTY_CAPTIONS
from vop.data.types import RetrievalSplit, VideoSource


@pytest.fixture(scope="module")
def world() -> DownstreamWorld:
    return DownstreamWorld(seed=0)


@pytest.fixture(scope="module")
def small_world() -> DownstreamWorld:
    return DownstreamWorld(seed=3, train_pairs=60, val_pairs=12, test_pairs=24)


def _words(texts) -> set[str]:
    return {w for t in texts for w in t.replace(",", " ").split()}


def _centroid(frame: torch.Tensor) -> torch.Tensor:
    """(x, y) centre of the lit pixels of one [H, W, 3] frame."""
    mask = frame.float().sum(-1) > 60
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.float().mean(), ys.float().mean()])


# --- rendering -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_render_draws_each_shape_in_its_colour_where_asked(shape):
    params = torch.tensor([[[*COLOURS["green"], 0.25, 0.75, SIZES["large"], 1.0]]])
    img = render_scenes(torch.tensor([[SHAPES.index(shape)]]), params, 64)[0]
    assert img.shape == (64, 64, 3) and img.dtype == torch.uint8
    assert torch.allclose(_centroid(img), torch.tensor([16.0, 48.0]), atol=2.5)
    assert tuple(img[48, 16].tolist()) == COLOURS["green"]  # the centre is fully covered
    assert img[:, 40:].sum() == 0  # nothing leaks to the other side


def test_render_empty_slots_and_any_size():
    ids = torch.tensor([[-1, 0], [1, -1]])
    params = torch.zeros(2, 2, 7)
    params[0, 1] = torch.tensor([*COLOURS["red"], 0.5, 0.5, 0.1, 0.0])  # alpha 0: absent
    params[1, 0] = torch.tensor([*COLOURS["red"], 0.5, 0.5, 0.1, 1.0])
    img = render_scenes(ids, params, 24)
    assert img.shape == (2, 24, 24, 3)
    assert img[0].sum() == 0 and img[1].sum() > 0


# --- upstream --------------------------------------------------------------------------


def test_upstream_shapes_and_dtypes():
    images, captions, keys = UpstreamWorld(seed=1).sample(16, start=0)
    assert images.shape == (16, 64, 64, 3) and images.dtype == torch.uint8
    assert len(captions) == len(keys) == 16 and all(isinstance(c, str) for c in captions)
    images, _, _ = UpstreamWorld(seed=1, image_size=32).sample(4, start=0)
    assert images.shape == (4, 32, 32, 3)


def test_upstream_item_depends_only_on_seed_and_index():
    a = UpstreamWorld(seed=5, two_object_prob=0.3)
    b = UpstreamWorld(seed=5, two_object_prob=0.3)
    ia, ca, ka = a.batch([7, 123456789, 3])
    ib, cb, kb = b.batch([3, 7, 123456789])
    assert torch.equal(ia[0], ib[1]) and torch.equal(ia[2], ib[0]) and ca[1] == cb[2] and ka[0] == kb[1]
    image, caption, key = a[123456789]
    assert torch.equal(image, ia[1]) and caption == ca[1] and key == ka[1]
    _, other, _ = UpstreamWorld(seed=6).batch(range(32))
    assert other != a.batch(range(32))[1]


def test_upstream_generator_sampling_is_reproducible():
    w = UpstreamWorld(seed=0)
    x = w.sample(8, torch.Generator().manual_seed(1))
    y = w.sample(8, torch.Generator().manual_seed(1))
    assert torch.equal(x[0], y[0]) and x[1] == y[1]


def test_upstream_held_out_range_is_disjoint():
    idx = UpstreamWorld.sample_indices(10_000, torch.Generator().manual_seed(0))
    assert max(idx) < HELD_OUT_START and min(idx) >= 0
    w = UpstreamWorld(seed=0)
    held, _, _ = w.held_out(32)
    assert torch.equal(held, w.batch(range(HELD_OUT_START, HELD_OUT_START + 32))[0])
    assert not torch.equal(held, w.batch(range(32))[0])


def test_upstream_captions_name_every_attribute_and_empty_scenes_exist():
    images, captions, keys = UpstreamWorld(seed=0).sample(1000, start=0)
    empty = [i for i, k in enumerate(keys) if k == ()]
    assert 20 <= len(empty) <= 100  # about 5 %
    for i in empty:
        assert captions[i] in EMPTY_CAPTIONS and images[i].sum() == 0
    for caption, key in zip(captions, keys):
        for obj in key:
            assert all(attr in caption for attr in obj), (caption, key)


def test_upstream_two_objects():
    _, captions, keys = UpstreamWorld(seed=0, two_object_prob=1.0, empty_prob=0.0).sample(50, start=0)
    for caption, key in zip(captions, keys):
        assert len(key) == 2 and key[0][3] != key[1][3]  # two positions
        assert " and a " in caption


def test_upstream_config_validates_and_round_trips():
    with pytest.raises(ValueError):
        UpstreamWorld(empty_prob=1.5)
    cfg = UpstreamConfig(seed=4, image_size=32)
    assert UpstreamConfig.from_dict(cfg.to_dict()) == cfg
    assert UpstreamWorld.from_config(cfg).config == cfg


# --- downstream: splits ----------------------------------------------------------------


def test_default_split_sizes(world):
    sizes = {name: world.split(name).num_videos for name in ("train", "val", "test")}
    assert sizes == {"train": 4000, "val": 300, "test": 600}
    for name in ("train", "val", "test"):
        split = world.split(name)
        assert isinstance(split, RetrievalSplit) and isinstance(split.source, VideoSource)
        assert len(world.reversal_pairs(name)) == split.num_videos // 2


def test_splits_are_deterministic_by_seed(small_world):
    again = DownstreamWorld(seed=3, train_pairs=60, val_pairs=12, test_pairs=24)
    other = DownstreamWorld(seed=4, train_pairs=60, val_pairs=12, test_pairs=24)
    for name in ("train", "test"):
        a, b = small_world.split(name), again.split(name)
        assert a.captions == b.captions and a.caption_to_video == b.caption_to_video
        assert torch.equal(a.source.load_batch(range(6)), b.source.load_batch(range(6)))
        g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        assert torch.equal(a.source.load(1, 8, "random", g1), b.source.load(1, 8, "random", g2))
    assert other.split("test").captions != small_world.split("test").captions


@pytest.mark.parametrize("num_frames", [1, 5, 12, 16])
def test_video_shapes_and_dtypes(small_world, num_frames):
    src = small_world.split("val").source
    video = src.load(0, num_frames)
    assert video.shape == (num_frames, 64, 64, 3) and video.dtype == torch.uint8
    assert src.load_batch([0, 1, 2], num_frames, "random").shape == (3, num_frames, 64, 64, 3)
    assert src.load(0).shape[0] == 12  # the world's default
    assert DownstreamWorld(seed=0, image_size=32, test_pairs=2).split("test").source.load(0, 4).shape == (4, 32, 32, 3)


@pytest.mark.parametrize("num_frames, image_size", [(12, 64), (7, 64), (5, 33)])
def test_reversal_is_exactly_the_frames_reversed(world, num_frames, image_size):
    if image_size != 64:
        world = DownstreamWorld(seed=1, image_size=image_size, test_pairs=60)
    src = world.split("test").source
    pairs = world.reversal_pairs("test")
    a = src.load_batch([p[0] for p in pairs], num_frames, "middle")
    b = src.load_batch([p[2] for p in pairs], num_frames, "middle")
    assert torch.equal(b, a.flip(1))
    # and one video at a time, as a data loader reads it
    assert torch.equal(src.load(pairs[5][2], num_frames), src.load(pairs[5][0], num_frames).flip(0))


def test_random_mode_jitters_time_but_stays_close(small_world):
    src = small_world.split("train").source
    middle = src.load_batch(range(20), 12, "middle").float()
    rand = src.load_batch(range(20), 12, "random", torch.Generator().manual_seed(0)).float()
    assert not torch.equal(middle, rand)
    assert (middle - rand).abs().mean() < 2.0  # a quarter segment of drift at most


def test_pair_captions_differ_and_pairs_are_consistent(world):
    for name in ("train", "val", "test"):
        split = world.split(name)
        for va, ca, vb, cb in world.reversal_pairs(name):
            assert split.caption_to_video[ca] == va and split.caption_to_video[cb] == vb
            assert split.captions[ca] != split.captions[cb]
            ia, ib = split.source.info(va), split.source.info(vb)
            assert ia.reversal == vb and ib.reversal == va and ia.family == ib.family


def test_every_caption_describes_a_valid_video(world):
    for name in ("train", "val", "test"):
        split = world.split(name)
        for caption, v in zip(split.captions, split.caption_to_video):
            assert 0 <= v < split.num_videos
            info = split.source.info(v)
            assert info.index == v and info.split == name
            if name == "train":
                assert caption in info.paraphrases()
            else:
                assert caption == info.caption(0)


def test_train_draws_paraphrases():
    w = DownstreamWorld(seed=0, train_pairs=30, train_captions_per_video=2)
    split = w.split("train")
    assert split.num_captions == 2 * split.num_videos
    for v in range(split.num_videos):
        first, second = split.captions[2 * v], split.captions[2 * v + 1]
        assert first != second and split.caption_to_video[2 * v] == split.caption_to_video[2 * v + 1] == v
    templates = {c.split(" and ")[0].split()[-1] for c in split.captions}  # the verbs
    assert len(templates) > len(FAMILIES)


def test_held_out_combinations_appear_in_test_only(world):
    held = set(DEFAULT_HELD_OUT)
    train = world.split("train").source
    assert all(not held & set(train.info(i).combos) for i in range(len(train)))
    test = world.split("test").source
    infos = [test.info(i) for i in range(len(test))]
    assert all(i.unseen == bool(held & set(i.combos)) for i in infos)
    assert abs(sum(i.unseen for i in infos) / len(infos) - 0.5) < 0.05
    shown = {c for i in infos for c in i.combos}
    assert held <= shown


def test_families_are_balanced_and_describe_reads(world):
    test = world.split("test").source
    counts = {f: 0 for f in FAMILIES}
    for i in range(len(test)):
        counts[test.info(i).family] += 1
        assert re.fullmatch(r"test/\d{5} [a-z-]+ .+", test.describe(i))
    assert set(counts.values()) == {600 // len(FAMILIES)}
    assert test.describe(42).startswith("test/00042 ")


def test_events_show_what_their_captions_say(small_world):
    """End states match the caption: position, colour, size, emptiness."""
    split = small_world.split("train")
    src = split.source
    video = src.load_batch(range(src.__len__()), 12)  # [N, F, H, W, 3]
    for v in range(len(src)):
        info, first, last = src.info(v), video[v, 0], video[v, -1]
        args = dict(info.caption_args)
        if info.kind.startswith("move-"):
            x, y = POSITIONS[args["position"]]
            assert torch.allclose(_centroid(last) / 64, torch.tensor([x, y]), atol=0.06), info
            assert not torch.allclose(_centroid(first) / 64, torch.tensor([x, y]), atol=0.2), info
        elif info.kind == "color-change":
            lit = last.reshape(-1, 3)[last.reshape(-1, 3).float().sum(-1) > 200]
            assert tuple(lit.float().median(0).values.int().tolist()) == COLOURS[args["colour"]], info
        elif info.kind in ("grow", "shrink"):
            area = lambda f: (f.float().sum(-1) > 60).sum()  # noqa: E731
            assert (area(last) > area(first)) == (info.kind == "grow"), info
        elif info.kind == "appear":
            assert first.sum() == 0 and last.sum() > 0
        elif info.kind == "disappear":
            assert first.sum() > 0 and last.sum() == 0


def test_bad_arguments_raise(small_world):
    src = small_world.split("val").source
    with pytest.raises(ValueError):
        src.load(0, 12, "first")
    with pytest.raises(IndexError):
        src.load(len(src))
    with pytest.raises(ValueError):
        small_world.split("dev")
    with pytest.raises(ValueError):
        DownstreamWorld(held_out=(("circle", "pink"),))
    with pytest.raises(ValueError):  # circle would keep one training colour
        DownstreamWorld(held_out=tuple(("circle", c) for c in list(COLOURS)[:5]))


def test_downstream_config_round_trips():
    cfg = DownstreamConfig(seed=2, test_pairs=10, families=("replace", "color-change"))
    assert DownstreamConfig.from_dict(cfg.to_dict()) == cfg
    w = DownstreamWorld.from_config(cfg)
    assert w.config == cfg
    assert {w.video_info("test", i).family for i in range(20)} == {"replace", "color-change"}


# --- vocabulary ------------------------------------------------------------------------


def test_vocabulary_covers_every_caption(world):
    vocab = vocabulary_texts()
    assert len(vocab) == len(set(vocab))
    words = _words(vocab)
    for name in ("train", "val", "test"):
        assert _words(world.split(name).captions) <= words
    _, captions, _ = UpstreamWorld(seed=0, two_object_prob=0.2).sample(500, start=0)
    assert _words(captions) <= words
    for templates in CAPTION_TEMPLATES.values():  # every paraphrase is represented
        assert all(any(t.split("{")[0] in v for v in vocab) for t in templates)
