"""Issue 14, norm-coupled widths: GroupNorm (whole groups go, ``num_groups`` shrinks) and torchvision's
FrozenBatchNorm2d (buffers follow the channels). Each family: preflight → prune 50% of Conv2d/Linear
(head excluded) → speedup → exact against the masked model → at least 20% fewer parameters, and
preflight's promised channels equal the shrunk model's."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from nncompress import preflight, prune, speedup
from nncompress.errors import SpeedupError
from nncompress.norms import WholeGroupNormPruner
from nncompress.pruners import L1NormPruner
from nncompress.speedup import ModelSpeedup

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

Family = tuple[nn.Module, torch.Tensor, str]


class MiniGroupNorm(nn.Module):
    """Three GroupNorm layouts (4, 2 and 8 channels per group) and a residual add across two of them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv2, self.gn2 = nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(8, 16)
        self.conv3, self.gn3 = nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(2, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.gn1(self.conv1(x)))
        x = x + torch.relu(self.gn2(self.conv2(x)))
        x = torch.relu(self.gn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


class MiniFrozenBN(nn.Module):
    """conv → FrozenBatchNorm2d → conv → FrozenBatchNorm2d → linear."""

    def __init__(self) -> None:
        super().__init__()
        frozen = torchvision.ops.FrozenBatchNorm2d
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), frozen(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), frozen(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _image(size: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def mini_group_norm() -> Family:
    return MiniGroupNorm(), _image(16), "fc"


def mini_frozen_bn() -> Family:
    return MiniFrozenBN(), _image(16), "fc"


def resnet18_frozen_bn() -> Family:
    model = torchvision.models.resnet18(
        weights=None, num_classes=10, norm_layer=torchvision.ops.FrozenBatchNorm2d
    )
    return model, _image(32), "fc"


def timm_resnetv2_gn() -> Family:
    norm = functools.partial(timm.layers.GroupNormAct, num_groups=8)
    model = timm.create_model(
        "resnetv2_50d_gn", pretrained=False, num_classes=10, layers=[1, 1, 1, 1],
        channels=(64, 128, 128, 256), stem_chs=32, norm_layer=norm,
    )  # fmt: skip
    return model, _image(32), "head.fc"


FAMILIES: dict[str, Callable[[], Family]] = {
    "mini_group_norm": mini_group_norm,
    "mini_frozen_bn": mini_frozen_bn,
    "resnet18_frozen_bn": resnet18_frozen_bn,
    "timm_resnetv2_gn": timm_resnetv2_gn,
}


@torch.no_grad()
def _randomise_norms(model: nn.Module) -> None:
    # Non-trivial affine parameters and statistics, so a wrong channel or group would show.
    for module in model.modules():
        if isinstance(module, nn.GroupNorm) and module.affine:
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)
        elif isinstance(module, torchvision.ops.FrozenBatchNorm2d):
            module.weight.normal_()
            module.bias.normal_()
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)


def _build(name: str) -> Family:
    torch.manual_seed(0)
    model, x, head = FAMILIES[name]()
    _randomise_norms(model)
    return model.eval(), x, head


def _config(head: str) -> list[dict[str, object]]:
    return [
        {"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear"]},
        {"exclude": True, "op_names": [head]},
    ]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_norm_family_prunes_exactly(name: str) -> None:
    model, x, head = _build(name)
    config = _config(head)

    report = preflight(model, config, x)
    result = prune(model, config, pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)

    assert shrunk.verification is not None and shrunk.verification.passed
    assert shrunk.params_after <= 0.8 * shrunk.params_before, (shrunk.params_before, shrunk.params_after)
    assert report.will_shrink and shrunk.smaller
    modules = dict(shrunk.model.named_modules())
    promised = {r.name: r.channels_after for r in report.layers if r.channels_after is not None}
    assert promised
    for layer, after in promised.items():
        assert modules[layer].out_channels == after, f"preflight promised {layer} → {after}"
    for norm_name, norm in modules.items():
        if isinstance(norm, nn.GroupNorm):
            assert norm.num_channels == norm.weight.shape[0]
            assert norm.num_channels % norm.num_groups == 0
        elif isinstance(norm, torchvision.ops.FrozenBatchNorm2d):
            shapes = {
                tuple(getattr(norm, b).shape) for b in ("weight", "bias", "running_mean", "running_var")
            }
            assert len(shapes) == 1, f"{norm_name}: buffers of different sizes {shapes}"


def test_group_norm_loses_whole_groups_and_its_group_count() -> None:
    model, x, head = _build("mini_group_norm")
    result = prune(model, _config(head), pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x).model
    # 16 channels at 50%: 8 remain, in whole groups of the original group size.
    assert [(m.num_groups, m.num_channels) for m in (shrunk.gn1, shrunk.gn2, shrunk.gn3)] == [
        (2, 8),
        (4, 8),
        (1, 8),
    ]
    # The residual add ties gn1 and gn2 (groups of 4 and 2): blocks of 4 keep both whole.
    mask = result.masks["conv1"]["weight"].flatten(1).any(1)
    assert mask.reshape(-1, 4).all(1).sum() == 2 and mask.sum() == 8


def test_partial_group_removal_is_refused() -> None:
    norm = nn.GroupNorm(4, 16)
    with pytest.raises(SpeedupError, match="whole groups"):
        WholeGroupNormPruner().prune_out_channels(norm, [0, 1])
    WholeGroupNormPruner().prune_out_channels(norm, [4, 5, 6, 7])
    assert (norm.num_groups, norm.num_channels, norm.weight.shape[0]) == (3, 12, 12)


def test_frozen_batch_norm_buffers_through_the_nni_api() -> None:
    model, x, head = _build("mini_frozen_bn")
    pruner = L1NormPruner(model, _config(head), dummy_input=x)
    _, masks = pruner.compress()
    assert set(masks["bn1"]) == {"weight", "bias"}
    with torch.no_grad():
        masked = model(x)
    # speedup() straight from the still-wrapped model: the buffers stay buffers.
    result = speedup(model, masks, x)
    assert not list(result.model.bn1.parameters()) and result.model.bn1.weight.shape == (8,)
    pruner.unwrap_model()
    ModelSpeedup(model, x, masks).speedup_model()
    assert model.bn1.running_var.shape == (8,) and model.conv2.in_channels == 8
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked, rtol=1e-4, atol=1e-5)
