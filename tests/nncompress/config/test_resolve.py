"""resolve_config: NNI precedence, every selector, and the errors that name real layers."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from nncompress.config import LayerTarget, UnprunableLayerError, resolve_config
from nncompress.errors import ConfigError, NoMatchError, UnknownLayerError
from nncompress.models.mnist import Net
from tests.nncompress.config.models import TINY_WEIGHTED, Tiny

SEED = [{"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]}, {"exclude": True, "op_names": ["fc2"]}]


def _names(model: nn.Module, config: object) -> list[str]:
    return list(resolve_config(model, config).targets)


# -- the seed -------------------------------------------------------------------------------------


def test_seed_config_on_seed_net() -> None:
    resolved = resolve_config(Net(), SEED)
    assert list(resolved.targets) == ["conv1", "conv2", "fc1"]
    conv2 = resolved.targets["conv2"]
    assert conv2 == LayerTarget(
        name="conv2",
        op_type="Conv2d",
        weight_shape=(50, 20, 5, 5),
        sparse_ratio=0.5,
        max_sparse_ratio=None,
        min_sparse_ratio=None,
        granularity="default",
        global_group_id=None,
        dependency_group_id=None,
        target_names=("weight", "bias"),
        entry_index=0,
    )
    assert resolved.targets["fc1"].weight_shape == (500, 800)
    assert resolved.global_groups() == {}


def test_resolution_does_not_touch_the_model() -> None:
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    resolve_config(model, SEED)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_to_dict_is_json() -> None:
    data = json.loads(json.dumps(resolve_config(Net(), SEED).to_dict()))
    assert [t["name"] for t in data["targets"]] == ["conv1", "conv2", "fc1"]
    assert data["targets"][0]["weight_shape"] == [20, 1, 5, 5]
    assert data["config"][1]["exclude"] is True


def test_targets_are_frozen() -> None:
    target = resolve_config(Net(), SEED).targets["fc1"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.sparse_ratio = 0.9  # type: ignore[misc]


# -- selection ------------------------------------------------------------------------------------


def test_targets_follow_module_order_not_config_order() -> None:
    config = [{"sparse_ratio": 0.5, "op_names": ["head.3"]}, {"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]
    assert _names(Tiny(), config) == ["features.0.conv", "features.1.conv", "head.3"]


def test_op_types_match_the_class_name() -> None:
    assert _names(Tiny(), [{"sparse_ratio": 0.5, "op_types": ["BatchNorm2d"]}]) == [
        "features.0.bn",
        "features.1.bn",
    ]


def test_default_op_type_means_conv_and_linear() -> None:
    names = _names(Tiny(), [{"sparse_ratio": 0.5, "op_types": ["default"]}])
    assert names == ["features.0.conv", "features.1.conv", "head.1", "head.3"]


def test_default_op_types_can_be_overridden() -> None:
    resolved = resolve_config(
        Tiny(), [{"sparse_ratio": 0.5, "op_types": ["default"]}], default_op_types=("Linear",)
    )
    assert list(resolved.targets) == ["head.1", "head.3"]


def test_op_names_and_op_types_intersect() -> None:
    config = [{"sparse_ratio": 0.5, "op_names": ["features.0.conv", "features.0.bn"], "op_types": ["Conv2d"]}]
    assert _names(Tiny(), config) == ["features.0.conv"]


def test_partial_names_select_by_substring_and_skip_weightless_modules() -> None:
    # "features.0" also matches the Block, its ReLU; only modules with a weight count.
    assert _names(Tiny(), [{"sparse_ratio": 0.5, "op_partial_names": ["features.0"]}]) == [
        "features.0.conv",
        "features.0.bn",
    ]


def test_regex_uses_re_match_from_the_start() -> None:
    assert _names(Tiny(), [{"sparse_ratio": 0.5, "op_names_re": [r"features\.\d\.conv"]}]) == [
        "features.0.conv",
        "features.1.conv",
    ]
    # re.match anchors at the start: 'conv' alone does not match 'features.0.conv'.
    with pytest.raises(NoMatchError):
        resolve_config(Tiny(), [{"sparse_ratio": 0.5, "op_names_re": ["conv"]}])


def test_name_selectors_are_a_union() -> None:
    config = [
        {
            "sparse_ratio": 0.5,
            "op_names": ["head.3"],
            "op_partial_names": ["1.conv"],
            "op_names_re": ["head.1"],
        }
    ]
    assert _names(Tiny(), config) == ["features.1.conv", "head.1", "head.3"]


def test_v3_exclusions_narrow_only_their_own_entry() -> None:
    config = [
        {
            "sparse_ratio": 0.5,
            "op_types": ["Conv2d", "Linear", "BatchNorm2d"],
            "exclude_op_names": ["head.3"],
            "exclude_op_types": ["BatchNorm2d"],
            "exclude_op_names_re": [r"features\.1"],
        },
        {"sparse_ratio": 0.2, "op_names": ["head.3"]},
    ]
    resolved = resolve_config(Tiny(), config)
    assert list(resolved.targets) == ["features.0.conv", "head.1", "head.3"]
    assert resolved.targets["head.3"].sparse_ratio == 0.2
    assert resolved.targets["head.3"].entry_index == 1


def test_weightless_modules_under_a_type_are_not_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4, elementwise_affine=False), nn.Linear(4, 2))
    with pytest.raises(NoMatchError):
        resolve_config(model, [{"sparse_ratio": 0.5, "op_types": ["LayerNorm"]}])


# -- precedence -----------------------------------------------------------------------------------


def test_later_entry_overrides_the_target_of_an_earlier_one() -> None:
    config = [
        {"sparse_ratio": 0.5, "op_types": ["Conv2d", "Linear"]},
        {"sparse_ratio": 0.8, "op_names": ["conv2"], "granularity": "element"},
    ]
    targets = resolve_config(Net(), config).targets
    assert targets["conv1"].sparse_ratio == 0.5 and targets["conv1"].entry_index == 0
    assert targets["conv2"].sparse_ratio == 0.8 and targets["conv2"].entry_index == 1
    assert targets["conv2"].granularity == "element"


def test_exclude_removes_only_what_earlier_entries_chose() -> None:
    config = [
        {"sparse_ratio": 0.5, "op_types": ["Linear"]},
        {"exclude": True, "op_types": ["Linear"]},
        {"sparse_ratio": 0.3, "op_names": ["fc1"]},
    ]
    targets = resolve_config(Net(), config).targets
    # fc1 was excluded and then chosen again by a later entry: the last word wins, as in NNI.
    assert list(targets) == ["fc1"]
    assert targets["fc1"].sparse_ratio == 0.3


def test_config_that_excludes_everything() -> None:
    config = [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}, {"exclude": True, "op_names_re": ["conv"]}]
    with pytest.raises(NoMatchError) as info:
        resolve_config(Net(), config)
    assert str(info.value).startswith("config_list: leaves no layer to prune")
    assert info.value.code == "config_matches_nothing"


# -- groups and caps -----------------------------------------------------------------------------


def test_total_sparsity_forms_one_global_group_per_entry() -> None:
    config = [
        {"total_sparsity": 0.5, "op_types": ["Conv2d"], "max_sparsity_per_layer": 0.9},
        {"total_sparsity": 0.7, "op_types": ["Linear"]},
    ]
    groups = resolve_config(Net(), config).global_groups()
    assert {g: [t.name for t in ts] for g, ts in groups.items()} == {
        "config_list[0]": ["conv1", "conv2"],
        "config_list[1]": ["fc1", "fc2"],
    }
    assert groups["config_list[0]"][0].max_sparse_ratio == 0.9
    assert groups["config_list[1]"][0].sparse_ratio == 0.7


def test_global_group_spans_entries_with_one_id() -> None:
    config = [
        {"sparse_ratio": 0.5, "op_types": ["Conv2d"], "global_group_id": "all"},
        {"sparse_ratio": 0.5, "op_names": ["fc1"], "global_group_id": "all"},
    ]
    resolved = resolve_config(Net(), config)
    assert [t.name for t in resolved.global_groups()["all"]] == ["conv1", "conv2", "fc1"]
    assert resolved.to_dict()["global_groups"] == {"all": ["conv1", "conv2", "fc1"]}


def test_dependency_groups() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1))
    config = [{"sparse_ratio": 0.5, "op_names": ["0", "2"], "dependency_group_id": "d"}]
    resolved = resolve_config(model, config)
    assert [t.name for t in resolved.dependency_groups()["d"]] == ["0", "2"]
    assert resolved.to_dict()["dependency_groups"] == {"d": ["0", "2"]}


def test_dependency_group_of_layers_with_different_channel_counts() -> None:
    config = [{"sparse_ratio": 0.5, "op_names": ["conv1", "conv2"], "dependency_group_id": "d"}]
    with pytest.raises(ConfigError) as info:
        resolve_config(Net(), config)
    assert str(info.value).startswith(
        "config_list[0]['dependency_group_id']: group 'd' ties layers that do not have the same number of "
        "positions to prune (conv1 20, conv2 50)"
    )
    assert info.value.context["layers"] == {"conv1": [20], "conv2": [50]}


def test_dependency_group_compares_input_channels_for_in_channel_granularity() -> None:
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(6, 8))
    config = [
        {"sparse_ratio": 0.5, "op_types": ["Linear"], "dependency_group_id": 1, "granularity": "in_channel"}
    ]
    assert len(resolve_config(model, config).dependency_groups()["1"]) == 2
    with pytest.raises(ConfigError, match=r"\(0 4, 1 8\)"):
        resolve_config(model, [{**config[0], "granularity": "out_channel"}])


def test_per_layer_caps_from_the_dict_form() -> None:
    config = [{"total_sparsity": 0.5, "op_types": ["Linear"], "max_sparsity_per_layer": {"fc2": 0.6}}]
    targets = resolve_config(Net(), config).targets
    assert targets["fc2"].max_sparse_ratio == 0.6
    assert targets["fc1"].max_sparse_ratio is None


def test_cap_for_a_layer_the_entry_does_not_select() -> None:
    config = [{"total_sparsity": 0.5, "op_types": ["Linear"], "max_sparsity_per_layer": {"conv1": 0.6}}]
    with pytest.raises(ConfigError) as info:
        resolve_config(Net(), config)
    assert str(info.value) == (
        "config_list[0]['max_sparsity_per_layer']: caps layer 'conv1', which this entry does not select "
        "(it selects: fc1, fc2)"
    )


def test_cap_for_a_layer_the_model_lacks() -> None:
    config = [{"total_sparsity": 0.5, "op_types": ["Linear"], "max_sparsity_per_layer": {"fc9": 0.6}}]
    with pytest.raises(
        UnknownLayerError, match=r"\['max_sparsity_per_layer'\]: the model has no layer named 'fc9'"
    ):
        resolve_config(Net(), config)


def test_target_names_drop_a_missing_bias() -> None:
    targets = resolve_config(Tiny(), [{"sparse_ratio": 0.5, "op_types": ["Conv2d", "Linear"]}]).targets
    assert targets["features.0.conv"].target_names == ("weight",)  # built with bias=False
    assert targets["head.1"].target_names == ("weight", "bias")


# -- errors against the model ---------------------------------------------------------------------


def test_unknown_layer_lists_the_nearest_real_names() -> None:
    with pytest.raises(UnknownLayerError) as info:
        resolve_config(Net(), [{"sparsity": 0.5, "op_names": ["conv1", "fc3"]}])
    err = info.value
    assert str(err) == (
        "config_list[0]['op_names']: the model has no layer named 'fc3'; did you mean 'fc2', 'fc1'? "
        "(its layers: conv1, conv2, fc1, fc2)"
    )
    assert err.context["suggestions"] == ["fc2", "fc1"]
    assert err.code == "unknown_layer"


def test_unknown_layer_in_a_deep_model_suggests_by_last_segment() -> None:
    with pytest.raises(UnknownLayerError) as info:
        resolve_config(Tiny(), [{"sparsity": 0.5, "op_names": ["backbone.0.conv"]}])
    assert "did you mean 'features.0.conv'" in str(info.value)


def test_unknown_layer_in_an_exclude_entry() -> None:
    with pytest.raises(
        UnknownLayerError, match=r"config_list\[1\]\['op_names'\]: the model has no layer named 'fc_2'"
    ):
        resolve_config(Net(), [SEED[0], {"exclude": True, "op_names": ["fc_2"]}])


def test_unknown_layer_in_exclude_op_names() -> None:
    config = [{"sparse_ratio": 0.5, "op_types": ["Linear"], "exclude_op_names": ["fc"]}]
    with pytest.raises(UnknownLayerError, match=r"\['exclude_op_names'\]: the model has no layer named 'fc'"):
        resolve_config(Net(), config)


def test_entry_matching_nothing_names_the_entry_and_the_model_types() -> None:
    with pytest.raises(NoMatchError) as info:
        resolve_config(Net(), [SEED[0], {"sparse_ratio": 0.5, "op_types": ["Conv2D"]}])
    assert str(info.value) == (
        "config_list[1]: matches no layer with a weight (op_types=['Conv2D']); "
        "the model's layers with weights are of types Conv2d, Linear; "
        "for op type 'Conv2D' did you mean 'Conv2d'?"
    )
    assert info.value.context["entry"] == 1


def test_entry_emptied_by_its_own_exclusions() -> None:
    config = [{"sparse_ratio": 0.5, "op_types": ["Linear"], "exclude_op_names": ["fc1", "fc2"]}]
    with pytest.raises(
        NoMatchError, match=r"config_list\[0\]: matches no layer with a weight .* after its exclude"
    ):
        resolve_config(Net(), config)


def test_weightless_layer_named_explicitly() -> None:
    with pytest.raises(UnprunableLayerError) as info:
        resolve_config(Tiny(), [{"sparse_ratio": 0.5, "op_names": ["features.0.act"]}])
    assert str(info.value) == (
        "config_list[0]['op_names']: layer 'features.0.act' is a ReLU, which has no weight to prune; "
        "name the layers with weights instead (types here: BatchNorm2d, Conv2d, Linear)"
    )
    assert isinstance(info.value, ConfigError)


def test_container_named_explicitly_is_not_a_layer() -> None:
    with pytest.raises(UnprunableLayerError, match="'features' is a Sequential"):
        resolve_config(Tiny(), [{"sparse_ratio": 0.5, "op_names": ["features"]}])


def test_parse_errors_surface_through_resolve() -> None:
    with pytest.raises(ConfigError, match=r"config_list\[0\]\['sparsity'\]: expected a number in \[0, 1\)"):
        resolve_config(Net(), [{"sparsity": 2, "op_types": ["Conv2d"]}])


def test_every_weighted_layer_of_tiny_is_reachable() -> None:
    assert _names(Tiny(), [{"sparse_ratio": 0.1, "op_partial_names": ["."]}]) == TINY_WEIGHTED


# -- one selection rule for pruning and quantization ------------------------------------------------


@pytest.mark.parametrize(
    ("op_names_re", "expected"),
    [(["fc"], ["fc1", "fc2"]), (["fc1"], ["fc1"]), (["conv.$"], ["conv1", "conv2"]), (["1"], [])],
)
def test_op_names_re_selects_the_same_layers_for_pruning_and_quantization(
    op_names_re: list[str], expected: list[str]
) -> None:
    # The two config kinds once disagreed (re.match for pruning, re.fullmatch for quantization), so
    # ["fc"] pruned fc1 and fc2 but quantized nothing. Both follow NNI: matched at the start of the name.
    from nncompress.quantize.resolve import resolve_quant_config

    config = [{"op_names_re": op_names_re, "sparse_ratio": 0.5}]
    quant_config = [{"op_names_re": op_names_re, "op_types": ["Linear"]}]
    quantized = [n for n in expected if n.startswith("fc")]
    if expected:
        assert _names(Net(), config) == expected
    else:
        with pytest.raises(NoMatchError):
            _names(Net(), config)
    if quantized:
        assert list(resolve_quant_config(Net(), quant_config, "dynamic")) == quantized
    else:
        with pytest.raises(ConfigError):
            resolve_quant_config(Net(), quant_config, "dynamic")
