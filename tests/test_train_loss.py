"""SymmetricInfoNCE: a hand computation on a 3x3 batch, the aligned limit, symmetry."""

from __future__ import annotations

import math

import pytest
import torch

from vop.train.loss import SymmetricInfoNCE


def _unit(rows: list[list[float]]) -> torch.Tensor:
    x = torch.tensor(rows, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def _hand_loss(video: list[list[float]], text: list[list[float]], scale: float) -> float:
    """The same loss with plain Python floats: mean over rows of -log softmax(diagonal),
    for text->video (rows of scale * T V^T) and video->text (its columns), averaged."""
    n = len(video)
    logits = [[scale * sum(t * v for t, v in zip(text[i], video[j])) for j in range(n)] for i in range(n)]
    t2v = sum(-logits[i][i] + math.log(sum(math.exp(logits[i][j]) for j in range(n))) for i in range(n)) / n
    v2t = sum(-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(n))) for j in range(n)) / n
    return 0.5 * (t2v + v2t)


def test_matches_a_hand_computation_on_three_pairs():
    video = _unit([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [0.4, 0.0, 1.0]])
    text = _unit([[0.9, 0.1, 0.2], [0.3, 0.8, 0.0], [0.0, 0.5, 1.0]])
    scale = 3.0
    got = SymmetricInfoNCE()(video, text, torch.tensor(scale))
    want = _hand_loss(video.tolist(), text.tolist(), scale)
    # The module computes in float32; the hand value is exact to float64.
    assert got.item() == pytest.approx(want, rel=1e-6)
    # The two directions differ here (the logits are not symmetric), so both are counted.
    logits = [[scale * float(t @ v) for v in video] for t in text]
    assert logits[0][1] != pytest.approx(logits[1][0])


def test_perfectly_aligned_embeddings_with_a_large_scale_give_zero_loss():
    emb = torch.eye(3)
    loss = SymmetricInfoNCE()(emb, emb.clone(), torch.tensor(100.0))
    assert loss.item() == pytest.approx(0.0, abs=1e-30)
    # And with a unit scale it is far from zero: the scale is what sharpens the softmax.
    assert SymmetricInfoNCE()(emb, emb.clone(), torch.tensor(1.0)).item() > 0.5


def test_is_symmetric_in_video_and_text():
    g = torch.Generator().manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    text = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    loss = SymmetricInfoNCE()
    torch.testing.assert_close(loss(video, text, torch.tensor(10.0)), loss(text, video, torch.tensor(10.0)))


def test_unpaired_shapes_are_refused():
    with pytest.raises(ValueError, match=r"video \(3, 4\) and text \(2, 4\)"):
        SymmetricInfoNCE()(torch.zeros(3, 4), torch.zeros(2, 4), torch.tensor(1.0))
