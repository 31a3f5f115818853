"""Classifying an upload by its bytes and describing it, refusing at the door what can never run.

Every check here reads structure only (zip central directories, protobuf, JSON headers, pickle
opcodes); nothing from the upload is unpickled or executed (design §4). What a job will need later
(input shape and dtype, the layers a config_list may name, build arguments) is returned as the
model's ``details``.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from app.errors import (
    InvalidUpload,
    OnnxExternalData,
    UnknownArchitecture,
    UnsupportedModelFormat,
    UnsupportedOnnxOps,
    WeightsMismatch,
)
from app.services.model_summary import describe_weights, layers_of
from app.services.pickle_scan import torch_zip_kind
from nncompress.errors import ModelLoadError
from nncompress.io.intake import detect_format
from nncompress.models import names

# What the API calls each kind of upload (stored as Model.format).
FORMATS = ("safetensors", "state_dict", "onnx", "onnx_zip", "hf_dir", "pickle")
WEIGHTS_ONLY = frozenset({"safetensors", "state_dict"})

PT2_ROUTES = [
    {
        "route": "onnx",
        "how": 'torch.onnx.export(model, example, "model.onnx", dynamo=False), then upload model.onnx',
    },
    {
        "route": "weights",
        "how": "save_file(model.state_dict(), 'model.safetensors') and upload it with the "
        "'architecture' field (a registry name, torchvision/<model> or timm/<model>)",
    },
]
ONNX_EXPORT_HINT = (
    'export with torch.onnx.export(model, example, "model.onnx", dynamo=False, opset_version=17); '
    "the legacy TorchScript exporter emits plain Conv/Gemm/MatMul ops"
)


def classify(path: Path) -> str:
    """One of :data:`FORMATS`, from the content only (the file name is never consulted).

    Raises:
        UnsupportedModelFormat: a ``torch.export`` ``.pt2`` archive (names the routes that work).
        InvalidUpload: none of the accepted formats.
    """
    try:
        detected = detect_format(path)
    except ModelLoadError as exc:
        if zipfile.is_zipfile(path):
            return classify_zip(path)
        raise InvalidUpload(exc.message, errors=[{"code": exc.code, "message": exc.message}]) from None
    if detected == "pt2":
        refuse_pt2()
    if detected == "torch_zip":
        return torch_zip_kind(path)
    if detected in ("hf_dir", "zip"):
        return classify_zip(path)
    return detected


def classify_zip(path: Path) -> str:
    """``hf_dir`` (config.json + safetensors) or ``onnx_zip`` (one .onnx + its data), from the
    central directory alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidUpload(f"the zip archive cannot be read: {exc}") from None
    leaves = {n.rpartition("/")[2] for n in members}
    if "archive_format" in leaves and any(n.endswith("models/model.json") for n in members):
        refuse_pt2()
    if any(n.lower().endswith(".onnx") for n in members):
        return "onnx_zip"
    if "config.json" in leaves and any(leaf.endswith(".safetensors") for leaf in leaves):
        return "hf_dir"
    raise InvalidUpload(
        "the zip archive holds neither a Hugging Face model folder (config.json + *.safetensors) nor "
        "an ONNX model with its external data (model.onnx + its data file)",
        errors=[{"members": sorted(members)[:20]}],
    )


def refuse_pt2() -> None:
    """A ``torch.export`` program cannot be pruned here: say which uploads work instead."""
    raise UnsupportedModelFormat(
        "this is a torch.export (.pt2) program, not written by torch.save: its graph is frozen and "
        'cannot be pruned here. Upload ONNX (torch.onnx.export(model, x, "m.onnx", dynamo=False)) or '
        "a safetensors state_dict with its architecture name",
        errors=[{"format": "pt2", "routes": PT2_ROUTES}],
    )


def check_architecture(architecture: str | None, fmt: str) -> None:
    """Weights need an architecture; self-describing formats must not get one."""
    if architecture is None:
        if fmt in WEIGHTS_ONLY:
            raise UnknownArchitecture(
                f"a {fmt} file holds weights only: name their architecture in the 'architecture' form field "
                f"(known: {', '.join(names())}, or torchvision/<model>, timm/<model>)",
                errors=[{"field": "architecture", "known": names()}],
            )
        return
    if fmt in ("onnx", "onnx_zip", "hf_dir"):
        raise InvalidUpload(
            f"a {fmt} upload describes its own architecture; leave the 'architecture' field out "
            "(it names the architecture of safetensors or state_dict weights)",
            errors=[{"field": "architecture", "value": architecture, "format": fmt}],
        )


def describe(
    path: Path, fmt: str, architecture: str | None, *, config_path: Path | None = None
) -> dict[str, Any]:
    """The model's ``details``; refuses uploads that could never run.

    Args:
        path: the uploaded file.
        fmt: its :func:`classify` result.
        architecture: the registry or library name given with weights.
        config_path: a separately uploaded config.json (Hugging Face folder sent as parts).

    Raises:
        WeightsMismatch, UnknownArchitecture, UnsupportedOnnxOps, OnnxExternalData, InvalidUpload.
    """
    if config_path is not None:
        return describe_hf_parts(path, config_path)
    if fmt in WEIGHTS_ONLY:
        assert architecture is not None  # check_architecture refused None
        return describe_weights(path, fmt, architecture)
    if fmt == "onnx":
        return describe_onnx(path)
    if fmt == "onnx_zip":
        return describe_onnx_zip(path)
    if fmt == "hf_dir":
        return describe_hf(path)
    return {"source": "pickle"}


