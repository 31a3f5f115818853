"""Checking a job spec against its model before the job is queued (config keys, layers, input shape).

For a model with a registry architecture the architecture is built on the ``meta`` device: no
weights, no memory, a few milliseconds, and the upload itself is never loaded in the API process.
"""

from __future__ import annotations

from typing import Any

import torch

from app.db.models import Dataset, Model
from app.errors import InvalidInputShape, InvalidJobSpec
from app.schemas.jobs import JobIn
from app.services.datasets import check_job_dataset
from nncompress.config import parse_config_list, resolve_config
from nncompress.models import get
from nncompress.pipeline import JobSpec
from nncompress.pipeline.spec import DATA_DRIVEN_PRUNERS
from nncompress.quantize import QuantSpec, plan_quantization


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


def check_on_architecture(
    architecture: str,
    config_list: list[Any] | None,
    input_shape: list[int],
    quantize: QuantSpec | None = None,
) -> int | None:
    """Resolves the config (and quant config) against the architecture's layers and runs a meta
    forward pass of the shape.

    Returns:
        The model's class count (its 2-D output's width), or None when the output is not 2-D.
    """
    arch = get(architecture)
    with torch.device("meta"):
        net = arch.build().eval()
    if config_list is not None:
        resolve_config(net, config_list)  # UnknownLayerError / NoMatchError name the entry and key
    if quantize is not None:
        plan_quantization(net, quantize)  # QuantConfigError names the entry, key and nearest layers
    example = torch.empty(input_shape, dtype=arch.input_dtype, device="meta")
    try:
        with torch.no_grad():
            out = net(example)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise InvalidInputShape(
            f"input_shape {input_shape} does not fit architecture {architecture!r} "
            f"(expected like {list(arch.input_shape)}): {str(exc).splitlines()[0]}",
            errors=[{"field": "input_shape", "value": input_shape, "expected": list(arch.input_shape)}],
        ) from None
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def validate_job(*, model: Model, body: JobIn, dataset: Dataset | None = None) -> dict[str, Any]:
    """Returns the spec stored on the job (``JobSpec.to_dict()``, what the worker runs).

    Args:
        model: the job's model.
        body: the request.
        dataset: the row of ``body.dataset_id`` (the caller checked it is the tenant's).

    Raises:
        ConfigError: a spec key or a config_list entry is wrong (422 naming the entry and key);
            QuantConfigError for the quantize config, the finetune/schedule keys likewise.
        UnknownLayerError, NoMatchError: the config does not fit the model's layers.
        InvalidInputShape, InvalidJobSpec: the input shape is missing or does not fit.
        DatasetError: the data set does not fit the model (channels, shape, classes).
    """
    raw = body.model_dump(mode="json", exclude={"model_id", "options", "webhook"})
    _job_without_pruning(body, raw)
    if isinstance(body.finetune, dict) and "device" not in body.finetune:
        # Fine-tuning runs where the job runs (a GPU worker for device=cuda) unless told otherwise.
        raw["finetune"] = {**body.finetune, "device": body.device}
    repeated = sorted(set(body.options) & (set(raw) | {"model_id"}))
    if repeated:
        raise InvalidJobSpec(
            f"options repeats the top-level field {repeated[0]!r}; set it once, at the top level",
            errors=[{"field": f"options.{repeated[0]}"}],
        )
    raw["input_shape"] = default_input_shape(model, body.input_shape)
    spec = JobSpec.from_dict({**raw, **body.options})
    if body.config_list is not None:
        parse_config_list(body.config_list)
    classes = None
    if model.architecture is not None:
        classes = check_on_architecture(
            model.architecture, body.config_list, raw["input_shape"], spec.quantize
        )
    _check_data(spec, dataset, raw["input_shape"], classes)
    return spec.to_dict()


def _job_without_pruning(body: JobIn, raw: dict[str, Any]) -> None:
    """No config_list (or pruner null) is a job without pruning; a pruner named without one is a mistake."""
    if body.config_list is not None and body.pruner is not None:
        return
    if body.config_list is None and body.pruner is not None and "pruner" in body.model_fields_set:
        raise InvalidJobSpec(
            f"pruner {body.pruner!r} needs a config_list; leave both out (or pruner null) to skip pruning",
            errors=[{"field": "config_list", "message": "required with a pruner"}],
        )
    raw["pruner"] = None
    if body.config_list is None:
        raw.pop("config_list", None)  # a config_list with pruner null stays: JobSpec refuses it, naming it


def _check_data(spec: JobSpec, dataset: Dataset | None, input_shape: list[int], classes: int | None) -> None:
    uses = [
        name
        for name, used in (
            ("finetune", spec.finetune is not None),
            ("schedule", spec.schedule is not None),
            (
                f"quantize mode {spec.quantize.mode!r} (calibration)" if spec.quantize else "",
                spec.quantize is not None and spec.quantize.mode != "dynamic",
            ),
            (f"pruner {spec.pruner!r} (ranks channels from data)", spec.pruner in DATA_DRIVEN_PRUNERS),
        )
        if used
    ]
    if dataset is None:
        if uses and spec.dataset is None:
            raise InvalidJobSpec(
                f"{uses[0]} needs a labelled data set: upload one (POST /v1/datasets), pass its dataset_id",
                errors=[{"field": "dataset_id", "message": "required", "needed_by": uses}],
            )
        return
    check_job_dataset(dataset, input_shape=input_shape, num_classes=classes)
    if dataset.val_samples is None and max(1, round(dataset.samples * spec.val_fraction)) >= dataset.samples:
        raise InvalidJobSpec(
            f"data set {dataset.id} has {dataset.samples} sample(s): val_fraction={spec.val_fraction} "
            "leaves none to train on",
            errors=[{"field": "val_fraction", "samples": dataset.samples}],
        )
