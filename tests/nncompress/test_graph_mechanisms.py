"""Issue 14, graph mechanisms: grouped convolutions (ResNeXt, RegNet, a hand-written block) prune evenly per
group with ``groups`` kept; channel shuffles (ShuffleNetV2, hand-written split + shuffle blocks) keep the
channels they interleave, refused by name, while the convs inside each branch prune. Each: exact against the
masked model, at least 20% fewer parameters for a 50% config, preflight's promised channels equal to the
shrunk model's."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.shufflenetv2 import channel_shuffle

from nncompress import preflight, prune, speedup
from nncompress.graph.ghost import SELF_CONCAT_REASON
from nncompress.graph.shuffle import SHUFFLE_REASON
from nncompress.graph.window_attention import WINDOW_ATTENTION_REASON
from nncompress.grouped import GroupedConvPruner, grouped_segments
from nncompress.inspection.report import PreflightReport
from nncompress.speedup.result import SpeedupResult
from tests.nncompress.families import Family, built


def _image(size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


class GroupedBlock(nn.Module):
    """A grouped conv that widens (in 16 → out 32, 4 groups) between plain convs, with a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(32)
        self.proj = nn.Conv2d(32, 24, 1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.bn2(self.grouped(x)))
        return self.fc(self.proj(x).mean((2, 3)))


def grouped_block() -> Family:
    return GroupedBlock(), _image(16), "fc"


def resnext() -> Family:
    # resnext50_32x4d's block at one block per stage
    model = ResNet(Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4, num_classes=10)
    return model, _image(), "fc"


def regnet_x() -> Family:
    return torchvision.models.regnet_x_400mf(weights=None, num_classes=10), _image(), "fc"


def regnet_y() -> Family:
    return torchvision.models.regnet_y_400mf(weights=None, num_classes=10), _image(), "fc"


FAMILIES: dict[str, Callable[[], Family]] = {
    "grouped_block": grouped_block,
    "resnext": resnext,
    "regnet_x_400mf": regnet_x,
    "regnet_y_400mf": regnet_y,
}
SLOW = {"regnet_x_400mf", "regnet_y_400mf"}


def _config(head: str) -> list[dict[str, object]]:
    return [
        {"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear"]},
        {"exclude": True, "op_names": [head]},
    ]


def _shrink_exactly(model: nn.Module, x: torch.Tensor, head: str) -> tuple[PreflightReport, SpeedupResult]:
    """Preflight, prune half of every conv and linear but ``head``, speed up; checks the shrunk model is
    verified exact, at least 20% smaller, and as wide at every layer as preflight promised.

    Returns:
        The preflight report and the speedup result, for the mechanism's own checks.
    """
    config = _config(head)
    report = preflight(model, config, x)
    result = prune(model, config, pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)

    assert shrunk.verification is not None and shrunk.verification.passed
    assert shrunk.smaller and shrunk.params_after <= 0.8 * shrunk.params_before
    modules = dict(shrunk.model.named_modules())
    promised = {r.name: r.channels_after for r in report.layers if r.channels_after is not None}
    for layer, channels in promised.items():
        actual = modules[layer]
        width = actual.out_channels if isinstance(actual, nn.Conv2d) else actual.out_features
        assert width == channels, f"preflight promised {layer} → {channels}, got {width}"
    return report, shrunk


def _grouped(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    return {
        n: (m.groups, m.in_channels, m.out_channels)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and 1 < m.groups != m.out_channels
    }


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in FAMILIES]
)
def test_grouped_convs_prune_evenly_per_group_and_exactly(name: str) -> None:
    model, x, head = built(FAMILIES[name])
    before = _grouped(model)
    assert before

    report, shrunk = _shrink_exactly(model, x, head)

    assert report.will_shrink and not shrunk.blocked_by
    after = _grouped(shrunk.model)
    assert set(after) == set(before)
    for conv, (groups, cin, cout) in after.items():
        assert groups == before[conv][0], f"{conv} changed its groups"
        assert cin % groups == 0 and cout % groups == 0
        assert (cin, cout) < before[conv][1:], f"{conv} kept all its channels"
    with torch.no_grad():  # another batch size still runs
        assert shrunk.model(torch.cat([x, x])).shape[0] == 2 * x.shape[0]


