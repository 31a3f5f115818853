"""Quantization config and spec validation: each refusal names the entry, key, value and what is allowed."""

from __future__ import annotations

import pytest
import torch

from nncompress.errors import ConfigError, UnknownLayerError
from nncompress.quantize import (
    QuantConfigError,
    QuantNoMatchError,
    QuantSpec,
    UnknownQuantLayerError,
    parse_quant_config,
    resolve_quant_config,
)
from tests.nncompress.quantize.factories import lstm, trained_net

_KEYS = (
    "op_types, op_names, op_names_re, exclude_op_types, exclude_op_names, exclude_op_names_re, "
    "target_names, quant_dtype, quant_scheme, granularity, exclude"
)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            [{"op_types": ["Conv2d"], "quant_dtype": "int4"}],
            "config_list[0]['quant_dtype']: expected one of 'int8', 'uint8', got str 'int4'; "
            "did you mean 'int8', 'uint8'?",
        ),
        (
            [{"op_types": ["Conv2d"]}, {"op_types": ["Linear"], "quant_schme": "affine"}],
            f"config_list[1]['quant_schme']: unknown key; did you mean 'quant_scheme', 'quant_dtype'? "
            f"Valid keys: {_KEYS}",
        ),
        (
            [{"op_types": ["Conv2d"], "quant_bits": 8}],
            "config_list[0]['quant_bits']: not supported by nncompress quantization: only 8-bit quantization "
            "is implemented; use 'quant_dtype': 'int8' or 'uint8'",
        ),
        (
            [{"op_types": ["Conv2d"], "target_names": ["_inputs_"]}],
            "config_list[0]['target_names']: expected a list drawn from 'weight', '_input_', '_output_', "
            "got str '_inputs_'; did you mean '_input_', '_output_'?",
        ),
        (
            [{"op_types": "Conv2d"}],
            "config_list[0]['op_types']: expected a non-empty list of strings, got str 'Conv2d'; "
            "write ['Conv2d']",
        ),
        (
            [{"quant_dtype": "int8"}],
            "config_list[0]: selects no layer; add one of 'op_types', 'op_names', 'op_names_re' "
            "(e.g. 'op_types': ['Conv2d', 'Linear'])",
        ),
        (
            [{"exclude": True, "op_names": ["fc2"], "quant_dtype": "int8"}],
            "config_list[0]['quant_dtype']: not allowed in an 'exclude' entry (got str 'int8'); an exclude "
            "entry only keeps the layers it selects in float",
        ),
        (
            [{"op_types": ["Conv2d"], "granularity": "per_row"}],
            "config_list[0]['granularity']: expected one of 'default', 'per_channel', 'per_tensor', got str "
            "'per_row'; did you mean 'per_tensor', 'per_channel'?",
        ),
        (
            {"op_types": ["Conv2d"]},
            "config_list: expected a list of dicts, got dict {'op_types': ['Conv2d']}; wrap the entry in a "
            "list: [{'op_types': ['Conv2d']}]",
        ),
        (
            [{"op_names_re": ["fc("]}],
            "config_list[0]['op_names_re']: expected valid Python regular expressions",
        ),
    ],
)
def test_bad_configs_are_refused_with_the_exact_message(config: object, message: str) -> None:
    with pytest.raises(QuantConfigError) as caught:
        parse_quant_config(config)
    assert caught.value.message.startswith(message)
    assert caught.value.code == "invalid_quant_config"
    assert isinstance(caught.value, ConfigError)


def test_error_context_names_entry_key_value_and_what_is_allowed() -> None:
    with pytest.raises(QuantConfigError) as caught:
        parse_quant_config([{"op_types": ["Linear"]}, {"op_types": ["Conv2d"], "quant_scheme": "asym"}])
    assert caught.value.to_dict()["context"] == {
        "entry": 1,
        "key": "quant_scheme",
        "value": "asym",
        "expected": "one of 'affine', 'symmetric'",
    }


def test_unknown_layer_lists_the_nearest_real_names() -> None:
    with pytest.raises(UnknownQuantLayerError) as caught:
        resolve_quant_config(trained_net(), [{"op_names": ["fc3"]}], "static")
    assert caught.value.message == (
        "config_list[0]['op_names']: the model has no layer named 'fc3'; did you mean 'fc2', 'fc1'? "
        "(its layers: conv1, conv2, fc1, fc2)"
    )
    assert caught.value.context["suggestions"] == ["fc2", "fc1"]
    assert caught.value.code == "unknown_layer"
    assert isinstance(caught.value, UnknownLayerError)


def test_unknown_excluded_layer_is_refused_too() -> None:
    config = [{"op_types": ["Linear"], "exclude_op_names": ["conv9"]}]
    with pytest.raises(UnknownQuantLayerError, match=r"config_list\[0\]\['exclude_op_names'\]: .* 'conv9'"):
        resolve_quant_config(trained_net(), config, "static")


