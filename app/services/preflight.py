"""Preflight in the API process, without ever loading an untrusted file.

A model with a registry architecture is preflighted on a freshly built instance of that
architecture: the report (layers, channels, coupled groups, unsupported ops) depends on the
structure, not on the weights, so the upload is not read at all. ONNX is parsed as protobuf and
converted (no code runs). A pickled model would have to be unpickled, which the API never does:
it gets 409 ``preflight_unavailable``; its job still validates the config in the worker.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from app.db.models import Model
from app.errors import PreflightUnavailable
from app.schemas.models import PreflightIn
from app.services.validation import check_on_architecture, default_input_dtype, default_input_shape
from app.storage import Storage
from nncompress.inspection import preflight
from nncompress.io.intake import load_model
from nncompress.models import get


def example_input(model: Model, shape: list[int]) -> torch.Tensor:
    if default_input_dtype(model, None) == "int64":
        return torch.zeros(shape, dtype=torch.long)  # token ids: any valid id traces the same graph
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def build_for_preflight(model: Model, storage: Storage) -> nn.Module:
    if model.architecture is not None:
        return get(model.architecture).build(**build_kwargs(model)).eval()
    if model.format == "onnx":
        return load_model(storage.path(model.storage_key), fmt="onnx")
    if model.format != "pickle":
        raise PreflightUnavailable(
            f"preflight of a {model.format} upload is not available yet; POST /v1/jobs still resolves the "
            "config_list against its layers (422 naming any unknown layer)"
        )
    raise PreflightUnavailable(
        f"model {model.id} is a {model.format} file without a registry architecture; preflight would have to "
        "unpickle it, which the API never does. Upload safetensors weights with an architecture (or ONNX) to "
        "preflight; a job on this model still validates its config in the worker"
    )


def build_kwargs(model: Model) -> dict[str, Any]:
    """What the uploaded weights need from the architecture's factory (a library model's head)."""
    return dict((model.details or {}).get("build_kwargs") or {})


def run_preflight(*, model: Model, storage: Storage, body: PreflightIn) -> dict[str, Any]:
    """The preflight report of ``body.config_list`` on ``model`` (config errors → 422)."""
    shape = default_input_shape(model, body.input_shape)
    if model.architecture is not None:
        # clear 422s before tracing
        check_on_architecture(model.architecture, body.config_list, shape, build_kwargs=build_kwargs(model))
    net = build_for_preflight(model, storage)
    report = preflight(net, body.config_list, example_input(model, shape), pruner=body.pruner)
    return report.to_dict()
