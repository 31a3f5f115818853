"""Checking a job spec against its model before the job is queued (config keys, layers, input shape).

For a model with a registry architecture the architecture is built on the ``meta`` device: no
weights, no memory, a few milliseconds, and the upload itself is never loaded in the API process.
"""

from __future__ import annotations

from typing import Any

import torch

from app.db.models import Model
from app.errors import InvalidInputShape, InvalidJobSpec
from app.schemas.jobs import JobIn
from nncompress.config import parse_config_list, resolve_config
from nncompress.models import get
from nncompress.pipeline import JobSpec


def default_input_shape(model: Model, requested: list[int] | None) -> list[int]:
    """The shape the job will trace with: the request's, else the architecture's."""
    if requested is not None:
        if any(d < 1 for d in requested):
            raise InvalidInputShape(
                f"input_shape {requested} has a dimension below 1",
                errors=[{"field": "input_shape", "value": requested}],
            )
        return list(requested)
    if model.architecture is None:
        raise InvalidJobSpec(
            f"input_shape is required for a {model.format} model: "
            "it has no registry architecture to take it from",
            errors=[{"field": "input_shape", "message": "required"}],
        )
    return list(get(model.architecture).input_shape)


def check_on_architecture(architecture: str, config_list: list[Any], input_shape: list[int]) -> None:
    """Resolves the config against the architecture's layers and runs a meta forward pass of the shape."""
    arch = get(architecture)
    with torch.device("meta"):
        net = arch.build().eval()
    resolve_config(net, config_list)  # UnknownLayerError / NoMatchError name the entry and key
    example = torch.empty(input_shape, dtype=arch.input_dtype, device="meta")
    try:
        with torch.no_grad():
            net(example)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise InvalidInputShape(
            f"input_shape {input_shape} does not fit architecture {architecture!r} "
            f"(expected like {list(arch.input_shape)}): {str(exc).splitlines()[0]}",
            errors=[{"field": "input_shape", "value": input_shape, "expected": list(arch.input_shape)}],
        ) from None


def validate_job(*, model: Model, body: JobIn) -> dict[str, Any]:
    """Returns the spec stored on the job (``JobSpec.to_dict()``, what the worker runs).

    Raises:
        ConfigError: a spec key or a config_list entry is wrong (422 naming the entry and key).
        UnknownLayerError, NoMatchError: the config does not fit the model's layers.
        InvalidInputShape, InvalidJobSpec: the input shape is missing or does not fit.
    """
    raw = body.model_dump(mode="json", exclude={"model_id", "options", "webhook"})
    repeated = sorted(set(body.options) & (set(raw) | {"model_id"}))
    if repeated:
        raise InvalidJobSpec(
            f"options repeats the top-level field {repeated[0]!r}; set it once, at the top level",
            errors=[{"field": f"options.{repeated[0]}"}],
        )
    raw["input_shape"] = default_input_shape(model, body.input_shape)
    spec = JobSpec.from_dict({**raw, **body.options})
    parse_config_list(body.config_list)
    if model.architecture is not None:
        check_on_architecture(model.architecture, body.config_list, raw["input_shape"])
    return spec.to_dict()
