"""Tests for vop.eval.metrics: hand-computed ranks, pessimistic ties, many captions per
video, the chunked path against the dense one (with and without dual-softmax), pair
accuracy and the shape errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vop.eval import (
    chunked_similarity_metrics,
    dual_softmax,
    metrics_from_ranks,
    pair_accuracy,
    ranks_t2v,
    ranks_v2t,
    retrieval_metrics,
)

CHUNKS = [1, 2, 4096]  # one row per block, a block that does not divide T, one block


def _expected(t2v: list[int], v2t: list[int]) -> dict[str, float]:
    return {**metrics_from_ranks(torch.tensor(t2v), "t2v"), **metrics_from_ranks(torch.tensor(v2t), "v2t")}


# ------------------------------------------------------------------- hand-computed


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_square_identity_default(chunk_size):
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.5],
            [0.8, 0.3, 0.2],
            [0.1, 0.7, 0.6],
        ]
    )
    # t2v (row i, ground truth column i):
    #   t0: gt 0.9, nothing >= 0.9            -> 1
    #   t1: gt 0.3, 0.8 >= 0.3                -> 2
    #   t2: gt 0.6, 0.7 >= 0.6                -> 2
    # v2t (column j, ground truth row j; competitors are the other rows):
    #   v0: gt 0.9 vs 0.8, 0.1                -> 1
    #   v1: gt 0.3 vs 0.1, 0.7                -> 2
    #   v2: gt 0.6 vs 0.5, 0.2                -> 1
    assert ranks_t2v(sim, chunk_size=chunk_size).tolist() == [1, 2, 2]
    assert ranks_v2t(sim, chunk_size=chunk_size).tolist() == [1, 2, 1]
    m = retrieval_metrics(sim, chunk_size=chunk_size)
    assert m == pytest.approx(
        {
            "t2v_r1": 100 / 3, "t2v_r5": 100.0, "t2v_r10": 100.0, "t2v_mdr": 2.0, "t2v_mnr": 5 / 3,
            "v2t_r1": 200 / 3, "v2t_r5": 100.0, "v2t_r10": 100.0, "v2t_mdr": 1.0, "v2t_mnr": 4 / 3,
        }
    )
    assert "post_processing" not in m
    # Identity is the default: passing it explicitly changes nothing.
    assert retrieval_metrics(sim, [0, 1, 2], chunk_size=chunk_size) == m


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_many_captions_per_video_and_a_video_without_captions(chunk_size):
    text_to_video = [0, 0, 1, 1, 1]  # video 2 has no caption
    sim = torch.tensor(
        [
            [0.2, 0.6, 0.1],  # t0 -> v0
            [0.9, 0.3, 0.4],  # t1 -> v0
            [0.5, 0.5, 0.7],  # t2 -> v1
            [0.1, 0.2, 0.0],  # t3 -> v1
            [0.3, 0.4, 0.8],  # t4 -> v1
        ]
    )
    # t2v (expected rank 1 + above + ties / 2):
    #   t0: gt v0 0.2; 0.6 above                  -> 2
    #   t1: gt v0 0.9                              -> 1
    #   t2: gt v1 0.5; 0.7 above, v0 0.5 ties      -> 2.5 (R@1 0, R@5 1)
    #   t3: gt v1 0.2; 0.1, 0.0 below              -> 1
    #   t4: gt v1 0.4; 0.8 above                   -> 2
    # v2t (best own caption vs the other videos' captions):
    #   v0: own t0 0.2, t1 0.9 -> best 0.9; others t2 0.5, t3 0.1, t4 0.3 -> 1
    #   v1: own 0.5, 0.2, 0.4 -> best 0.5; others t0 0.6 (above), t1 0.3 -> 2
    #   v2: no caption, left out
    assert ranks_t2v(sim, text_to_video, chunk_size=chunk_size).tolist() == [2, 1, 2.5, 1, 2]
    assert ranks_v2t(sim, text_to_video, chunk_size=chunk_size).tolist() == [1, 2]
    m = retrieval_metrics(sim, text_to_video, chunk_size=chunk_size)
    assert m["t2v_r1"] == pytest.approx(40.0)
    assert m["t2v_mdr"] == 2.0 and m["t2v_mnr"] == pytest.approx(1.7)
    # Two v2t queries: the median is the mean of the middle two, (1 + 2) / 2.
    assert m["v2t_r1"] == 50.0 and m["v2t_mdr"] == 1.5 and m["v2t_mnr"] == 1.5

@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_constant_matrix_scores_chance(chunk_size):
    # Every score ties: the ground truth is equally likely at ranks 1..4.
    m = retrieval_metrics(torch.full((4, 4), 0.5), chunk_size=chunk_size)
    assert m["t2v_r1"] == 25.0 and m["v2t_r1"] == 25.0
    assert m["t2v_r5"] == 100.0
    assert m["t2v_mdr"] == 2.5 and m["v2t_mnr"] == 2.5
    assert ranks_t2v(torch.zeros(3, 3)).tolist() == [2, 2, 2]


def test_ties_count_half():
    sim = torch.tensor(
        [
            [0.5, 0.5],
            [0.5, 0.2],
        ]
    )
    # t2v: t0 gt 0.5 ties v1 0.5 -> 1.5 (R@1 one half); t1 gt 0.2, v0 0.5 above -> 2
    # v2t: v0 gt 0.5 ties t1 0.5 -> 1.5; v1 gt 0.2, t0 0.5 above             -> 2
    assert ranks_t2v(sim).tolist() == [1.5, 2]
    assert ranks_v2t(sim).tolist() == [1.5, 2]
    m = retrieval_metrics(sim)
    assert m["t2v_r1"] == 25.0 and m["v2t_r1"] == 25.0 and m["t2v_mnr"] == 1.75


def test_identical_videos_split_recall_at_one():
    """Two videos with the same embedding (a clip and its reversal under mean pooling):
    each caption finds its video first half the time, not never."""
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    video = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    from vop.eval.metrics import chunked_similarity_metrics

    m = chunked_similarity_metrics(text, video)
    assert m["t2v_r1"] == 50.0 and m["t2v_r5"] == 100.0 and m["t2v_mnr"] == 1.5


def test_ties_among_a_videos_own_captions_do_not_count():
    text_to_video = [0, 0, 1]
    sim = torch.tensor(
        [
            [0.9, 0.1],
            [0.9, 0.2],
            [0.3, 0.8],
        ]
    )
    # v0: own t0 and t1 both 0.9 (they are not competitors); other t2 0.3 -> 1
    # v1: own t2 0.8; others 0.1, 0.2                                      -> 1
    assert ranks_v2t(sim, text_to_video).tolist() == [1, 1]
    assert ranks_t2v(sim, text_to_video).tolist() == [1, 1, 1]


def test_metrics_from_ranks():
    m = metrics_from_ranks(torch.tensor([1, 3, 7, 12]), "t2v")
    # r1: {1}; r5: {1, 3}; r10: {1, 3, 7}; median (3 + 7) / 2; mean 23 / 4
    assert m == {"t2v_r1": 25.0, "t2v_r5": 50.0, "t2v_r10": 75.0, "t2v_mdr": 5.0, "t2v_mnr": 5.75}
    assert metrics_from_ranks(np.array([2, 1, 9]), "v2t")["v2t_mdr"] == 2.0
    with pytest.raises(ValueError, match="1-based"):
        metrics_from_ranks(torch.tensor([0, 1]), "t2v")


def test_numpy_and_half_inputs():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((12, 4)).astype(np.float32)
    text_to_video = np.repeat(np.arange(4), 3)
    expected = retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(text_to_video))
    assert retrieval_metrics(sim, text_to_video) == expected
    assert retrieval_metrics(sim, text_to_video.tolist()) == expected
    # Half precision is upcast exactly, so the ranks are those of the half values.
    half = torch.from_numpy(sim).half()
    assert retrieval_metrics(half, text_to_video) == retrieval_metrics(half.float(), text_to_video)


# ------------------------------------------------------------------- dual softmax


def test_dual_softmax_formula_and_label():
    sim = torch.randn(5, 3)
    expected = sim * torch.softmax(sim * 7.0, dim=0)
    torch.testing.assert_close(dual_softmax(sim, temperature=7.0), expected)
    torch.testing.assert_close(dual_softmax(sim, 7.0, dim=1), sim * torch.softmax(sim * 7.0, dim=1))
    m = retrieval_metrics(sim, [0, 1, 2, 0, 1], dual_softmax=True)
    assert m["post_processing"] == "dual-softmax"


def test_dual_softmax_demotes_a_hub_video():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.1],
            [0.8, 0.7, 0.1],
            [0.8, 0.1, 0.7],
        ]
    )
    # Without DSL, video 0 (a hub) beats t1's and t2's own videos: t2v ranks [1, 2, 2].
    # With temperature 10, column 0's softmax over texts is e^9, e^8, e^8 normalised
    # = 0.58, 0.21, 0.21, so t1 scores v0 0.8 * 0.21 = 0.17 but its own v1
    # 0.7 * e^7 / (e^7 + 2e) = 0.70: rank 1 (t2 likewise).
    assert retrieval_metrics(sim)["t2v_r1"] == pytest.approx(100 / 3)
    assert retrieval_metrics(sim, dual_softmax=True, temperature=10.0)["t2v_r1"] == 100.0


def test_dual_softmax_dense_equals_manual():
    torch.manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(60, 16), dim=1)
    video = torch.nn.functional.normalize(torch.randn(20, 16), dim=1)
    text_to_video = torch.arange(60) % 20
    sim = text @ video.T
    m = retrieval_metrics(sim, text_to_video, dual_softmax=True, chunk_size=7)
    manual = {
        **metrics_from_ranks(ranks_t2v(dual_softmax(sim, dim=0), text_to_video), "t2v"),
        **metrics_from_ranks(ranks_v2t(dual_softmax(sim, dim=1), text_to_video), "v2t"),
        "post_processing": "dual-softmax",
    }
    assert m == manual


# ------------------------------------------------------------ chunked == dense


def _gaussian(num_texts: int, num_videos: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(num_texts, dim, generator=g), dim=1)
    video = torch.nn.functional.normalize(torch.randn(num_videos, dim, generator=g), dim=1)
    # Many captions per video, unevenly, and the last videos without any caption.
    text_to_video = torch.randint(0, num_videos - 3, (num_texts,), generator=g)
    return text, video, text_to_video


def _integer(num_texts: int, num_videos: int, dim: int, seed: int):
    # Small integers make every dot product exact whatever the summation order, so the
    # blockwise scores are bit-identical to the dense ones and exact ties survive.
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(-2, 3, (num_texts, dim), generator=g).float()
    video = torch.randint(-2, 3, (num_videos, dim), generator=g).float()
    video[1::5] = video[0::5][: video[1::5].shape[0]]  # duplicate videos: tied columns
    text[1::4] = text[0::4][: text[1::4].shape[0]]  # duplicate captions: tied rows
    text_to_video = torch.randint(0, num_videos, (num_texts,), generator=g)
    return text, video, text_to_video


@pytest.mark.parametrize("make", [_gaussian, _integer])
@pytest.mark.parametrize("use_dsl", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 37, 4096])
def test_chunked_equals_dense(make, use_dsl, chunk_size):
    text, video, text_to_video = make(300, 40, 6, seed=3)
    dense = retrieval_metrics(text @ video.T, text_to_video, dual_softmax=use_dsl, temperature=20.0)
    chunked = chunked_similarity_metrics(
        text, video, text_to_video, chunk_size=chunk_size, dual_softmax=use_dsl, temperature=20.0
    )
    assert chunked == dense


def test_integer_data_really_has_ties():
    text, video, text_to_video = _integer(300, 40, 6, seed=3)
    sim = text @ video.T
    gt = sim.gather(1, text_to_video[:, None])
    assert int(((sim == gt).sum(1) > 1).sum()) > 10  # many gt scores are tied


def test_chunked_matches_dense_dual_softmax_function():
    text, video, text_to_video = _gaussian(200, 30, 8, seed=5)
    sim = text @ video.T
    chunked = chunked_similarity_metrics(text, video, text_to_video, chunk_size=16, dual_softmax=True)
    assert chunked["t2v_mnr"] == metrics_from_ranks(ranks_t2v(dual_softmax(sim), text_to_video), "t2v")["t2v_mnr"]
    assert chunked["v2t_mnr"] == metrics_from_ranks(ranks_v2t(dual_softmax(sim, dim=1), text_to_video), "v2t")["v2t_mnr"]


def test_chunked_identity_default_and_numpy():
    text, video, _ = _gaussian(25, 25, 8, seed=7)
    expected = retrieval_metrics(text @ video.T)
    assert chunked_similarity_metrics(text.numpy(), video.numpy(), chunk_size=4) == expected


# ------------------------------------------------------------------- pair accuracy


def test_pair_accuracy_blind_model_is_fifty():
    text = torch.randn(4, 8)
    text[1] = text[0]  # caption 1 (the reversal's) embeds exactly like caption 0
    text[3] = text[2]
    video = torch.randn(4, 8)
    assert pair_accuracy(text, video, [(0, 0, 1, 1), (2, 2, 3, 3)]) == 50.0


def test_pair_accuracy_hand_computed():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # caption 0, caption 1
    video = torch.tensor([[2.0, 1.0], [1.0, 3.0], [1.0, 0.5]])
    # pair (v0, c0, v1, c1): v0 scores c0 2 > c1 1 -> 1; v1 scores c1 3 > c0 1 -> 1
    # pair (v2, c0, v0, c1): v2 scores c0 1 > c1 0.5 -> 1; v0 scores c1 1 < c0 2 -> 0
    assert pair_accuracy(text, video, [(0, 0, 1, 1), (2, 0, 0, 1)]) == 75.0
    assert pair_accuracy(text.numpy(), video.numpy(), np.array([[0, 0, 1, 1]])) == 100.0


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: retrieval_metrics(torch.zeros(3, 3), [0, 1]), r"shape \(num_texts,\) = \(3,\), got \(2,\)"),
        (lambda: retrieval_metrics(torch.zeros(3, 3), [0, 5, 1]), r"text_to_video\[1\] = 5 is outside 0..2"),
        (lambda: retrieval_metrics(torch.zeros(3, 3), [0, -1, 1]), r"text_to_video\[1\] = -1"),
        (lambda: retrieval_metrics(torch.zeros(3, 3), [0.0, 1.0, 2.0]), "integer video indices"),
        (lambda: retrieval_metrics(torch.zeros(4, 3)), r"text_to_video of shape \(num_texts,\) = \(4,\)"),
        (lambda: retrieval_metrics(torch.zeros(3)), r"sim must have shape \(num_texts, num_videos\), got \(3,\)"),
        (lambda: retrieval_metrics(torch.zeros(0, 3)), "non-empty"),
        (lambda: retrieval_metrics(torch.tensor([[0.0, float("nan")], [0.0, 1.0]])), r"finite; sim\[0, 1\] = nan"),
        (lambda: retrieval_metrics(torch.zeros(2, 2), chunk_size=0), "chunk_size"),
        (lambda: retrieval_metrics(torch.zeros(2, 2), dual_softmax=True, temperature=0.0), "temperature"),
        (lambda: ranks_v2t(torch.zeros(2, 3), [0, 3]), r"text_to_video\[1\] = 3 is outside 0..2"),
        (
            lambda: chunked_similarity_metrics(torch.zeros(3, 8), torch.zeros(3, 4)),
            r"video_emb must have shape \(num_videos, 8\) to match text_emb, got \(3, 4\)",
        ),
        (lambda: chunked_similarity_metrics(torch.zeros(3, 8), torch.zeros(2, 8), [0, 1]), r"\(3,\), got \(2,\)"),
        (lambda: pair_accuracy(torch.zeros(2, 2), torch.zeros(2, 2), [(0, 0, 1)]), r"shape \(num_pairs, 4\)"),
        (lambda: pair_accuracy(torch.zeros(2, 2), torch.zeros(2, 2), []), r"shape \(num_pairs, 4\)"),
        (lambda: pair_accuracy(torch.zeros(2, 2), torch.zeros(2, 2), [(0, 0, 1, 2)]), r"caption_b = 2, outside 0..1"),
    ],
)
def test_errors_name_the_expected_shape(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_array_input_is_a_type_error():
    with pytest.raises(TypeError, match="torch.Tensor or numpy array"):
        retrieval_metrics([[1.0, 0.0], [0.0, 1.0]])
