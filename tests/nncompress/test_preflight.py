"""preflight: per-layer channels before/after, coupled groups, unsupported ops; the model is untouched."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nncompress.errors import ConfigError, UnknownLayerError
from nncompress.inspection import ExampleInputError, PreflightReport, kept_channels, preflight
from nncompress.models.mnist import Net
from nncompress.pruners import PRUNERS

SEED = [{"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]}, {"exclude": True, "op_names": ["fc2"]}]
MNIST_X = torch.randn(2, 1, 28, 28)


class Residual(nn.Module):
    """stem -> bn, a residual branch a -> b added back, then a depthwise conv and a classifier.

    stem and b produce the two operands of the add, so their output channels are one group, carried
    through bn and the depthwise conv.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.stem(x))
        x = x + self.b(torch.relu(self.a(x)))
        return self.fc(self.dw(x).mean((2, 3)))


class GroupedAndRecurrent(nn.Module):
    """A grouped conv (not depthwise) and a GRU: both prune (per group, per hidden unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.rnn = nn.GRU(8, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.grouped(self.conv(x))  # (B, 8, H, W)
        seq = y.flatten(2).transpose(1, 2)  # (B, H*W, 8)
        out, _ = self.rnn(seq)
        return self.fc(out[:, -1])


RES_X = torch.randn(2, 3, 8, 8)


def _channels(report: PreflightReport) -> dict[str, tuple[int, int | None]]:
    return {layer.name: (layer.channels, layer.channels_after) for layer in report.layers}


# -- the seed ----------------------------------------------------------------------------------


def test_seed_net_with_seed_config() -> None:
    report = preflight(Net(), SEED, MNIST_X)
    assert _channels(report) == {"conv1": (20, 10), "conv2": (50, 25), "fc1": (500, 250)}
    assert report.not_selected == ("fc2",)
    with pytest.raises(KeyError, match="'fc2' is not selected"):
        report.layer("fc2")
    conv2 = report.layer("conv2")
    assert conv2.op_type == "Conv2d" and conv2.weight_shape == (50, 20, 5, 5)
    assert conv2.sparse_ratio == 0.5 and conv2.structured and conv2.granularity == "out_channel"
    assert report.unsupported == () and report.warnings == ()
    assert report.pruner == "l1norm" and report.model == "Net"


def test_preflight_leaves_the_model_unchanged() -> None:
    model = Residual()
    model.train()  # a forward in train mode would move BatchNorm's running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    preflight(model, [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}], RES_X)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert model.training and model.bn.training
    assert all(p.grad is None for p in model.parameters())


def test_eval_mode_is_preserved_too() -> None:
    model = Net().eval()
    preflight(model, SEED, MNIST_X)
    assert not model.training


def test_seed_report_is_json_and_a_table() -> None:
    report = preflight(Net(), SEED, MNIST_X)
    data = json.loads(json.dumps(report.to_dict()))
    assert [(r["name"], r["channels"], r["channels_after"]) for r in data["layers"]] == [
        ("conv1", 20, 10),
        ("conv2", 50, 25),
        ("fc1", 500, 250),
    ]
    assert data["layers"][1]["weight_shape"] == [50, 20, 5, 5]
    assert data["not_selected"] == ["fc2"]
    assert data["config"][0]["sparse_ratio"] == 0.5

    table = report.to_table().splitlines()
    assert table[0].split() == ["layer", "type", "weight", "shape", "sparsity", "channels", "group"]
    assert table[2].split() == ["conv1", "Conv2d", "20x1x5x5", "0.50", "20→10", "#1"]
    assert table[4].split() == ["fc1", "Linear", "500x800", "0.50", "500→250", "#3"]
    assert "not selected: fc2" in report.to_table()
    # fixed width: the columns start at the same offsets on every row
    assert table[2].index("Conv2d") == table[0].index("type") == table[4].index("Linear")


# -- coupling --------------------------------------------------------------------------------------


def test_convs_feeding_an_add_are_one_group() -> None:
    report = preflight(Residual(), [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}], RES_X)
    stem, a, b = report.layer("stem"), report.layer("a"), report.layer("b")
    assert stem.group is not None and stem.group == b.group != a.group
    group = report.groups[stem.group - 1]
    assert group.id == stem.group
    assert group.layers == ("stem", "b") and group.coupled
    assert set(group.carried_by) == {"bn", "dw"}
    assert (group.channels, group.channels_after) == (8, 4)
    assert _channels(report) == {"stem": (8, 4), "a": (16, 8), "b": (8, 4), "dw": (8, 4)}
    assert "coupled with b" in stem.notes
    assert "channels follow stem, b" in report.layer("dw").notes
    assert "#1  stem, b: 8→4 channels (coupled)" in report.to_table()


def test_different_ratios_in_one_group_warn_and_use_the_smallest() -> None:
    config = [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}, {"sparse_ratio": 0.25, "op_names": ["b"]}]
    report = preflight(Residual(), config, RES_X)
    assert report.layer("stem").channels_after == 6 == report.layer("b").channels_after
    assert any("asks 0.25, 0.5; 0.25 applies to all" in w for w in report.warnings)


def test_selecting_one_side_of_an_add_warns_about_the_other() -> None:
    report = preflight(Residual(), [{"sparse_ratio": 0.5, "op_names": ["stem"]}], RES_X)
    assert report.layer("stem").channels_after == 4
    assert any("also removes the same channels from b" in w for w in report.warnings)


def test_slim_selects_norms_and_their_convs_follow() -> None:
    report = preflight(
        Residual(), [{"sparse_ratio": 0.5, "op_types": ["BatchNorm2d"]}], RES_X, pruner="SlimPruner"
    )
    bn = report.layer("bn")
    assert (bn.channels, bn.channels_after) == (8, 4)
    assert "channels follow stem, b" in bn.notes
    assert report.groups[bn.group - 1].layers == ("stem", "b")  # type: ignore[operator]
    assert any("pruning bn also removes the same channels from stem, b" in w for w in report.warnings)


def test_a_lone_conv_following_its_norm_is_no_warning() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    report = preflight(model, [{"sparse_ratio": 0.5, "op_names": ["1"]}], RES_X, pruner="slim")
    assert report.layer("1").channels_after == 4
    assert report.warnings == ()


def test_a_layer_feeding_the_output_is_not_pruned() -> None:
    report = preflight(Residual(), [{"sparse_ratio": 0.5, "op_types": ["default"]}], RES_X)
    fc = report.layer("fc")
    assert (fc.channels, fc.channels_after) == (4, 4)
    assert any(n.startswith("not pruned: its channels are the model's output") for n in fc.notes)
    assert not report.groups[fc.group - 1].prunable  # type: ignore[operator]


def test_grouped_conv_and_gru_prune_and_are_not_reported_unsupported() -> None:
    model = GroupedAndRecurrent()
    report = preflight(model, [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}], torch.randn(1, 4, 3, 3))
    assert report.unsupported == ()
    # the grouped conv's 2 groups each lose half their channels, so does the conv feeding it
    assert _channels(report) == {"conv": (8, 4), "grouped": (8, 4)}


def test_wrong_example_input_is_the_callers_error() -> None:
    wrong_input = torch.randn(1, 3, 28, 28)  # Net expects one input channel
    with pytest.raises(ExampleInputError) as info:
        preflight(Net(), SEED, wrong_input)
    assert str(info.value).startswith(
        "example_inputs: the model does not run on them (float32 (1, 3, 28, 28))"
    )
    assert "RuntimeError" in str(info.value)
    assert info.value.code == "invalid_example_input"


class _ReturnsNumbers(nn.Module):
    """Runs fine but returns plain Python numbers, which no autograd trace can follow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, list[float]]:
        return {"score": [self.conv(x).sum().item()]}


