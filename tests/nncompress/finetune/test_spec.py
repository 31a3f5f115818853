"""FinetuneSpec: defaults, round trip, and errors that name the dotted key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nncompress.errors import ConfigError
from nncompress.finetune import DistillationSpec, FinetuneSpec


def test_round_trip_and_nested_distillation() -> None:
    spec = FinetuneSpec.from_dict(
        {"epochs": 3, "optimizer": "AdamW", "lr": 1e-3, "schedule": "cosine", "distillation": {"weight": 0.7}}
    )
    assert spec.optimizer == "adamw" and spec.distillation == DistillationSpec(weight=0.7, temperature=4.0)
    assert FinetuneSpec.from_dict(spec.to_dict()) == spec


def test_direct_construction_is_checked_and_normalised() -> None:
    spec = FinetuneSpec(optimizer="SGD", distillation={"weight": 0.2, "temperature": 2.0})  # type: ignore[arg-type]
    assert spec.optimizer == "sgd" and isinstance(spec.distillation, DistillationSpec)
    with pytest.raises(ValidationError, match=r"batch_size\n  Input should be greater than or equal to 1"):
        FinetuneSpec(batch_size=0)
    with pytest.raises(ValidationError, match=r"temperature\n  Input should be greater than 0"):
        DistillationSpec(temperature=0)


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"epoch": 2}, "job.finetune.epoch", "did you mean 'epochs'"),
        ({"epochs": 0}, "job.finetune.epochs", "an integer >= 1, got 0"),
        ({"epochs": 1.5}, "job.finetune.epochs", "an integer >= 1, got 1.5"),
        ({"lr": -1}, "job.finetune.lr", "a number in (0, inf), got -1"),
        ({"lr": float("nan")}, "job.finetune.lr", "got nan"),
        ({"optimizer": "rmsprop"}, "job.finetune.optimizer", "one of sgd, adam, adamw"),
        ({"schedule": "linear"}, "job.finetune.schedule", "one of none, cosine, step"),
        ({"momentum": 1}, "job.finetune.momentum", "[0, 1), got 1"),
        ({"gamma": 0}, "job.finetune.gamma", "(0, 1], got 0"),
        ({"amp": "yes"}, "job.finetune.amp", "true or false"),
        ({"device": "tpu"}, "job.finetune.device", "'cpu', 'cuda', 'cuda:N' or 'auto'"),
        ({"distillation": 0.5}, "job.finetune.distillation", "an object {weight, temperature} or null"),
        ({"distillation": {"weight": 1.5}}, "job.finetune.distillation.weight", "[0, 1], got 1.5"),
        ({"distillation": {"temp": 2}}, "job.finetune.distillation.temp", "did you mean 'temperature'"),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        FinetuneSpec.from_dict(data, prefix="job.finetune")
    assert info.value.context["key"] == key
    assert words in info.value.message, info.value.message


def test_not_an_object() -> None:
    with pytest.raises(ConfigError, match="finetune must be an object, got list"):
        FinetuneSpec.from_dict([1, 2])  # type: ignore[arg-type]
