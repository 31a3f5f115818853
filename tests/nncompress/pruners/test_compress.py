"""The NNI-style life cycle: compress() -> (model, masks) through parametrize; unwrap_model(); registry."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nncompress.errors import ConfigError, NncompressError
from nncompress.models.mnist import Net
from nncompress.pruners import PRUNERS, FPGMPruner, L1NormPruner, LevelPruner, apply_masks, get_pruner
from tests.nncompress.pruners.factories import SEED_CONFIG, TinyEncoder, tiny_resnet


def _masked_copy(model: nn.Module, masks: dict[str, dict[str, torch.Tensor]]) -> nn.Module:
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, params in masks.items():
            for pname, mask in params.items():
                getattr(out.get_submodule(name), pname).mul_(mask)
    return out


def test_compress_parametrizes_and_unwrap_leaves_masked_plain_parameters() -> None:
    torch.manual_seed(0)
    net = Net()
    reference = copy.deepcopy(net)
    x = torch.randn(3, 1, 28, 28)
    model, masks = L1NormPruner(net, SEED_CONFIG, dummy_input=x[:1]).compress()
    assert model is net
    assert parametrize.is_parametrized(net.conv1, "weight") and parametrize.is_parametrized(net.fc1, "bias")
    assert type(net.forward) is type(reference.forward)  # forward is not patched
    expected = _masked_copy(reference, masks)
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected(x))
        assert not torch.allclose(net(x), reference(x))

    pruner = L1NormPruner(reference, SEED_CONFIG, dummy_input=x[:1])
    _, masks2 = pruner.compress()
    pruner.unwrap_model()
    assert not parametrize.is_parametrized(reference)
    assert isinstance(reference.conv1.weight, nn.Parameter)
    with torch.no_grad():
        torch.testing.assert_close(reference(x), net(x))
    assert torch.count_nonzero(reference.conv1.weight * (1 - masks2["conv1"]["weight"])) == 0
    assert set(reference.state_dict()) == set(Net().state_dict())


def test_gradients_reach_the_original_weights_and_stay_masked() -> None:
    model, masks = FPGMPruner(
        tiny_resnet(), [{"sparsity": 0.5, "op_names": ["c1"]}], dummy_input=torch.randn(1, 3, 8, 8)
    ).compress()
    model.train()
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    original = model.c1.parametrizations.weight.original
    assert original.grad is not None
    assert torch.count_nonzero(original.grad * (1 - masks["c1"]["weight"])) == 0


def test_compress_twice_ranks_the_original_weights_again() -> None:
    pruner = L1NormPruner(
        tiny_resnet(), [{"sparsity": 0.5, "op_names": ["c1"]}], dummy_input=torch.randn(1, 3, 8, 8)
    )
    _, first = pruner.compress()
    _, second = pruner.compress()
    assert torch.equal(first["c1"]["weight"], second["c1"]["weight"])
    assert len(pruner.model.c1.parametrizations.weight) == 1


def test_get_masks_before_compress_is_an_error() -> None:
    with pytest.raises(NncompressError, match="call compress"):
        LevelPruner(Net(), [{"sparsity": 0.5, "op_types": ["Linear"]}]).get_masks()


def test_level_compress_keeps_shapes_and_masks_elements() -> None:
    net = Net()
    model, masks = LevelPruner(net, [{"sparsity": 0.8, "op_types": ["default"]}]).compress()
    assert set(masks) == {"conv1", "conv2", "fc1", "fc2"}
    assert model.fc1.weight.shape == (500, 800)
    assert float((model.fc1.weight == 0).float().mean()) == pytest.approx(0.8)


def test_granularity_the_pruner_cannot_do_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not support granularity 'element'"):
        L1NormPruner(Net(), [{"sparse_ratio": 0.5, "op_types": ["Conv2d"], "granularity": "element"}])
    with pytest.raises(ConfigError, match="does not support granularity 'out_channel'"):
        LevelPruner(Net(), [{"sparse_ratio": 0.5, "op_types": ["Conv2d"], "granularity": "out_channel"}])


def test_apply_masks_checks_shapes_before_touching_the_model() -> None:
    net = Net()
    bad = {"conv1": {"weight": torch.ones(20, 1, 5, 5)}, "fc1": {"weight": torch.ones(3, 3)}}
    with pytest.raises(NncompressError, match=r"fc1.weight has shape \(3, 3\)"):
        apply_masks(net, bad)
    assert not parametrize.is_parametrized(net)


def test_registry_names_and_unknown_name() -> None:
    assert list(PRUNERS) == [
        "level",
        "l1norm",
        "l2norm",
        "fpgm",
        "slim",
        "taylorfo",
        "apoz",
        "mean_activation",
    ]
    assert get_pruner("fpgm") is FPGMPruner
    with pytest.raises(ConfigError, match=r"unknown pruner 'l1_norm' \(did you mean 'l1norm'\?\)"):
        get_pruner("l1_norm")


def test_top_level_reexports() -> None:
    import nncompress

    for name in (
        "LevelPruner",
        "L1NormPruner",
        "L2NormPruner",
        "FPGMPruner",
        "SlimPruner",
        "TaylorFOWeightPruner",
        "TaylorPruner",
        "ActivationAPoZRankPruner",
        "ActivationMeanRankPruner",
        "prune",
    ):
        assert getattr(nncompress, name) is not None


def test_residual_stream_behind_layernorm_is_refused_with_the_reason() -> None:
    # The residual stream of a transformer passes LayerNorms, which normalise across its channels:
    # zeroing some would change the statistics of the rest, and the speedup could not remove them.
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    x = torch.randint(0, 50, (2, 7))
    config = [{"sparsity": 0.25, "op_names": ["enc.linear2"]}]
    with pytest.raises(ConfigError, match=r"enc\.linear2: not prunable.*MultiheadAttention is not pruned"):
        L1NormPruner(model, config, dummy_input=x).compress()
    # The FFN's hidden channels are not behind a norm: they prune.
    _, masks = L1NormPruner(
        model, [{"sparsity": 0.25, "op_names": ["enc.linear1"]}], dummy_input=x
    ).compress()
    assert int((masks["enc.linear1"]["weight"].sum(1) == 0).sum()) == 8


def test_unknown_option_of_the_functional_api_is_a_config_error() -> None:
    from nncompress.pruners import prune

    with pytest.raises(ConfigError, match=r"pruner 'l1norm'.*unexpected keyword argument 'scale'"):
        prune(Net(), SEED_CONFIG, pruner="l1norm", scale=0.1)


def test_normal_mode_ignores_coupling_like_nni() -> None:
    model = tiny_resnet()
    config = [{"sparsity": 0.5, "op_names": ["stem", "c2"]}]
    pruner = L1NormPruner(model, config, dummy_input=torch.randn(1, 3, 8, 8), mode="normal")
    masks = pruner.calculate_masks()
    assert set(masks) == {"stem", "bn", "c2", "b2"}  # each conv with the BatchNorm after it, no depthwise
    with pytest.raises(ConfigError, match="mode must be one of"):
        L1NormPruner(model, config, mode="fast")
