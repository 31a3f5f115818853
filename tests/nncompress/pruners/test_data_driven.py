"""Slim, TaylorFO, APoZ and mean-activation pruners on small generated, learnable data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ConfigError
from nncompress.models.mnist import Net
from nncompress.pruners import (
    ActivationAPoZRankPruner,
    ActivationMeanRankPruner,
    SlimPruner,
    TaylorFOWeightPruner,
    prune,
)
from tests.nncompress.pruners.factories import kept_rows, learnable_images, mnist_like, tiny_resnet

C1 = [{"sparsity": 0.5, "op_names": ["c1"]}]


@pytest.mark.parametrize(
    "cls", [ActivationAPoZRankPruner, ActivationMeanRankPruner, TaylorFOWeightPruner, SlimPruner]
)
def test_missing_data_is_a_clear_error(cls: type) -> None:
    with pytest.raises(
        ConfigError, match=r"pass data= an iterable of \(inputs, targets\) batches or a callable"
    ):
        cls(tiny_resnet(), C1)


def test_gradients_on_batches_need_a_criterion_but_a_callable_does_not() -> None:
    with pytest.raises(ConfigError, match="criterion="):
        TaylorFOWeightPruner(tiny_resnet(), C1, data=learnable_images())

    def steps(model: nn.Module) -> None:
        for x, y in learnable_images():
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()

    _, masks = TaylorFOWeightPruner(
        tiny_resnet(), C1, data=steps, dummy_input=torch.randn(1, 3, 8, 8)
    ).compress()
    assert int(kept_rows(masks["c1"]["weight"]).sum()) == 8


def test_empty_data_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no batches"):
        ActivationAPoZRankPruner(tiny_resnet(), C1, data=[]).compress()


def _dead_c1_channels() -> nn.Module:
    """c1's first 8 filters are the largest by norm, but their BN output is always negative (dead)."""
    model = tiny_resnet()
    with torch.no_grad():
        model.c1.weight[:8].mul_(10)
        model.b1.bias[:8] = -100.0
    return model


@pytest.mark.parametrize("name", ["apoz", "mean_activation"])
def test_activation_pruners_remove_dead_channels_that_l1_would_keep(name: str) -> None:
    model = _dead_c1_channels()
    result = prune(model, C1, pruner=name, data=learnable_images())
    keep = kept_rows(result.masks["c1"]["weight"])
    assert not keep[:8].any() and keep[8:].all()
    l1 = prune(_dead_c1_channels(), C1, pruner="l1norm")
    assert kept_rows(l1.masks["c1"]["weight"])[:8].all()


def test_activation_pruner_traces_coupling_from_the_first_batch() -> None:
    config = [{"sparsity": 0.5, "op_names": ["stem", "c2"]}]
    pruner = ActivationMeanRankPruner(tiny_resnet(), config, data=learnable_images())
    masks = pruner.calculate_masks()
    assert torch.equal(kept_rows(masks["stem"]["weight"]), kept_rows(masks["c2"]["weight"]))
    assert torch.equal(masks["dw"]["weight"].flatten(1).any(1), kept_rows(masks["stem"]["weight"]))
    assert not any("dummy_input" in w for w in pruner.warnings)


def test_activation_choice_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="activation must be one of"):
        ActivationAPoZRankPruner(tiny_resnet(), C1, data=learnable_images(), activation="swish2")


def test_taylor_prunes_filters_no_later_layer_reads() -> None:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.conv1.weight[:10].mul_(10)  # largest by norm ...
        net.conv2.weight[:, :10] = 0.0  # ... yet nothing downstream reads them: zero gradient
    config = [{"sparsity": 0.5, "op_names": ["conv1"]}]
    result = prune(net, config, pruner="taylorfo", data=mnist_like(), criterion=F.cross_entropy)
    keep = kept_rows(result.masks["conv1"]["weight"])
    assert not keep[:10].any() and keep[10:].all()
    assert all(p.grad is None for p in net.parameters())  # gradients are not left behind


def test_slim_training_applies_the_l1_penalty_to_batchnorm_factors() -> None:
    config = [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}]
    sums = {}
    for scale in (0.0, 0.05):
        model = tiny_resnet()
        SlimPruner(
            model, config, data=learnable_images(), criterion=F.cross_entropy, training_epochs=3, scale=scale
        ).calculate_masks()
        sums[scale] = float(
            sum(model.get_submodule(n).weight.detach().abs().sum() for n in ("bn", "b1", "b2", "dwbn"))
        )
    assert sums[0.05] < sums[0.0] - 0.1


def test_slim_training_learns_the_task() -> None:
    data = learnable_images(n=192)
    model = tiny_resnet()

    def accuracy() -> float:
        with torch.no_grad():
            return sum(int((model(x).argmax(1) == y).sum()) for x, y in data) / 192

    before = accuracy()
    SlimPruner(
        model,
        [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}],
        data=data,
        criterion=F.cross_entropy,
        training_epochs=5,
        lr=0.05,
    ).calculate_masks()
    model.eval()
    assert accuracy() > max(before + 0.2, 0.6)


def test_slim_ranks_by_the_scaling_factors_of_every_coupled_batchnorm() -> None:
    model = tiny_resnet()
    with torch.no_grad():
        model.b1.weight[8:] = 1e-3
    _, masks = SlimPruner(model, [{"sparsity": 0.5, "op_names": ["b1"]}], training_epochs=0).compress()
    keep = kept_rows(masks["c1"]["weight"])  # the conv that feeds b1 follows its choice
    assert keep[:8].all() and not keep[8:].any()


def test_slim_refuses_a_layer_without_batchnorm() -> None:
    model = tiny_resnet()
    with pytest.raises(ConfigError, match="pw pass through no BatchNorm"):
        SlimPruner(
            model,
            [{"sparsity": 0.5, "op_names": ["pw"]}],
            training_epochs=0,
            dummy_input=torch.randn(1, 3, 8, 8),
        ).calculate_masks()
