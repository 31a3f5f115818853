"""One way to apply masks: ``bake_masks`` is ``apply_masks`` with the parametrizations taken off, so the
baked model (the speedup's reference) computes exactly what the parametrized masked model does."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nncompress.pruners.masks import Masks, apply_masks, bake_masks, is_masked


class NormNet(nn.Module):
    """Linear → LayerNorm → Linear → RMSNorm → Linear: two width norms between pruned widths."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.ln = nn.Linear(8, 16), nn.LayerNorm(16)
        self.fc2, self.rms = nn.Linear(16, 12), nn.RMSNorm(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rms(self.fc2(self.ln(self.fc1(x)))))


def _net() -> NormNet:
    torch.manual_seed(0)
    net = NormNet()
    with torch.no_grad():  # an affine LayerNorm that is not the identity, so masking it shows
        net.ln.weight.uniform_(0.5, 1.5)
        net.ln.bias.uniform_(-0.5, 0.5)
        net.rms.weight.uniform_(0.5, 1.5)
    return net.eval()


def _channel_masks(net: NormNet) -> Masks:
    """Every third channel of the LayerNorm's width and every fourth of the RMSNorm's pruned."""
    ln_keep = (torch.arange(16) % 3 != 0).float()
    rms_keep = (torch.arange(12) % 4 != 0).float()
    return {
        "fc1": {"weight": ln_keep[:, None].expand(16, 8).clone(), "bias": ln_keep.clone()},
        "ln": {"weight": ln_keep.clone(), "bias": ln_keep.clone()},
        "fc2": {"weight": rms_keep[:, None] * ln_keep[None, :], "bias": rms_keep.clone()},
        "rms": {"weight": rms_keep.clone()},
        "head": {"weight": rms_keep[None, :].expand(4, 12).clone()},
    }


def test_baked_model_equals_the_parametrized_masked_model_with_norms() -> None:
    net, x = _net(), torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    masks = _channel_masks(net)
    masked = apply_masks(copy.deepcopy(net), masks)
    baked = bake_masks(copy.deepcopy(net), masks)

    assert not is_masked(baked)
    assert not any(parametrize.is_parametrized(m) for m in baked.modules())
    assert list(baked.state_dict()) == list(net.state_dict())  # plain parameters, in their order
    with torch.inference_mode():
        expected, got = masked(x), baked(x)
        plain_zeros = copy.deepcopy(baked)
        plain_zeros.ln._forward_hooks.clear()
        plain_zeros.rms._forward_hooks.clear()
        zeroed_only = plain_zeros(x)
    assert torch.equal(got, expected)
    # The norms still normalise over the kept channels only: weights zeroed alone compute otherwise.
    assert not torch.allclose(zeroed_only, expected)
    assert torch.equal(baked.fc1.weight, net.fc1.weight * masks["fc1"]["weight"])


def test_bake_treats_any_nonzero_mask_value_as_keep() -> None:
    net = _net()
    half = torch.full_like(net.fc1.weight, 0.5)
    half[0] = 0.0
    baked = bake_masks(copy.deepcopy(net), {"fc1": {"weight": half}})
    assert torch.equal(baked.fc1.weight[1:], net.fc1.weight[1:])
    assert not baked.fc1.weight[0].any()


def test_bake_keeps_parameter_identity_and_buffers() -> None:
    """Optimisers and tied weights hold the parameter objects; FrozenBatchNorm2d masks buffers."""
    torchvision = pytest.importorskip("torchvision")
    frozen = torchvision.ops.FrozenBatchNorm2d(6)
    with torch.no_grad():
        frozen.weight.uniform_(0.5, 1.5)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), frozen)
    weight = model[0].weight
    keep = (torch.arange(6) % 2).float()
    bake_masks(model, {"0": {"weight": keep[:, None, None, None].expand(6, 3, 1, 1)}, "1": {"weight": keep}})
    assert model[0].weight is weight
    assert "weight" in dict(model[1].named_buffers()) and not dict(model[1].named_parameters())
    assert torch.equal(model[1].weight == 0, keep == 0)
