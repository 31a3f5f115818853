"""evaluate() and the distillation loss against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.datasets import from_arrays
from nncompress.finetune import distillation_loss, evaluate


class Scores(nn.Module):
    """Returns its input as the class scores: the test controls every prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_top1_top5_and_loss_match_hand_computation() -> None:
    scores = np.array(
        [
            [9, 1, 2, 3, 4, 5, 0],  # label 0: top-1 right
            [9, 1, 2, 3, 4, 5, 0],  # label 5: top-5 right
            [9, 1, 2, 3, 4, 5, 0],  # label 6: both wrong
            [0, 0, 0, 0, 0, 0, 7],  # label 6: top-1 right
        ],
        dtype=np.float32,
    )
    labels = np.array([0, 5, 6, 6])
    data = from_arrays(scores, labels, num_classes=7)
    model = Scores().train()
    result = evaluate(model, data, batch_size=3)  # two batches, one partial
    assert result.top1 == 0.5 and result.top5 == 0.75 and result.samples == 4
    expected = F.cross_entropy(torch.from_numpy(scores), torch.from_numpy(labels)).item()
    assert math.isclose(result.loss, expected, rel_tol=1e-6)
    assert model.training, "the caller's mode is restored"


def test_no_top5_below_five_classes() -> None:
    data = from_arrays(np.eye(3, dtype=np.float32), np.array([0, 1, 1]))
    result = evaluate(Scores(), data)
    assert result.top5 is None and result.top1 == pytest.approx(2 / 3)


def test_distillation_loss_terms() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    loss, ce, kd = distillation_loss(s, t, y, weight=0.25, temperature=3.0)
    p_t = F.softmax(t / 3, dim=1)
    manual_kd = (p_t * (p_t.log() - F.log_softmax(s / 3, dim=1))).sum(1).mean() * 9
    assert torch.allclose(kd, manual_kd, atol=1e-6)
    assert torch.allclose(ce, F.cross_entropy(s, y))
    assert torch.allclose(loss, 0.75 * ce + 0.25 * kd)
    _, _, same = distillation_loss(s, s.log_softmax(1), y, weight=0.5, temperature=2.0)
    assert same.abs().item() < 1e-6, "log-probabilities and logits give the same soft targets"