def test_untraceable_model_still_gets_a_report() -> None:
    report = preflight(_ReturnsNumbers(), [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}], RES_X)
    assert _channels(report) == {"conv": (4, 2)}
    assert report.unsupported[0].name == "_ReturnsNumbers"
    assert "could not trace" in report.unsupported[0].reason
    assert any("could not be traced" in w for w in report.warnings)


# -- pruner and granularity ----------------------------------------------------------------------


@pytest.mark.parametrize("pruner", ["level", "LevelPruner", "level_pruner"])
def test_level_pruner_keeps_channels(pruner: str) -> None:
    report = preflight(Net(), SEED, MNIST_X, pruner=pruner)
    assert report.pruner == "level"
    assert all(not r.structured and r.channels_after == r.channels for r in report.layers)
    assert all(r.granularity == "element" for r in report.layers)
    assert report.groups == ()  # no lone-layer groups when nothing changes shape
    assert "20 (kept)" in report.to_table()


@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_every_registered_pruner_is_known_to_preflight(pruner: str) -> None:
    # Preflight kept its own table of names once, and the service's "mean_activation" was not in it.
    report = preflight(Net(), SEED, MNIST_X, pruner=pruner)
    assert report.pruner == pruner
    expected = PRUNERS[pruner].default_granularity
    assert {r.granularity for r in report.layers} == {expected}


