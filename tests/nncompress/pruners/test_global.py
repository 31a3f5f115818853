"""total_sparsity / global_group_id: one budget across layers, each capped, none emptied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncompress.pruners import LevelPruner, prune
from nncompress.pruners.allocate import Unit, allocate, prune_count
from tests.nncompress.pruners.factories import kept_rows


def _stack() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight.mul_(0.01)  # layer 0's rows are all tiny: a raw ranking would empty it
    return model


def test_global_ranking_respects_the_per_layer_cap() -> None:
    model = _stack()
    with torch.no_grad():
        model[0].weight.mul_(100)
        model[0].weight[:12].mul_(1e-4)  # 12 of 16 rows nearly zero: the ranking wants all of them
    config = [{"total_sparsity": 0.5, "max_sparsity_per_layer": 0.5, "op_names": ["0", "2"]}]
    result = prune(model, config, pruner="l1norm", example_inputs=torch.randn(1, 8))
    kept = {n: r.kept_channels for n, r in result.layers.items()}
    assert kept["0"] == 8  # capped at int(0.5 * 16) pruned
    assert kept_rows(result.masks["0"]["weight"])[12:].all()  # the 8 pruned are among the tiny rows
    # the rest of the budget (0.5 of 16*8 + 16*16 = 192 weight elements) goes to layer 2
    pruned = (16 - kept["0"]) * 8 + (16 - kept["2"]) * 16
    assert 192 - 16 < pruned <= 192


def test_global_ranking_prefers_the_relatively_weakest_channels() -> None:
    model = _stack()
    with torch.no_grad():
        model[2].weight[:4].mul_(1e-3)  # four rows far below their layer's mean
    config = [{"total_sparsity": 0.25, "op_names": ["0", "2"]}]
    result = prune(model, config, pruner="l1norm", example_inputs=torch.randn(1, 8))
    keep2 = kept_rows(result.masks["2"]["weight"])
    assert not keep2[:4].any()


def test_allocate_never_empties_a_unit_and_honours_bounds() -> None:
    metric = torch.arange(10, dtype=torch.float64)
    units = [
        Unit((), ("a",), metric, 0.9, None, 0.5, "g", 1),
        Unit((), ("b",), metric * 100, 0.9, 0.2, None, "g", 1),
    ]
    a, b = allocate(units)
    assert int(a.sum()) == 5  # capped at 0.5
    assert int(b.sum()) <= 9 and int(b.sum()) >= 2  # floor 0.2, never all
    assert a[:5].all()  # the least important first
    assert prune_count(1.0, 7) == 6 and prune_count(0.5, 20) == 10 and prune_count(0.3, 10) == 3


def test_level_global_budget_and_cap() -> None:
    model = _stack()
    config = [{"total_sparsity": 0.6, "max_sparsity_per_layer": 0.8, "op_names": ["0", "2"]}]
    masks = LevelPruner(model, config).calculate_masks()
    zeros0 = int((masks["0"]["weight"] == 0).sum())
    zeros2 = int((masks["2"]["weight"] == 0).sum())
    assert zeros0 == int(0.8 * 128)  # layer 0 is tiny everywhere, so it hits its cap
    assert zeros0 + zeros2 == int(0.6 * (128 + 256))
    # within layer 2, every pruned element is no larger than every kept one
    w = model[2].weight.detach().abs()
    assert w[masks["2"]["weight"] == 0].max() <= w[masks["2"]["weight"] == 1].min()


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_level_per_layer_sparsity_is_exact(ratio: float) -> None:
    model = _stack()
    masks = LevelPruner(model, [{"sparsity": ratio, "op_types": ["Linear"]}]).calculate_masks()
    for name in ("0", "2", "4"):
        mask = masks[name]["weight"]
        assert int((mask == 0).sum()) == int(ratio * mask.numel() + 1e-9)
        assert set(masks[name]) == {"weight"}