def test_grouped_conv_input_pruner_keeps_each_groups_own_columns() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 1, groups=2, bias=False)
    x = torch.randn(1, 8, 3, 3)
    gone = [1, 6]  # one input of each group
    x[:, gone] = 0
    expected = conv(x)
    GroupedConvPruner().prune_in_channels(conv, gone)
    assert conv.in_channels == 6 and conv.weight.shape == (4, 3, 1, 1)
    keep = [i for i in range(8) if i not in gone]
    torch.testing.assert_close(conv(x[:, keep]), expected)
    with pytest.raises(ValueError, match="same number"):
        GroupedConvPruner().prune_in_channels(conv, [0, 1])


def test_groups_that_do_not_line_up_with_the_channels_are_named() -> None:
    conv = nn.Conv2d(8, 8, 3, groups=2)
    assert grouped_segments(conv, "g", False, list(range(8)), list(range(8)), 8) == (2, None)
    interleaved = [0, 4, 1, 5, 2, 6, 3, 7]  # e.g. a channel shuffle before the conv
    segments, why = grouped_segments(conv, "g", False, list(range(8)), interleaved, 8)
    assert segments == 1 and why is not None and "do not line up" in why


class SplitShuffle(nn.Module):
    """ShuffleNetV2's unit by hand: chunk → branch → concat → shuffle, twice (torchvision's
    ``channel_shuffle``, then a reshape/permute one as timm and others write it)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        half = width // 2
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(half, half, 1),
                nn.BatchNorm2d(half),
                nn.ReLU(),
                nn.Conv2d(half, half, 3, padding=1, groups=half),
                nn.BatchNorm2d(half),
                nn.Conv2d(half, half, 1),
                nn.ReLU(),
            )
            for _ in range(2)
        )
        self.head = nn.Conv2d(width, 4 * width, 1)
        self.fc = nn.Linear(4 * width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a, b = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat((a, self.branches[0](b)), 1), 2)
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branches[1](b)), 1)
        n, c, h, w = x.shape
        x = x.reshape(n, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        return self.fc(torch.relu(self.head(x)).mean((2, 3)))


SHUFFLES: dict[str, Callable[[], Family]] = {
    "split_shuffle": lambda: (SplitShuffle(), _image(8), "fc"),
    "shufflenet_v2_x0_5": lambda: (
        torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10),
        _image(),
        "fc",
    ),
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("shufflenet") else n for n in SHUFFLES]
)
def test_channel_shuffle_keeps_its_channels_by_name_and_branches_prune_exactly(name: str) -> None:
    model, x, head = built(SHUFFLES[name])

    report, shrunk = _shrink_exactly(model, x, head)

    assert any(SHUFFLE_REASON in b for b in report.blocked_by), report.blocked_by
    assert any(SHUFFLE_REASON in b for b in shrunk.blocked_by), shrunk.blocked_by


def tv_swin() -> Family:
    model = torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=5
    )
    return model, _image(32), "head"


def timm_swin() -> Family:
    import timm

    model = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=32, window_size=4, embed_dim=32,
        depths=(2, 2), num_heads=(2, 4), num_classes=5,
    )  # fmt: skip
    return model, _image(32), "head.fc"


SWINS: dict[str, Callable[[], Family]] = {"torchvision_swin": tv_swin, "timm_swin": timm_swin}


@pytest.mark.parametrize("name", list(SWINS))
def test_swin_mlps_prune_exactly_and_the_residual_width_is_kept_by_name(name: str) -> None:
    model, x, head = built(SWINS[name])

    report, _ = _shrink_exactly(model, x, head)

    assert any(WINDOW_ATTENTION_REASON in b for b in report.blocked_by), report.blocked_by
    assert any(after < r.channels for r in report.layers for after in [r.channels_after] if after is not None)


@pytest.mark.slow
def test_ghostnet_cheap_operation_channels_are_kept_by_name_and_the_rest_prunes_exactly() -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("ghostnet_050", pretrained=False, num_classes=10).eval()

    report, shrunk = _shrink_exactly(model, _image(32), "classifier")

    assert any(SELF_CONCAT_REASON in b for b in report.blocked_by)
    assert any(SELF_CONCAT_REASON in b for b in shrunk.blocked_by)