def test_explicit_granularity_overrides_the_pruner_default() -> None:
    config = [
        {"sparse_ratio": 0.5, "op_types": ["Conv2d"]},
        {"sparse_ratio": 0.5, "op_names": ["conv2"], "granularity": "element"},
    ]
    report = preflight(Net(), config, MNIST_X, pruner="L1NormPruner")
    assert report.layer("conv1").channels_after == 10
    assert report.layer("conv2").channels_after == 50 and not report.layer("conv2").structured


def test_total_sparsity_leaves_the_split_to_the_ranking() -> None:
    report = preflight(Net(), [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}], MNIST_X)
    conv1 = report.layer("conv1")
    assert conv1.channels_after is None and conv1.global_group_id == "config_list[0]"
    assert any("global ranking" in n for n in conv1.notes)
    assert "20→ranked" in report.to_table()
    json.dumps(report.to_dict())


def test_unknown_pruner() -> None:
    with pytest.raises(ConfigError) as info:
        preflight(Net(), SEED, MNIST_X, pruner="l1")
    assert str(info.value).startswith("pruner: unknown pruner 'l1'; did you mean")
    assert "'l1norm'" in str(info.value)


def test_config_errors_propagate() -> None:
    with pytest.raises(UnknownLayerError, match="no layer named 'fc3'"):
        preflight(Net(), [{"sparsity": 0.5, "op_names": ["fc3"]}], MNIST_X)


@pytest.mark.parametrize(
    ("channels", "ratio", "kept"),
    [(20, 0.5, 10), (50, 0.5, 25), (10, 0.7, 3), (10, 0.3, 7), (3, 0.5, 2), (10, 0.99, 1), (8, 0.0, 8)],
)
def test_kept_channels(channels: int, ratio: float, kept: int) -> None:
    assert kept_channels(channels, ratio) == kept


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Linear(4, 6)
        self.right = nn.Linear(5, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(self.left(a) + self.right(b))


@pytest.mark.parametrize(
    "inputs",
    [(torch.randn(2, 4), torch.randn(2, 5)), {"a": torch.randn(2, 4), "b": torch.randn(2, 5)}],
)
def test_tuple_and_keyword_inputs(inputs: object) -> None:
    report = preflight(_TwoInputs(), [{"sparse_ratio": 0.5, "op_names": ["left", "right"]}], inputs)  # type: ignore[arg-type]
    assert report.layer("left").group == report.layer("right").group
    assert _channels(report) == {"left": (6, 3), "right": (6, 3)}


def test_wrong_arity_names_the_inputs() -> None:
    with pytest.raises(ExampleInputError, match=r"\(a=float32 \(2, 4\)\)"):
        preflight(_TwoInputs(), [{"sparse_ratio": 0.5, "op_names": ["left"]}], {"a": torch.randn(2, 4)})
