"""Channel splits with literal sections, chunk, concat and a channels-last Linear behind a permute."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from nncompress.speedup import apply_kept_indices, speedup
from tests.nncompress.speedup.masking import l1_channel_masks


class SplitNet(nn.Module):
    """Splits a conv's channels into two branches (literal sizes or chunk), concatenates them back, and
    mixes channels with a Linear applied channels-last."""

    def __init__(self, use_chunk: bool) -> None:
        super().__init__()
        self.use_chunk = use_chunk
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.branch_a = nn.Conv2d(8, 8, 3, padding=1)
        self.branch_b = nn.Conv2d(8, 8, 1)
        self.proj = nn.Linear(16, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        a, b = x.chunk(2, dim=1) if self.use_chunk else torch.split(x, [8, 8], dim=1)
        x = torch.cat([self.branch_a(a), self.branch_b(b)], dim=1)
        x = self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(torch.relu(x).flatten(2).mean(-1))


def _model(use_chunk: bool) -> tuple[SplitNet, torch.Tensor]:
    torch.manual_seed(0)
    return SplitNet(use_chunk).eval(), torch.randn(1, 3, 8, 8)


@pytest.mark.parametrize("use_chunk", [False, True])
def test_split_sections_follow_the_kept_channels(use_chunk: bool) -> None:
    model, x = _model(use_chunk)
    masks = l1_channel_masks(model, x, 0.5)

    result = speedup(model, masks, x)

    kept = result.kept["conv"]["out"]
    sections = [sum(1 for k in kept if k < 8), sum(1 for k in kept if k >= 8)]
    # The L1 choice is uneven across the halves, so the literal split had to be rewritten.
    assert sections[0] != sections[1]
    assert isinstance(result.model, fx.GraphModule)
    assert [r.after for r in result.rewrites] == [f"split(x, {sections}, 1)"]
    assert result.model.get_parameter("branch_a.weight").shape[1] == sections[0]
    assert result.model.get_parameter("branch_b.weight").shape[1] == sections[1]
    assert result.params_after < result.params_before / 2
    with torch.inference_mode():
        assert result.model(torch.randn(4, 3, 8, 8)).shape == (4, 3)

    fresh = apply_kept_indices(SplitNet(use_chunk), result.kept, x)
    fresh.load_state_dict(result.model.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(fresh.eval()(x), result.model(x))


def test_balanced_chunks_need_no_rewrite() -> None:
    model, x = _model(use_chunk=True)
    masks = {"conv": {"weight": torch.ones_like(model.conv.weight), "bias": torch.ones(16)}}
    masks["bn"] = {"weight": torch.ones(16), "bias": torch.ones(16)}
    for param in ("weight", "bias"):
        for entry in (masks["conv"], masks["bn"]):
            entry[param][[0, 1, 8, 9]] = 0

    result = speedup(model, masks, x)

    assert result.kept["conv"]["out"] == [2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15]
    assert not result.graph_rewritten and type(result.model) is SplitNet
