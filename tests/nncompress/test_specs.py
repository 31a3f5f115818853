"""nncompress.specs: one declaration per spec, and errors that name the dotted key and the expectation
read from that declaration, whether the spec is read by the engine or is a field of another model."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from nncompress.errors import ConfigError
from nncompress.finetune import FinetuneSpec
from nncompress.pipeline import JobOptions, ScheduleSpec
from nncompress.quantize import QuantSpec
from nncompress.quantize.config import QuantConfigError


@pytest.mark.parametrize(
    ("spec", "data", "key", "message"),
    [
        (
            JobOptions,
            {"latency_batch_sizes": [1, 0]},
            "options.latency_batch_sizes",
            "options.latency_batch_sizes[1] must be an integer >= 1, got 0",
        ),
        (JobOptions, {"latency_batch_sizes": []}, "options.latency_batch_sizes", "(at least one)"),
        (JobOptions, {"seed": 1.5}, "options.seed", "options.seed must be an integer >= 0, got 1.5"),
        (JobOptions, {"latency_dtype": "bf16"}, "options.latency_dtype", "one of float32, bfloat16, float16"),
        (ScheduleSpec, {"kind": "agb"}, "schedule.kind", "got 'agb'; did you mean 'agp'?"),
        (ScheduleSpec, {"accuracy_budget": 101}, "schedule.accuracy_budget", "a number in [0, 100] or null"),
        (ScheduleSpec, {"step": 2}, "schedule.step", "unknown key schedule.step; did you mean 'steps'?"),
        (FinetuneSpec, {"lr": "0.1"}, "finetune.lr", "a number in (0, inf), got '0.1'"),
    ],
)
def test_errors_name_the_key_and_what_the_field_declares(
    spec: Any, data: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        spec.from_dict(data)
    assert info.value.context["key"] == key
    assert message in info.value.message, info.value.message


def test_a_spec_field_of_another_model_raises_the_engine_error() -> None:
    class Request(BaseModel):
        finetune: Annotated[FinetuneSpec, FinetuneSpec.raising_config_errors()] | None = None
        quantize: Annotated[QuantSpec, QuantSpec.raising_config_errors()] | None = None

    with pytest.raises(ConfigError) as info:
        Request.model_validate({"finetune": {"distillation": {"weight": 2}}})
    assert info.value.context["key"] == "finetune.distillation.weight"
    assert "finetune.distillation.weight must be a number in [0, 1], got 2" in info.value.message
    with pytest.raises(QuantConfigError) as quant:  # the quantization spec keeps its own error type
        Request.model_validate({"quantize": {"mode": "int4"}})
    assert quant.value.context["key"] == "quantize.mode"
    assert Request.model_validate({"finetune": {"epochs": 3}}).finetune == FinetuneSpec(epochs=3)


def test_round_trips_through_json() -> None:
    options = JobOptions.from_dict({"seed": 7, "latency_batch_sizes": [1, 8], "dataset": "mnist_subset"})
    assert options.latency_batch_sizes == (1, 8)
    assert JobOptions.from_dict(options.to_dict()) == options
    quant = QuantSpec.from_dict({"mode": "dynamic", "config_list": [{"op_types": ["Linear"]}]})
    assert quant.to_dict()["config_list"] == [{"op_types": ["Linear"]}]
    assert QuantSpec.from_dict(quant.to_dict()) == quant


def test_the_schema_carries_the_bounds_the_messages_quote() -> None:
    schema = FinetuneSpec.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["momentum"] == {
        "default": 0.9,
        "description": "SGD momentum (Adam ignores it)",
        "exclusiveMaximum": 1.0,
        "minimum": 0.0,
        "title": "Momentum",
        "type": "number",
    }
    entry = QuantSpec.model_json_schema()["properties"]["config_list"]["items"]
    assert entry["additionalProperties"] is False
    assert {"required": ["op_types"]} in entry["allOf"][0]["anyOf"]