@pytest.mark.parametrize(
    ("mode", "config", "message"),
    [
        (
            "static",
            [{"op_types": ["Linear"], "target_names": ["weight"]}],
            "config_list[0]['target_names']: mode 'static' needs '_input_', '_output_' as well "
            "(got ['weight']): an int8 kernel reads int8 weights and inputs and writes int8 outputs, so a "
            "layer is quantized on all of them or stays float (use 'exclude': True for that)",
        ),
        (
            "dynamic",
            [{"op_types": ["Linear"], "target_names": ["weight", "_output_"]}],
            "config_list[0]['target_names']: '_output_' cannot be quantized in mode 'dynamic'; allowed: "
            "'weight', '_input_' (dynamic kernels quantize the input at run time and write float outputs)",
        ),
        (
            "dynamic",
            [{"op_types": ["Conv2d"]}],
            "config_list[0]['op_types']: 'Conv2d' layers cannot be quantized in mode 'dynamic' (supported: "
            "Linear, LSTM); convolutions are quantized by mode 'static' or 'qat'",
        ),
    ],
)
def test_settings_the_mode_cannot_run_are_refused(mode: str, config: list[dict], message: str) -> None:
    with pytest.raises(QuantConfigError) as caught:
        resolve_quant_config(trained_net(), config, mode)
    assert caught.value.message == message


def test_static_lstm_points_to_dynamic_mode() -> None:
    with pytest.raises(QuantConfigError) as caught:
        resolve_quant_config(lstm(), [{"op_names": ["rnn"]}], "static")
    assert caught.value.message == (
        "config_list[0]['op_names']: layer 'rnn' is a LSTM, which mode 'static' cannot quantize (supported: "
        "Conv1d, Conv2d, Linear); recurrent layers are quantized by mode 'dynamic' (LSTM only: onnxruntime "
        "has no integer GRU)"
    )


def test_everything_excluded_is_refused() -> None:
    with pytest.raises(QuantNoMatchError, match="leaves no layer to quantize"):
        resolve_quant_config(
            trained_net(), [{"op_types": ["Linear"]}, {"exclude": True, "op_names_re": ["fc.*"]}], "static"
        )


def test_precedence_later_entries_override_and_exclude() -> None:
    config = [
        {"op_types": ["default"]},
        {"op_names": ["fc1"], "granularity": "per_tensor"},
        {"exclude": True, "op_names": ["fc2"]},
    ]
    layers = resolve_quant_config(trained_net(), config, "static")
    assert list(layers) == ["conv1", "conv2", "fc1"]
    assert layers["conv1"].weight.per_channel and not layers["fc1"].weight.per_channel
    assert layers["fc1"].entry_index == 1
    # Defaults: int8 symmetric weights, uint8 affine activations (the fast U8S8 CPU kernels).
    assert (layers["conv1"].weight.dtype, layers["conv1"].weight.scheme) == ("int8", "symmetric")
    assert layers["conv1"].activation is not None
    assert (layers["conv1"].activation.dtype, layers["conv1"].activation.scheme) == ("uint8", "affine")


def test_dynamic_default_selects_linear_and_lstm_only() -> None:
    layers = resolve_quant_config(lstm(), [{"op_types": ["default"]}], "dynamic")
    assert {name: layer.op_type for name, layer in layers.items()} == {"rnn": "LSTM", "head": "Linear"}
    assert all(layer.activation is None for layer in layers.values())


def test_spec_round_trips_and_refuses_bad_values() -> None:
    spec = QuantSpec.from_dict(
        {
            "mode": "dynamic",
            "config_list": [{"op_types": ["LSTM"], "quant_dtype": "int8"}],
            "format": "qoperator",
        }
    )
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    assert QuantSpec.from_dict({}).mode == "static"
    cases = {
        "mode": (
            "statc",
            "quantize.mode must be one of static, dynamic, qat, got 'statc'; did you mean 'static'?",
        ),
        "format": ("QDQ", "quantize.format must be one of qdq, qoperator, got 'QDQ'; did you mean 'qdq'?"),
        "calibration_batches": (0, "quantize.calibration_batches must be an integer >= 1, got 0"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(QuantConfigError) as caught:
            QuantSpec.from_dict({key: value})
        assert caught.value.message == message
    with pytest.raises(QuantConfigError, match=r"unknown key quantize\.modee; did you mean 'mode'\?"):
        QuantSpec.from_dict({"modee": "static"})
    with pytest.raises(QuantConfigError, match=r"config_list\[0\]\['quant_dtype'\]"):
        QuantSpec.from_dict({"config_list": [{"op_types": ["Linear"], "quant_dtype": "fp8"}]})


def test_entry_matching_nothing_says_what_the_model_has() -> None:
    with pytest.raises(QuantNoMatchError) as caught:
        resolve_quant_config(trained_net(), [{"op_types": ["LSTM"]}], "dynamic")
    assert caught.value.message == (
        "config_list[0]: matches no layer that mode 'dynamic' can quantize (Linear, LSTM); "
        "the model's layers of those types are Linear"
    )
    conv_only = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(QuantNoMatchError, match=r"the model has none of those layers$"):
        resolve_quant_config(conv_only, [{"op_types": ["default"]}], "dynamic")