def describe_onnx(path: Path, *, external_data_dir: Path | None = None) -> dict[str, Any]:
    """Opset, inputs, ops and the layers the import will produce; 422 for unsupported ops or
    external data the upload does not carry."""
    import onnx
    from onnx import external_data_helper

    from nncompress.io.onnx_import import SUPPORTED_OPS, load_onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InvalidUpload(f"the ONNX file cannot be parsed: {exc}") from None
    external = sorted(
        {
            entry.value
            for tensor in proto.graph.initializer
            if external_data_helper.uses_external_data(tensor)
            for entry in tensor.external_data
            if entry.key == "location"
        }
    )
    if external and external_data_dir is None:
        raise OnnxExternalData(
            f"the ONNX model keeps its tensors in {', '.join(external)}, which was not uploaded: upload "
            "a zip of model.onnx and its data file(s), or export with the weights inside the .onnx "
            "file (models under 2 GB fit)",
            errors=[{"external_data": external, "upload": "a zip of the .onnx file and its data file(s)"}],
        )
    unsupported = sorted({n.op_type for n in proto.graph.node if n.op_type not in SUPPORTED_OPS})
    if unsupported:
        raise UnsupportedOnnxOps(
            f"the ONNX graph uses ops the importer does not support: {', '.join(unsupported)}; "
            + ONNX_EXPORT_HINT,
            errors=[{"ops": unsupported, "hint": ONNX_EXPORT_HINT, "supported": list(SUPPORTED_OPS)}],
        )
    try:
        net = load_onnx(path)
    except ModelLoadError as exc:
        raise InvalidUpload(exc.message, errors=[{"code": exc.code, "message": exc.message}]) from None
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [_onnx_input(v) for v in proto.graph.input if v.name not in initializers]
    first = inputs[0] if inputs else {"shape": None, "dtype": "float32"}
    layers = layers_of(net)
    return {
        "source": "onnx",
        "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": inputs,
        "input": {"shape": first["shape"], "dtype": first["dtype"]},
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "external_data": external,
        "layer_count": len(layers),
        "layers": layers,
    }


def _onnx_input(value: Any) -> dict[str, Any]:
    from onnx import TensorProto

    tensor_type = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    # A symbolic batch (or sequence) dimension becomes 1 in the example input.
    shape = [d if d else 1 for d in dims] if dims else None
    dtype = "int64" if tensor_type.elem_type in (TensorProto.INT64, TensorProto.INT32) else "float32"
    return {"name": value.name, "shape": shape, "dims": dims, "dtype": dtype}


def describe_onnx_zip(path: Path) -> dict[str, Any]:
    raise InvalidUpload("ONNX in a zip is not supported yet", errors=[{"format": "onnx_zip"}])


def describe_hf(path: Path) -> dict[str, Any]:
    """A Hugging Face ``save_pretrained`` folder (zipped, or as a folder): config.json as JSON and
    the safetensors headers, checked against the class built on the meta device."""
    from nncompress.io.hf_build import build_model, parse_config
    from nncompress.io.hf_dir import describe_hf_dir

    try:
        summary = describe_hf_dir(path)
    except ModelLoadError as exc:
        keys = ("missing", "unexpected", "shape_mismatches")
        fields = {k: exc.context[k] for k in keys if k in exc.context}
        if fields:
            raise WeightsMismatch(exc.message, errors=[fields]) from None
        raise InvalidUpload(exc.message, errors=[{"code": exc.code, "message": exc.message}]) from None
    layers = layers_of(build_model(parse_config(summary.config), device="meta"))
    info = summary.to_dict()
    return {
        "source": "hf_dir",
        "library": info["library"],
        "class_name": info["class_name"],
        "architecture": info["architecture"],
        "model_type": info["model_type"],
        "input": {"shape": info["input_shape"], "dtype": _dtype_name(info["input_dtype"])},
        "vocab_size": info["vocab_size"],
        "parameters": info["num_params"],
        "file_dtypes": info["file_dtypes"],
        "layer_count": len(layers),
        "layers": layers,
    }


def describe_hf_parts(weights: Path, config: Path) -> dict[str, Any]:
    """A Hugging Face model sent as two parts: its model.safetensors and its config.json."""
    with tempfile.TemporaryDirectory(dir=weights.parent, prefix="hf-parts-") as tmp:
        folder = Path(tmp)
        # Hard links: the folder reader refuses symlinks, and a copy of the weights is not needed.
        os.link(weights, folder / "model.safetensors")
        os.link(config, folder / "config.json")
        return describe_hf(folder)


def _dtype_name(name: str) -> str:
    return {"int64": "int64", "long": "int64"}.get(name, "float32")
