"""parse_config_list: normalisation of NNI v2/v3 keys and the text of every validation error."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nncompress.config import ConfigEntry, parse_config_list
from nncompress.errors import ConfigError

SEED = [{"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]}, {"exclude": True, "op_names": ["fc2"]}]


def _error(raw: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config_list(raw)
    return info.value


# -- normalisation -------------------------------------------------------------------------------


def test_seed_config_normalises_v2_keys() -> None:
    first, second = parse_config_list(SEED)
    assert first.index == 0
    assert first.sparse_ratio == 0.5
    assert first.op_types == ("Linear", "Conv2d")
    assert first.op_names is None and not first.exclude
    assert first.global_group_id is None
    assert second.exclude and second.op_names == ("fc2",) and second.sparse_ratio is None


@pytest.mark.parametrize("key", ["sparsity", "sparsity_per_layer", "sparse_ratio"])
def test_per_layer_ratio_spellings_are_equivalent(key: str) -> None:
    (entry,) = parse_config_list([{key: 0.3, "op_types": ["Conv2d"]}])
    assert entry.sparse_ratio == 0.3
    assert entry.global_group_id is None


def test_total_sparsity_becomes_a_global_group_of_its_own_entry() -> None:
    entries = parse_config_list(
        [{"total_sparsity": 0.4, "op_types": ["Conv2d"]}, {"total_sparsity": 0.6, "op_types": ["Linear"]}]
    )
    assert [e.sparse_ratio for e in entries] == [0.4, 0.6]
    assert entries[0].global_group_id == "config_list[0]"
    assert entries[1].global_group_id == "config_list[1]"


def test_total_sparsity_keeps_an_explicit_global_group_id() -> None:
    (entry,) = parse_config_list([{"total_sparsity": 0.4, "op_types": ["Conv2d"], "global_group_id": "g"}])
    assert entry.global_group_id == "g"


def test_v3_keys_are_kept() -> None:
    (entry,) = parse_config_list(
        [
            {
                "op_names_re": [r"features\.\d+\.conv"],
                "op_types": ["Conv2d"],
                "exclude_op_names": ["features.0.conv"],
                "exclude_op_types": ["Linear"],
                "exclude_op_names_re": ["head"],
                "sparse_ratio": 0.5,
                "max_sparse_ratio": 0.8,
                "min_sparse_ratio": 0.1,
                "global_group_id": 7,
                "dependency_group_id": "res",
                "granularity": "out_channel",
                "target_names": ["weight"],
            }
        ]
    )
    assert entry.op_names_re == (r"features\.\d+\.conv",)
    assert entry.exclude_op_names == ("features.0.conv",)
    assert entry.exclude_op_types == ("Linear",)
    assert entry.exclude_op_names_re == ("head",)
    assert (entry.max_sparse_ratio, entry.min_sparse_ratio) == (0.8, 0.1)
    assert entry.global_group_id == "7"  # integer ids are accepted and normalised to strings
    assert entry.dependency_group_id == "res"
    assert entry.granularity == "out_channel"
    assert entry.target_names == ("weight",)


def test_defaults() -> None:
    (entry,) = parse_config_list([{"sparse_ratio": 0.5, "op_partial_names": ["conv"]}])
    assert entry.granularity == "default"
    assert entry.target_names == ("weight", "bias")
    assert entry.max_sparse_ratio is None and entry.min_sparse_ratio is None
    assert entry.op_partial_names == ("conv",)


def test_max_sparsity_per_layer_float_and_dict_forms() -> None:
    first, second = parse_config_list(
        [
            {"total_sparsity": 0.5, "op_types": ["Conv2d"], "max_sparsity_per_layer": 0.7},
            {
                "total_sparsity": 0.5,
                "op_types": ["Linear"],
                "max_sparsity_per_layer": {"fc2": 0.6, "fc1": 0.9},
            },
        ]
    )
    assert first.max_sparse_ratio == 0.7 and first.max_for("anything") == 0.7
    assert second.max_sparse_ratio_per_layer == (("fc1", 0.9), ("fc2", 0.6))
    assert second.max_for("fc2") == 0.6 and second.max_for("conv1") is None


def test_none_means_absent_for_optional_v3_keys() -> None:
    (entry,) = parse_config_list(
        [{"sparse_ratio": 0.5, "op_types": ["Conv2d"], "max_sparse_ratio": None, "global_group_id": None}]
    )
    assert entry.max_sparse_ratio is None and entry.global_group_id is None


def test_integers_0_and_1_are_numbers() -> None:
    (entry,) = parse_config_list([{"sparse_ratio": 0, "op_types": ["Conv2d"], "max_sparse_ratio": 1}])
    assert entry.sparse_ratio == 0.0 and entry.max_sparse_ratio == 1.0


def test_entries_are_frozen_and_json_able() -> None:
    entries = parse_config_list(SEED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entries[0].sparse_ratio = 0.9  # type: ignore[misc]
    dumped = json.loads(json.dumps([e.to_dict() for e in entries]))
    assert dumped[0]["sparse_ratio"] == 0.5 and dumped[0]["op_types"] == ["Linear", "Conv2d"]
    assert dumped[1]["exclude"] is True


def test_parsed_entries_pass_through_unchanged() -> None:
    entries = parse_config_list(SEED)
    assert parse_config_list(entries) == entries
    assert all(isinstance(e, ConfigEntry) for e in parse_config_list(list(entries)))


# -- errors: the list itself -------------------------------------------------------------------


def test_a_dict_instead_of_a_list_says_to_wrap_it() -> None:
    err = _error({"sparsity": 0.5, "op_types": ["Conv2d"]})
    assert str(err).startswith("config_list: expected a list of dicts, got dict")
    assert "wrap the entry in a list" in str(err)


@pytest.mark.parametrize("raw", ["sparsity=0.5", None, 0.5])
def test_non_list_configs_are_refused(raw: object) -> None:
    err = _error(raw)
    assert str(err).startswith("config_list: expected a list of dicts")
    assert err.context["entry"] is None


def test_empty_list_is_refused() -> None:
    err = _error([])
    assert "config_list: is empty" in str(err)
    assert "'sparse_ratio'" in str(err)  # shows an example entry


def test_entry_that_is_not_a_dict() -> None:
    err = _error([SEED[0], ["op_types", "Conv2d"]])
    assert str(err).startswith("config_list[1]: expected a dict")
    assert "got list ['op_types', 'Conv2d']" in str(err)


# -- errors: values --------------------------------------------------------------------------


def test_sparsity_out_of_range_message_is_exact() -> None:
    err = _error([{"sparsity": 0.5, "op_types": ["Conv2d"]}, {"sparsity": 1.5, "op_types": ["Linear"]}])
    assert str(err) == "config_list[1]['sparsity']: expected a number in [0, 1), got 1.5"
    assert err.context == {"entry": 1, "key": "sparsity", "value": 1.5, "expected": "a number in [0, 1)"}
    assert err.code == "invalid_config"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0.5", "got str '0.5'"),
        (True, "got True"),
        (-0.1, "got -0.1"),
        (1, "got 1"),
        (float("nan"), "got nan"),
    ],
)
def test_bad_sparse_ratio_values(value: object, shown: str) -> None:
    err = _error([{"sparse_ratio": value, "op_types": ["Conv2d"]}])
    assert str(err).startswith("config_list[0]['sparse_ratio']: expected a number in [0, 1)")
    assert shown in str(err)


def test_max_ratio_allows_one_but_not_more() -> None:
    parse_config_list([{"total_sparsity": 0.5, "op_types": ["Conv2d"], "max_sparse_ratio": 1.0}])
    err = _error([{"total_sparsity": 0.5, "op_types": ["Conv2d"], "max_sparse_ratio": 1.2}])
    assert str(err) == "config_list[0]['max_sparse_ratio']: expected a number in [0, 1], got 1.2"


def test_max_sparsity_per_layer_dict_with_bad_value() -> None:
    err = _error([{"total_sparsity": 0.5, "op_types": ["Linear"], "max_sparsity_per_layer": {"fc1": "high"}}])
    assert "config_list[0]['max_sparsity_per_layer']" in str(err)
    assert "dict of layer name -> number in [0, 1]" in str(err)
    assert "'high'" in str(err)


def test_max_sparsity_per_layer_of_wrong_type() -> None:
    err = _error([{"total_sparsity": 0.5, "op_types": ["Linear"], "max_sparsity_per_layer": [0.5]}])
    assert "config_list[0]['max_sparsity_per_layer']: expected a number in [0, 1] or a dict" in str(err)


def test_min_above_max() -> None:
    entry = {"total_sparsity": 0.5, "op_types": ["Conv2d"], "max_sparse_ratio": 0.6, "min_sparse_ratio": 0.7}
    err = _error([entry])
    assert str(err) == (
        "config_list[0]['min_sparse_ratio']: expected a number <= max_sparse_ratio (0.6), got 0.7"
    )


def test_ratio_above_its_cap_is_a_contradiction() -> None:
    err = _error([{"total_sparsity": 0.8, "op_types": ["Conv2d"], "max_sparsity_per_layer": 0.5}])
    assert str(err) == "config_list[0]['total_sparsity']: expected a number <= the per-layer cap 0.5, got 0.8"


def test_ratio_below_its_floor() -> None:
    err = _error([{"sparse_ratio": 0.2, "op_types": ["Conv2d"], "min_sparse_ratio": 0.3}])
    assert str(err) == "config_list[0]['sparse_ratio']: expected a number >= min_sparse_ratio 0.3, got 0.2"


def test_per_layer_dict_cap_below_a_per_layer_ratio() -> None:
    err = _error([{"sparsity": 0.5, "op_types": ["Linear"], "max_sparsity_per_layer": {"fc1": 0.3}}])
    assert "config_list[0]['max_sparsity_per_layer']" in str(err)
    assert "caps only matter with 'total_sparsity'" in str(err)


def test_op_types_given_as_a_string() -> None:
    err = _error([{"sparsity": 0.5, "op_types": "Conv2d"}])
    assert str(err) == (
        "config_list[0]['op_types']: expected a non-empty list of strings, got str 'Conv2d'; write ['Conv2d']"
    )


def test_empty_selector_list() -> None:
    err = _error([{"sparsity": 0.5, "op_names": []}])
    assert "config_list[0]['op_names']: expected a non-empty list of strings, got list []" in str(err)


def test_selector_list_with_a_non_string() -> None:
    err = _error([{"sparsity": 0.5, "op_names": ["conv1", 3]}])
    assert "config_list[0]['op_names']" in str(err) and "3 is not a non-empty string" in str(err)


def test_invalid_regular_expression() -> None:
    err = _error([{"sparsity": 0.5, "op_names_re": ["features.(conv"]}])
    assert str(err).startswith(
        "config_list[0]['op_names_re']: expected valid Python regular expressions, got str 'features.(conv'"
    )
    assert "missing )" in str(err)


def test_invalid_exclude_regular_expression() -> None:
    err = _error([{"sparsity": 0.5, "op_types": ["Conv2d"], "exclude_op_names_re": ["[a-"]}])
    assert "config_list[0]['exclude_op_names_re']" in str(err)


def test_exclude_must_be_boolean() -> None:
    err = _error([{"exclude": "yes", "op_names": ["fc2"]}])
    assert str(err) == "config_list[0]['exclude']: expected True or False, got str 'yes'"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("channel", "did you mean"),
        ([4, 4], "block sparsity is not supported"),
        ("per_channel", "'per_channel' applies to inputs/outputs"),
        (3, "got 3"),
    ],
)
def test_bad_granularity(value: object, fragment: str) -> None:
    err = _error([{"sparsity": 0.5, "op_types": ["Conv2d"], "granularity": value}])
    assert str(err).startswith(
        "config_list[0]['granularity']: expected one of 'default', 'out_channel', 'in_channel', 'element'"
    )
    assert fragment in str(err)


def test_bad_target_name() -> None:
    err = _error([{"sparsity": 0.5, "op_types": ["Conv2d"], "target_names": ["weight", "_input_"]}])
    assert str(err).startswith(
        "config_list[0]['target_names']: expected a list drawn from 'weight', 'bias', got str '_input_'"
    )


@pytest.mark.parametrize("value", [True, "", 1.5, ["g"]])
def test_bad_group_id(value: object) -> None:
    err = _error([{"sparse_ratio": 0.5, "op_types": ["Conv2d"], "global_group_id": value}])
    assert str(err).startswith("config_list[0]['global_group_id']: expected a non-empty string or an integer")


def test_one_global_group_with_two_ratios() -> None:
    err = _error(
        [
            {"sparse_ratio": 0.5, "op_types": ["Conv2d"], "global_group_id": "g"},
            {"sparse_ratio": 0.3, "op_types": ["Linear"], "global_group_id": "g"},
        ]
    )
    assert str(err).startswith(
        "config_list[1]: global_group_id 'g' has sparsity 0.3 here but 0.5 in config_list[0]"
    )
    assert err.context["key"] == "global_group_id"


def test_one_dependency_group_with_two_ratios() -> None:
    err = _error(
        [
            {"sparse_ratio": 0.5, "op_names": ["a"], "dependency_group_id": 1},
            {"sparse_ratio": 0.25, "op_names": ["b"], "dependency_group_id": 1},
        ]
    )
    assert "dependency_group_id '1' has sparsity 0.25 here but 0.5" in str(err)


# -- errors: keys ---------------------------------------------------------------------------------


def test_unknown_key_names_the_nearest_valid_key() -> None:
    err = _error([{"sparsty": 0.5, "op_types": ["Conv2d"]}])
    assert str(err).startswith("config_list[0]['sparsty']: unknown key; did you mean 'sparsity'")
    assert "Valid keys: op_types, op_names" in str(err)
    assert err.context["key"] == "sparsty"


def test_unknown_key_typo_in_a_selector() -> None:
    err = _error([{"sparsity": 0.5, "op_type": ["Conv2d"]}])
    assert "config_list[0]['op_type']: unknown key; did you mean 'op_types'" in str(err)


def test_unknown_key_with_nothing_close() -> None:
    err = _error([{"sparsity": 0.5, "op_types": ["Conv2d"], "zzz": 1}])
    assert str(err).startswith("config_list[0]['zzz']: unknown key. Valid keys: ")


def test_non_string_key() -> None:
    err = _error([{"sparsity": 0.5, "op_types": ["Conv2d"], 3: 1}])
    assert str(err).startswith("config_list[0]: expected string keys, got 3")


def test_nni_key_that_is_not_supported_says_why() -> None:
    err = _error([{"sparse_threshold": 0.1, "op_types": ["Conv2d"]}])
    assert str(err).startswith("config_list[0]['sparse_threshold']: not supported by nncompress")
    assert "use 'sparse_ratio'" in str(err)


def test_sparsity_and_sparse_ratio_conflict() -> None:
    err = _error([{"sparsity": 0.5, "sparse_ratio": 0.5, "op_types": ["Conv2d"]}])
    assert str(err) == (
        "config_list[0]['sparsity']: conflicts with 'sparse_ratio' in the same entry; both set the sparsity, "
        "keep only one"
    )
    assert err.context["conflicts_with"] == "sparse_ratio"


def test_total_sparsity_and_sparsity_conflict() -> None:
    err = _error([{"sparsity": 0.5, "total_sparsity": 0.5, "op_types": ["Conv2d"]}])
    assert "conflicts with 'sparsity'" in str(err) and "['total_sparsity']" in str(err)


def test_two_caps_conflict() -> None:
    entry = {"total_sparsity": 0.5, "op_types": ["Conv2d"], "max_sparse_ratio": 0.9}
    err = _error([{**entry, "max_sparsity_per_layer": 0.9}])
    assert "['max_sparsity_per_layer']: conflicts with 'max_sparse_ratio'" in str(err)
    assert "per-layer cap" in str(err)


def test_entry_without_a_selector() -> None:
    err = _error([{"sparsity": 0.5}])
    assert str(err).startswith("config_list[0]: selects no layer; add one of 'op_types', 'op_names'")


def test_entry_with_only_exclusions_has_no_selector() -> None:
    err = _error([{"sparsity": 0.5, "exclude_op_names": ["fc2"]}])
    assert "config_list[0]: selects no layer" in str(err)


def test_entry_without_a_sparsity() -> None:
    err = _error([{"op_types": ["Conv2d"]}])
    assert str(err).startswith("config_list[0]: sets no sparsity; add 'sparse_ratio'")
    assert "'exclude': True" in str(err)


@pytest.mark.parametrize("key", ["sparsity", "total_sparsity", "granularity", "global_group_id"])
def test_exclude_entry_refuses_pruning_settings(key: str) -> None:
    value: object = "out_channel" if key == "granularity" else ("g" if key == "global_group_id" else 0.5)
    err = _error([SEED[0], {"exclude": True, "op_names": ["fc2"], key: value}])
    assert str(err).startswith(f"config_list[1][{key!r}]: not allowed in an 'exclude' entry")
    assert err.context["entry"] == 1 and err.context["key"] == key


def test_exclude_false_is_an_ordinary_entry() -> None:
    (entry,) = parse_config_list([{"exclude": False, "sparsity": 0.5, "op_types": ["Conv2d"]}])
    assert not entry.exclude and entry.sparse_ratio == 0.5


def test_error_context_is_json_able() -> None:
    err = _error([{"sparsity": object(), "op_types": ["Conv2d"]}])
    json.dumps(err.to_dict())
    assert err.context["key"] == "sparsity"
