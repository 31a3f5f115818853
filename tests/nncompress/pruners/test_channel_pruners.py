"""Every pruner on the seed Net and on a residual CNN with BatchNorm: targets, coupling, exact zeros."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nncompress.models.mnist import Net
from nncompress.pruners import PRUNERS, apply_masks, prune
from tests.nncompress.pruners.factories import kept_rows, learnable_images, mnist_like, tiny_resnet

CHANNEL_PRUNERS = [n for n in PRUNERS if n != "level"]


def _options(name: str, data: Any) -> dict[str, Any]:
    if name in ("level", "l1norm", "l2norm", "fpgm"):
        return {}
    return {"data": data, "criterion": F.cross_entropy}


@pytest.mark.parametrize("name", [n for n in CHANNEL_PRUNERS if n != "slim"])
def test_seed_net_reaches_the_target_on_every_layer(name: str) -> None:
    torch.manual_seed(1)
    config = [{"sparsity": 0.6, "op_types": ["Conv2d", "Linear"]}, {"exclude": True, "op_names": ["fc2"]}]
    result = prune(
        Net(), config, pruner=name, example_inputs=torch.randn(1, 1, 28, 28), **_options(name, mnist_like())
    )
    # NNI's count: int(0.6 * n) pruned
    got = {n: (r.kept_channels, r.channels) for n, r in result.layers.items()}
    assert got == {"conv1": (8, 20), "conv2": (20, 50), "fc1": (200, 500)}


RESNET_CONFIG = [{"sparsity": 0.5, "op_types": ["Conv2d"]}, {"exclude": True, "op_names": ["pw"]}]


@pytest.mark.parametrize("name", CHANNEL_PRUNERS)
def test_residual_cnn_coupled_convs_share_one_choice_and_every_member_is_masked(name: str) -> None:
    model = tiny_resnet()
    config = [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}] if name == "slim" else RESNET_CONFIG
    result = prune(
        model,
        config,
        pruner=name,
        example_inputs=torch.randn(1, 3, 8, 8),
        **_options(name, learnable_images()),
    )
    masks = result.masks
    stem = kept_rows(masks["stem"]["weight"])
    assert int(stem.sum()) == 4
    # stem and c2 feed one residual add, the depthwise conv follows: one channel choice for all
    for module in ("c2", "dw"):
        assert torch.equal(kept_rows(masks[module]["weight"]), stem)
    for norm in ("bn", "b2", "dwbn"):
        assert torch.equal(masks[norm]["weight"].bool(), stem)
        assert torch.equal(masks[norm]["bias"].bool(), stem)
    assert int(kept_rows(masks["c1"]["weight"]).sum()) == 8
    assert torch.equal(masks["b1"]["weight"].bool(), kept_rows(masks["c1"]["weight"]))
    assert "pw" not in masks and "fc" not in masks


def test_masked_conv_bn_output_is_exactly_zero_on_pruned_channels() -> None:
    model = tiny_resnet()
    result = prune(model, RESNET_CONFIG, pruner="l1norm", example_inputs=torch.randn(1, 3, 8, 8))
    masked = apply_masks(copy.deepcopy(model), result.masks)
    pruned = ~kept_rows(result.masks["c1"]["weight"])
    seen: dict[str, torch.Tensor] = {}
    masked.b1.register_forward_hook(lambda _m, _i, out: seen.__setitem__("b1", out))
    masked.b2.register_forward_hook(lambda _m, _i, out: seen.__setitem__("b2", out))
    with torch.no_grad():
        masked(torch.randn(4, 3, 8, 8))
    assert torch.count_nonzero(seen["b1"][:, pruned]) == 0
    assert torch.count_nonzero(seen["b1"][:, ~pruned]) > 0
    stem_pruned = ~kept_rows(result.masks["stem"]["weight"])
    assert torch.count_nonzero(seen["b2"][:, stem_pruned]) == 0


def test_masked_model_equals_the_model_without_the_pruned_channels() -> None:
    # Zeroed channels in, zeroed channels out: removing them must not change the output.
    model = tiny_resnet()
    result = prune(model, RESNET_CONFIG, pruner="fpgm", example_inputs=torch.randn(1, 3, 8, 8))
    masked = apply_masks(copy.deepcopy(model), result.masks)
    keep = kept_rows(result.masks["c1"]["weight"])
    # c1 -> b1 -> relu -> c2: drop c1's pruned filters and c2's matching input columns by hand
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        h = torch.relu(masked.bn(masked.stem(x)))
        full = masked.c2(torch.relu(masked.b1(masked.c1(h))))
        w1 = masked.c1.weight[keep]
        b1 = masked.b1
        y = F.conv2d(h, w1, padding=1)
        y = F.batch_norm(
            y, b1.running_mean[keep], b1.running_var[keep], b1.weight[keep], b1.bias[keep], eps=b1.eps
        )
        small = F.conv2d(torch.relu(y), masked.c2.weight[:, keep], padding=1)
    torch.testing.assert_close(small, full, rtol=1e-5, atol=1e-6)


def test_output_layer_is_never_channel_pruned() -> None:
    config = [{"sparsity": 0.5, "op_types": ["Conv2d", "Linear"]}]
    result = prune(Net(), config, pruner="l1norm", example_inputs=torch.randn(1, 1, 28, 28))
    assert "fc2" not in result.masks
    assert any("fc2" in w and "output" in w for w in result.warnings)


def test_config_reaching_only_the_output_layer_is_an_error() -> None:
    from nncompress.errors import ConfigError

    with pytest.raises(ConfigError, match="fc2: its output channels are the model's output"):
        prune(
            Net(),
            [{"sparsity": 0.5, "op_names": ["fc2"]}],
            pruner="l2norm",
            example_inputs=torch.randn(1, 1, 28, 28),
        )


def test_fallback_without_inputs_pairs_each_conv_with_its_batchnorm() -> None:
    model = tiny_resnet()
    result = prune(model, [{"sparsity": 0.5, "op_names": ["c1"]}], pruner="l1norm")
    assert set(result.masks) == {"c1", "b1"}
    assert torch.equal(result.masks["b1"]["weight"].bool(), kept_rows(result.masks["c1"]["weight"]))
    assert any("no dummy_input" in w for w in result.warnings)


def test_dependency_group_id_ties_independent_layers() -> None:
    model = tiny_resnet()
    config = [
        {"sparse_ratio": 0.5, "op_names": ["c1", "pw"], "dependency_group_id": "g"},
    ]
    result = prune(model, config, pruner="l1norm", example_inputs=torch.randn(1, 3, 8, 8))
    assert torch.equal(kept_rows(result.masks["c1"]["weight"]), kept_rows(result.masks["pw"]["weight"]))
    assert int(kept_rows(result.masks["pw"]["weight"]).sum()) == 8


def test_attention_channels_are_pruned_in_whole_heads() -> None:
    from tests.nncompress.test_channel_graph import HeadAttention

    torch.manual_seed(0)
    model = HeadAttention(dim=32, heads=4)
    config = [{"sparsity": 0.5, "op_names": ["q", "k", "v"]}]
    result = prune(model, config, pruner="l1norm", example_inputs=torch.randn(2, 5, 32))
    keep = kept_rows(result.masks["q"]["weight"])
    heads = keep.reshape(4, 8)
    assert int(heads.all(dim=1).sum()) == 2 and int(heads.any(dim=1).sum()) == 2  # 2 whole heads left
    for name in ("k", "v"):
        assert torch.equal(kept_rows(result.masks[name]["weight"]), keep)
