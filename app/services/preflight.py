"""Preflight in the API process, without ever loading an untrusted file.

A model with a registry architecture is preflighted on a freshly built instance of that
architecture: the report (layers, channels, coupled groups, unsupported ops) depends on the
structure, not on the weights, so the upload is not read at all. A Hugging Face folder is the same
idea: its class is built with random weights from its stored config.json, which passed the upload's
checks (no remote code, only classes that ship with transformers or timm); its weights are never
read. ONNX is parsed as protobuf and converted (no code runs); an ONNX zip is extracted first (plain
member names only, as checked at upload). A pickled model would have to be unpickled, which the
API never does: it gets 409 ``preflight_unavailable``; its job still validates the config in the
worker.

Building costs the API process memory and time in proportion to the model, so models above
``max_params`` parameters (default :data:`PREFLIGHT_MAX_PARAMS`) get 409 with the reason.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.schemas.models import PreflightIn
from app.services.bounds import JobLimits, check_input_shape, check_numbers
from app.services.validation import check_on_architecture, default_input_dtype, default_input_shape
from core.db.models import Model
from core.errors import InvalidUpload, PreflightUnavailable
from core.storage import Storage
from nncompress.inspection import preflight
from nncompress.io.intake import load_model
from nncompress.io.onnx_zip import extract_onnx_zip
from nncompress.models import get

# About 600 MB of float32 weights built (and traced) in the API process per request: BERT-base
# (110 M) and ResNet-152 (60 M) fit, BERT-large (335 M) does not.
PREFLIGHT_MAX_PARAMS = 150_000_000
_FLOAT_BYTES = 4


def example_input(model: Model, shape: list[int]) -> torch.Tensor:
    if default_input_dtype(model, None) == "int64":
        return torch.zeros(shape, dtype=torch.long)  # token ids: any valid id traces the same graph
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def build_for_preflight(model: Model, storage: Storage, *, max_params: int | None = None) -> nn.Module:
    """The module preflight traces: built from the architecture or config, or converted from ONNX.

    Raises:
        PreflightUnavailable: a pickle, or a model above ``max_params`` parameters.
    """
    limit = PREFLIGHT_MAX_PARAMS if max_params is None else max_params
    if model.architecture is not None:
        return get(model.architecture).build(**build_kwargs(model)).eval()
    if model.format == "onnx":
        return load_model(storage.local_path(model.storage_key), fmt="onnx")
    if model.format == "hf_dir":
        return build_hf(model, storage, max_params=limit)
    if model.format == "onnx_zip":
        return convert_onnx_zip(model, storage, max_params=limit)
    raise PreflightUnavailable(
        f"model {model.id} is a {model.format} file without a registry architecture; preflight would have to "
        "unpickle it, which the API never does. Upload safetensors weights with an architecture (or ONNX) to "
        "preflight; a job on this model still validates its config in the worker"
    )


def build_hf(model: Model, storage: Storage, *, max_params: int) -> nn.Module:
    """A Hugging Face folder's class with random weights, from its stored config.json.

    The parameter count recorded at upload (from the safetensors headers) bounds the build.
    """
    from nncompress.io.hf_build import build_model, parse_config

    details = model.details or {}
    _check_size(model, int(details.get("parameters") or 0), max_params, what="parameters")
    raw = _stored_hf_config(model, storage)
    return build_model(parse_config(raw)).eval()


def convert_onnx_zip(model: Model, storage: Storage, *, max_params: int) -> nn.Module:
    """An ONNX zip converted with its external data, extracted to a temp folder deleted afterwards.

    The zip's uncompressed size (from its central directory) bounds the conversion: float32
    weights take four bytes a parameter.
    """
    from nncompress.io.onnx_import import load_onnx

    path = storage.local_path(model.storage_key)
    with zipfile.ZipFile(path) as archive:
        size = sum(info.file_size for info in archive.infolist())
    _check_size(model, size // _FLOAT_BYTES, max_params, what="parameters' worth of float32 data")
    with tempfile.TemporaryDirectory(dir=storage.path("tmp"), prefix="preflight-onnx-") as tmp:
        onnx_path = extract_onnx_zip(path, Path(tmp))
        # check=False: the upload was already described; preflight needs the structure, and running
        # onnxruntime here would double the cost per request.
        return load_onnx(onnx_path, external_data_dir=Path(tmp), check=False).eval()


def _check_size(model: Model, count: int, limit: int, *, what: str) -> None:
    if count > limit:
        raise PreflightUnavailable(
            f"model {model.id} has about {count:,} {what}, above this deployment's preflight limit of "
            f"{limit:,}: building it in the API process would be too heavy. POST /v1/jobs still resolves "
            "the config_list against its layers (422 naming any unknown layer), and the job reports "
            "what was pruned",
            errors=[{"parameters": count, "limit": limit}],
        )


def _stored_hf_config(model: Model, storage: Storage) -> dict[str, Any]:
    """config.json as stored: a separate part (weights + config upload) or inside the zip."""
    from nncompress.io.hf_archive import CONFIG, MAX_CONFIG_BYTES, open_hf_source, read_json

    config_key = (model.details or {}).get("config_key")
    if config_key:
        path = storage.local_path(config_key)
        if path.stat().st_size > MAX_CONFIG_BYTES:  # the bound the upload passed
            raise InvalidUpload(f"the stored {CONFIG} is larger than {MAX_CONFIG_BYTES} bytes")
        return dict(json.loads(path.read_text(encoding="utf-8")))
    with open_hf_source(storage.local_path(model.storage_key)) as source:
        return dict(read_json(source, CONFIG, MAX_CONFIG_BYTES))


def build_kwargs(model: Model) -> dict[str, Any]:
    """What the uploaded weights need from the architecture's factory (a library model's head)."""
    return dict((model.details or {}).get("build_kwargs") or {})


def run_preflight(
    *,
    model: Model,
    storage: Storage,
    body: PreflightIn,
    max_params: int | None = None,
    limits: JobLimits | None = None,
) -> dict[str, Any]:
    """The preflight report of ``body.config_list`` on ``model`` (config errors → 422).

    Args:
        max_params: the largest model (parameters) built or converted for a preflight; None:
            :data:`PREFLIGHT_MAX_PARAMS`.
        limits: the example input's bounds (it is allocated for the trace); None: the defaults.
    """
    check_numbers(body.model_dump())
    shape = default_input_shape(model, body.input_shape)
    check_input_shape(shape, limits or JobLimits())
    if model.architecture is not None:
        # clear 422s before tracing
        check_on_architecture(model.architecture, body.config_list, shape, build_kwargs=build_kwargs(model))
    net = build_for_preflight(model, storage, max_params=max_params)
    report = preflight(net, body.config_list, example_input(model, shape), pruner=body.pruner)
    return report.to_dict()
