"""Checking a job spec against its model before the job is queued (config keys, layers, input shape).

The upload itself is never loaded in the API process. A model with a registry architecture is
checked against the description intake stored (``details``: its layers, and the output shape of its
default input): the config_list resolves against a weightless skeleton of those layers, cached per
model in this process, and only an input shape other than the default needs a meta forward pass,
cached per architecture and shape. Measured on torchvision ResNet-50: building it on the ``meta``
device took 41 ms and its forward pass 45 ms on every submit; resolving against the cached skeleton
takes 0.6 ms. Models recorded before intake stored layers, and quantize configs (whose resolver
reads module classes), are still checked on the architecture built on ``meta``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from app.schemas.jobs import JobIn
from app.services.bounds import JobLimits, check_job_limits, check_numbers
from app.services.datasets import check_job_dataset
from app.services.lru import Lru
from app.services.model_summary import build_meta, meta_output_shape, skeleton
from app.services.model_views import ModelView
from core.db.models import Dataset, Model
from core.errors import InvalidInputShape, InvalidJobSpec
from nncompress.config import parse_config_list, resolve_config
from nncompress.models import get
from nncompress.pipeline import JobSpec
from nncompress.pipeline.spec import DATA_DRIVEN_PRUNERS
from nncompress.quantize import QuantSpec, plan_quantization

_TORCH_DTYPES = {"float32": torch.float32, "int64": torch.long}
# A model row, or the cached view of one that a submit validates against (app.services.model_views).
ModelLike = Model | ModelView


def default_input_shape(model: ModelLike, requested: list[int] | None) -> list[int]:
    """The shape the job will trace with: the request's, else the architecture's, else the one
    intake read from the file (ONNX input, Hugging Face config)."""
    if requested is not None:
        if any(d < 1 for d in requested):
            raise InvalidInputShape(
                f"input_shape {requested} has a dimension below 1",
                errors=[{"field": "input_shape", "value": requested}],
            )
        return list(requested)
    if model.architecture is not None:
        return list(get(model.architecture).input_shape)
    read = (model.details or {}).get("input") or {}
    if read.get("shape"):
        return [int(d) for d in read["shape"]]
    raise InvalidJobSpec(
        f"input_shape is required for a {model.format} model: "
        "it has no registry architecture and its file does not say",
        errors=[{"field": "input_shape", "message": "required"}],
    )


def default_input_dtype(model: ModelLike, requested: str | None) -> str:
    """The example input's dtype: the request's, else the model's (int64 for token ids), else float32."""
    if requested is not None:
        return requested
    read = (model.details or {}).get("input") or {}
    if read.get("dtype"):
        return str(read["dtype"])
    if model.architecture is not None and get(model.architecture).input_dtype == torch.long:
        return "int64"
    return "float32"


def check_on_architecture(
    architecture: str,
    config_list: list[Any] | None,
    input_shape: list[int],
    quantize: QuantSpec | None = None,
    *,
    build_kwargs: dict[str, Any] | None = None,
    input_dtype: str | None = None,
) -> int | None:
    """Resolves the config (and quant config) against the architecture's layers and runs a meta
    forward pass of the shape.

    Args:
        build_kwargs: what the uploaded weights need (a library model's ``num_classes``).
        input_dtype: the example input's dtype; None takes the architecture's.

    Returns:
        The model's class count (its 2-D output's width), or None when the output is not 2-D.
    """
    net = build_meta(architecture, build_kwargs)
    if config_list is not None:
        resolve_config(net, config_list)  # UnknownLayerError / NoMatchError name the entry and key
    if quantize is not None:
        plan_quantization(net, quantize)  # QuantConfigError names the entry, key and nearest layers
    return _width(_output_shape(net, architecture, input_shape, input_dtype))


def _output_shape(
    net: nn.Module, architecture: str, input_shape: list[int], input_dtype: str | None
) -> list[int] | None:
    arch = get(architecture)
    dtype = arch.input_dtype if input_dtype is None else _TORCH_DTYPES[input_dtype]
    try:
        return meta_output_shape(net, input_shape, dtype)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise InvalidInputShape(
            f"input_shape {input_shape} does not fit architecture {architecture!r} "
            f"(expected like {list(arch.input_shape)}): {str(exc).splitlines()[0]}",
            errors=[{"field": "input_shape", "value": input_shape, "expected": list(arch.input_shape)}],
        ) from None


def _width(output_shape: list[int] | None) -> int | None:
    """The class count: the width of a 2-D output."""
    return int(output_shape[1]) if output_shape is not None and len(output_shape) == 2 else None


def has_stored_layers(model: ModelLike) -> bool:
    """Whether intake stored what :func:`check_on_stored_layers` needs (uploads since issue 10)."""
    details = model.details or {}
    return model.architecture is not None and "layers" in details and "output_shape" in details


def check_on_stored_layers(
    model: ModelLike,
    config_list: Sequence[Any] | None,
    input_shape: list[int],
    input_dtype: str,
) -> int | None:
    """:func:`check_on_architecture` (without a quantize config) from the stored description.

    Returns:
        The model's class count (its 2-D output's width), or None when the output is not 2-D.
    """
    details = model.details or {}
    if config_list is not None:
        _check_fits(model, config_list)
    stored = details.get("input") or {}
    if input_shape == stored.get("shape") and input_dtype == stored.get("dtype"):
        return _width(details["output_shape"])
    return _width(
        _checked_output_shape(
            model.architecture or "",
            json.dumps(details.get("build_kwargs") or {}, sort_keys=True),
            tuple(input_shape),
            input_dtype,
        )
    )


