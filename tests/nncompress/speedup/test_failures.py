"""Speedup never returns a silently different model: crashes and divergences become VerificationErrors
that name the operation or layer; element masks stay sparsity; bad masks are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import SpeedupError, VerificationError
from nncompress.pruners.masks import bake_masks
from nncompress.speedup import speedup, verify_equivalence
from nncompress.speedup.reshape import _align
from tests.nncompress.speedup.conftest import build
from tests.nncompress.speedup.masking import l1_channel_masks


class UntraceableNet(nn.Module):
    """Hard-codes a flatten size *and* branches on a tensor value, so torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        if x.sum() > -1e9:  # data-dependent control flow: symbolic tracing fails here
            x = F.max_pool2d(x, 2)
        return self.fc(x.view(-1, 8 * 6 * 6))


def test_untraceable_hard_coded_view_fails_with_the_op_and_a_fix() -> None:
    torch.manual_seed(0)
    model, x = UntraceableNet().eval(), torch.randn(1, 3, 14, 14)
    masks = l1_channel_masks(model, x, 0.5)
    assert "conv" in masks

    with pytest.raises(VerificationError) as info:
        speedup(model, masks, x)

    message = str(info.value)
    assert "view(-1, 288)" in message
    assert "torch.flatten(x, 1)" in message
    assert "torch.fx could not trace" in message
    assert info.value.context["op"] == "view"
    assert "x.view(-1, 8 * 6 * 6)" in (info.value.context["source"] or "")


def test_a_batch_folding_view_is_named_when_a_later_layer_crashes() -> None:
    # With a dummy batch of 2, view(-1, 288) still "works" after pruning (two 144-feature samples fold
    # into one row); the crash comes in the Linear, and the error points back at the view.
    torch.manual_seed(0)
    model, x = UntraceableNet().eval(), torch.randn(2, 3, 14, 14)
    with pytest.raises(VerificationError) as info:
        speedup(model, l1_channel_masks(model, x, 0.5), x)
    assert info.value.context["op"] == "linear"
    assert "view(-1, 288) on a tensor of shape (2, 4, 6, 6)" in str(info.value)
    assert "torch.flatten(x, 1)" in str(info.value)


def test_element_masks_keep_shapes_and_are_reported_as_sparsity() -> None:
    model, x = build("vgg_bn")
    generator = torch.Generator().manual_seed(0)
    masks = {
        name: {"weight": (torch.rand(m.weight.shape, generator=generator) > 0.5).float()}
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    }

    result = speedup(model, masks, x)

    assert result.params_after == result.params_before
    assert result.kept == {} and result.shape_changes == {}
    assert set(result.sparsity) == set(masks)
    assert all(0.4 < s < 0.6 for s in result.sparsity.values())


def test_masks_that_miss_the_batchnorm_keep_shapes() -> None:
    # Only the conv is masked: its BatchNorm still adds a constant to those channels, so removing them
    # would change the output. The channels stay (as zero weights) instead.
    model, x = build("vgg_bn")
    rows = torch.ones(32, 3, 3, 3)
    rows[:16] = 0
    result = speedup(model, {"features.0": {"weight": rows}}, x)
    assert "features.0" not in result.kept
    assert result.sparsity["features.0"] == pytest.approx(0.5)


def test_heads_that_do_not_align_stay_as_sparsity() -> None:
    # 50% of q/k/v channels chosen freely would mix channels of different heads after the head
    # reshape. The channel graph's groups say whole heads (block 16), so the speedup removes none
    # of them and keeps the zeros; the rest of the model still shrinks, exactly.
    model, x = build("transformer_classifier")
    result = speedup(model, l1_channel_masks(model, x, 0.5), x)
    assert result.verification is not None and result.verification.passed
    assert not any(".attn." in name for name in result.kept)
    assert result.sparsity["layers.0.attn.q"] == pytest.approx(0.5)
    assert result.params_after < result.params_before


def test_groups_feeding_a_layernorm_are_left_whole() -> None:
    model, x = build("transformer_classifier")
    result = speedup(model, l1_channel_masks(model, x, 0.5, blocks={"attn": 16}), x)
    # These masks leave the LayerNorms' weights whole, so the norms still read every embedding
    # channel: the width stays (a LayerNorm shrinks only when its own masks prune the channels,
    # see tests/nncompress/test_norm_families.py).
    assert result.verification is not None and result.verification.passed
    assert "embed" not in result.kept


def test_verify_names_the_first_divergent_layer() -> None:
    model, x = build("resnet_bottleneck")
    masks = l1_channel_masks(model, x, 0.5)
    result = speedup(model, masks, x)
    masked = bake_masks(build("resnet_bottleneck")[0], masks)
    with torch.no_grad():
        result.model.get_parameter("layers.1.0.conv2.weight").mul_(1.5)

    with pytest.raises(VerificationError, match=r"'layers\.1\.0\.conv2'") as info:
        verify_equivalence(masked, result.model, x, kept=result.kept)
    assert info.value.context["layer"] == "layers.1.0.conv2"


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        ({"nope": {"weight": torch.ones(1)}}, "module 'nope'"),
        ({"features.0": {"gamma": torch.ones(1)}}, "features.0.gamma"),
        ({"features.0": {"weight": torch.ones(3, 3)}}, r"has shape \(3, 3\)"),
    ],
)
def test_invalid_masks_are_refused(masks: dict, match: str) -> None:
    model, x = build("vgg_bn")
    with pytest.raises(SpeedupError, match=match):
        speedup(model, masks, x)


def test_shape_alignment_pairs_merged_and_split_dims() -> None:
    assert _align((1, 50, 4, 4), (1, 800)) == [([0], [0]), ([1, 2, 3], [1])]
    assert _align((2, 5, 64), (2, 5, 4, 16)) == [([0], [0]), ([1], [1]), ([2], [2, 3])]
    assert _align((3, 4), (5,)) is None
