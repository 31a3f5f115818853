"""Every zoo architecture: 50% channel masks -> speedup -> verified, smaller, runs at other batch sizes,
and the recorded kept indices rebuild the same shapes on a fresh instance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncompress.models import get
from nncompress.pruners.masks import bake_masks
from nncompress.speedup import apply_kept_indices, speedup
from tests.nncompress.models.builtin_names import BUILTIN_ARCHITECTURES
from tests.nncompress.speedup.conftest import OP_TYPES, build, head_masks
from tests.nncompress.speedup.masking import l1_channel_masks

ZOO = list(BUILTIN_ARCHITECTURES)


def _masks(name: str, source: str, model: torch.nn.Module, x: torch.Tensor) -> dict:
    if source == "helper":
        # Attention needs head-aligned masks: the helper picks whole heads for the transformer.
        return head_masks(model, x) if name == "transformer_classifier" else l1_channel_masks(model, x, 0.5)
    pruners = pytest.importorskip("nncompress.pruners")
    config = [{"sparsity_per_layer": 0.5, "op_types": OP_TYPES}]
    return pruners.prune(model, config, pruner="l1norm", example_inputs=x).masks


@pytest.mark.parametrize("source", ["helper", "l1norm"])
@pytest.mark.parametrize("name", ZOO)
def test_half_channels_speedup_is_verified_and_smaller(name: str, source: str) -> None:
    model, x = build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = _masks(name, source, model, x)

    result = speedup(model, masks, x)

    assert result.verification is not None and result.verification.passed
    assert result.verification.batch_sizes == [1, 1, 2]
    assert result.params_after < 0.8 * result.params_before
    assert result.params_after == sum(p.numel() for p in result.model.parameters())
    assert result.kept, "some layer must lose channels"
    assert type(result.model) is type(model) or result.graph_rewritten
    # The input model is left untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    masked = get(name).build()
    masked.load_state_dict(model.state_dict())
    bake_masks(masked, masks).eval()
    x5 = get(name).example_input(5, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref, got = masked(x5), result.model(x5)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 + 1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("name", ZOO)
def test_kept_indices_rebuild_the_same_model(name: str) -> None:
    model, x = build(name)
    masks = head_masks(model, x) if name == "transformer_classifier" else l1_channel_masks(model, x)
    result = speedup(model, masks, x)

    fresh = apply_kept_indices(get(name).build(), result.kept, x)

    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in result.model.state_dict().items()
    }
    fresh.load_state_dict(result.model.state_dict())
    fresh.eval()
    with torch.inference_mode():
        torch.testing.assert_close(fresh(x), result.model(x))


def test_kept_indices_list_surviving_channels_of_each_side() -> None:
    model, x = build("resnet_bottleneck")
    result = speedup(model, l1_channel_masks(model, x), x)
    modules = dict(result.model.named_modules())
    for name, sides in result.kept.items():
        module = modules[name]
        if "out" in sides and isinstance(module, torch.nn.Conv2d):
            assert module.out_channels == len(sides["out"])
        if "in" in sides and isinstance(module, torch.nn.Conv2d):
            assert module.in_channels == len(sides["in"])
        for indices in sides.values():
            assert indices == sorted(set(indices))


def test_nni_model_speedup_shrinks_the_model_in_place() -> None:
    from nncompress.speedup import ModelSpeedup

    model, x = build("vgg_bn")
    masks = l1_channel_masks(model, x)
    with torch.inference_mode():
        expected = speedup(model, masks, x).model(x)

    returned = ModelSpeedup(model, x, masks).speedup_model()

    assert returned is model
    modules = dict(model.named_modules())
    assert modules["features.0"].out_channels == 16
    assert modules["classifier.0"].in_features == 512
    with torch.inference_mode():
        torch.testing.assert_close(model(x), expected)


class TwoInputNet(nn.Module):
    """Two positional inputs whose convs meet in an add, then BatchNorm and a pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv_a(a) + self.conv_b(b)))
        return self.head(x.mean((2, 3)))


def test_models_with_several_inputs_take_a_tuple() -> None:
    torch.manual_seed(0)
    model = TwoInputNet().eval()
    inputs = (torch.randn(1, 3, 8, 8), torch.randn(1, 1, 8, 8))

    result = speedup(model, l1_channel_masks(model, inputs), inputs)

    assert result.kept["conv_a"]["out"] == result.kept["conv_b"]["out"] == result.kept["bn"]["out"]
    assert len(result.kept["head"]["in"]) == 4
    with torch.inference_mode():
        assert result.model(torch.randn(3, 3, 8, 8), torch.randn(3, 1, 8, 8)).shape == (3, 2)


def test_training_mode_is_kept_and_the_original_statistics_are_untouched() -> None:
    model, x = build("resnet_bottleneck")
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    result = speedup(model, l1_channel_masks(model, x), x)

    assert result.model.training and model.training
    assert all(torch.equal(stats[k], v) for k, v in model.state_dict().items() if "running" in k)


def test_kept_records_that_do_not_fit_the_architecture_are_refused() -> None:
    from nncompress.errors import SpeedupError

    model, x = build("vgg_bn")
    kept = speedup(model, l1_channel_masks(model, x), x).kept
    # The BatchNorm keeps one channel its conv dropped, and drops one the conv kept.
    out = kept["features.1"]["out"]
    dropped = next(i for i in range(32) if i not in out)
    mismatched = {**kept, "features.1": {"out": sorted([*out[1:], dropped])}}

    with pytest.raises(SpeedupError, match="disagree inside the coupled group"):
        apply_kept_indices(get("vgg_bn").build(), mismatched, x)
    with pytest.raises(SpeedupError, match="does not have"):
        apply_kept_indices(get("vgg_bn").build(), {"nope": {"out": [0]}}, x)