@functools.lru_cache(maxsize=256)
def _checked_output_shape(
    architecture: str, build_kwargs: str, input_shape: tuple[int, ...], input_dtype: str
) -> list[int] | None:
    # InvalidInputShape is raised, not cached: a wrong shape costs its forward pass each time.
    net = build_meta(architecture, json.loads(build_kwargs))
    return _output_shape(net, architecture, list(input_shape), input_dtype)


# (model id, config_list as canonical JSON) that resolved on the model's layers, most recent last.
# Parsing and resolving were a quarter of a submit's validation; the same config_list comes back for
# the same model in a sweep over options (fine-tuning, quantization) and in retries.
_FITTING: Lru[tuple[str, str], bool] = Lru(1024)


def _check_fits(model: ModelLike, config_list: Sequence[Any]) -> None:
    """Resolves ``config_list`` on the model's skeleton unless it already did in this process.

    A model's layers never change, so a config_list that resolved on them once always does; only
    successes are remembered (a refused config_list raises its error each time).
    """
    key = (model.id, json.dumps(config_list, sort_keys=True, separators=(",", ":")))
    if _FITTING.get(key):
        return
    resolve_config(_skeleton_of(model), config_list)
    _FITTING.put(key, True)


_SKELETONS: Lru[str, nn.Module] = Lru(64)


def _skeleton_of(model: ModelLike) -> nn.Module:
    """The model's weightless skeleton, built once per process (a model's layers never change)."""
    net = _SKELETONS.get(model.id)
    if net is None:
        net = skeleton((model.details or {})["layers"])
        _SKELETONS.put(model.id, net)
    return net


def check_on_summary(model: ModelLike, config_list: list[Any] | None) -> None:
    """Resolves the config against the layers intake read from a model without a registry
    architecture (ONNX, Hugging Face): a layer name that is not there is a 422 now, not a failed job.

    The quantize config is left to the worker: its resolver looks at module classes, which the
    weightless stand-in does not have.
    """
    layers = (model.details or {}).get("layers")
    if not layers or config_list is None:
        return  # a pickle, or a summary without layers: the worker validates against the loaded model
    resolve_config(skeleton(layers), config_list)


def validate_job(
    *, model: ModelLike, body: JobIn, dataset: Dataset | None = None, limits: JobLimits | None = None
) -> dict[str, Any]:
    """Returns the spec stored on the job (``JobSpec.to_dict()``, what the worker runs).

    Args:
        model: the job's model.
        body: the request.
        dataset: the row of ``body.dataset_id`` (the caller checked it is the tenant's).
        limits: the deployment's resource bounds; None takes the defaults.

    Raises:
        ConfigError: a spec key or a config_list entry is wrong (422 naming the entry and key);
            QuantConfigError for the quantize config, the finetune/schedule keys likewise.
        UnknownLayerError, NoMatchError: the config does not fit the model's layers.
        InvalidInputShape, InvalidJobSpec: the input shape is missing or does not fit.
        DatasetError: the data set does not fit the model (channels, shape, classes).
        InvalidJobSpec: a number is not finite or out of range, or the job is over ``limits``.
    """
    check_numbers(body.model_dump())  # before any of it reaches float(), torch or the database
    raw = body.model_dump(mode="json", exclude={"model_id", "options", "webhook", "mlflow"})
    _job_without_pruning(body, raw)
    if body.finetune is not None and "device" not in body.finetune.model_fields_set:
        # Fine-tuning runs where the job runs (a GPU worker for device=cuda) unless told otherwise.
        raw["finetune"]["device"] = body.device
    raw["input_shape"] = default_input_shape(model, body.input_shape)
    raw["input_dtype"] = default_input_dtype(model, body.input_dtype)
    spec = JobSpec.from_dict({**raw, **body.options.to_dict()})
    check_job_limits(spec, limits or JobLimits())  # before a meta forward pass of a huge shape
    if spec.quantize is None and has_stored_layers(model):
        classes = check_on_stored_layers(model, body.config_list, raw["input_shape"], raw["input_dtype"])
    else:
        classes = _check_on_model(model, body, spec, raw["input_shape"], raw["input_dtype"])
    _check_data(spec, dataset, raw["input_shape"], classes)
    return spec.to_dict()


def _check_on_model(
    model: ModelLike, body: JobIn, spec: JobSpec, input_shape: list[int], input_dtype: str
) -> int | None:
    """The checks of a model intake did not describe: its registry architecture built on ``meta``, or
    the layers read from its file (ONNX, Hugging Face); returns its class count when known."""
    if body.config_list is not None:
        parse_config_list(body.config_list)  # its errors first, whatever the checks below look at
    if model.architecture is not None:
        return check_on_architecture(
            model.architecture,
            body.config_list,
            input_shape,
            spec.quantize,
            build_kwargs=(model.details or {}).get("build_kwargs"),
            input_dtype=input_dtype,
        )
    check_on_summary(model, body.config_list)
    classes = (model.details or {}).get("num_classes")
    return None if classes is None else int(classes)


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
