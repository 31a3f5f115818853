"""Classifying an upload by its bytes and describing it, refusing at the door what can never run.

Every check here reads structure only (zip central directories, protobuf, JSON headers, pickle
opcodes); nothing from the upload is unpickled or executed (design §4). What a job will need later
(input shape and dtype, the layers a config_list may name, build arguments) is returned as the
model's ``details``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from app.services.json_bounds import check_safetensors_header
from app.services.model_summary import describe_weights, layers_of
from app.services.pickle_scan import legacy_torch_kind, torch_zip_kind
from core.errors import (
    InvalidUpload,
    OnnxExternalData,
    UnknownArchitecture,
    UnsupportedModelFormat,
    UnsupportedOnnxOps,
    WeightsMismatch,
)
from nncompress.errors import ModelLoadError
from nncompress.io.intake import detect_format
from nncompress.io.onnx_zip import ZIP_MEMBER_NAME
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
# An ONNX zip: a few plain file names (model.onnx, model.onnx.data, ...), none inflating absurdly.
MAX_ZIP_MEMBERS = 64
MAX_RATIO = 200
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
    check_safetensors_header(path)  # before detect_format's json.loads recurses into it
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
    if detected == "pickle":
        return legacy_torch_kind(path)  # a legacy torch.save state_dict is weights, not code
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


def describe_onnx(path: Path, *, data_files: set[str] | None = None) -> dict[str, Any]:
    """Opset, inputs, ops and the layers the import will produce (no conversion, nothing run);
    422 for unsupported ops or external data the upload does not carry.

    Args:
        path: the .onnx file.
        data_files: the other files of an uploaded zip (where external data may live), or None.
    """
    import onnx

    from nncompress.io.onnx_import import example_inputs
    from nncompress.io.onnx_import.summary import summarize

    try:
        proto = onnx.load(str(path), load_external_data=False)
        summary = summarize(proto)
    except Exception as exc:  # a protobuf or analysis failure: the file is not usable ONNX
        raise InvalidUpload(f"the ONNX file cannot be parsed: {str(exc).splitlines()[0]}") from None
    locations = _external_locations(proto)
    if locations and data_files is None:
        raise OnnxExternalData(
            f"the ONNX model keeps its tensors in {', '.join(locations)}, which was not uploaded: upload "
            "a zip of model.onnx and its data file(s), or export with the weights inside the .onnx "
            "file (models under 2 GB fit)",
            errors=[{"external_data": locations, "upload": "a zip of the .onnx file and its data file(s)"}],
        )
    missing = [name for name in locations if data_files is not None and name not in data_files]
    if missing:
        raise OnnxExternalData(
            f"the zip lacks the external data file(s) {', '.join(missing)} that the ONNX model names",
            errors=[{"external_data": locations, "missing": missing}],
        )
    if summary.unsupported_ops:
        hints = {op: summary.hints.get(op, ONNX_EXPORT_HINT) for op in summary.unsupported_ops}
        raise UnsupportedOnnxOps(
            f"the ONNX graph uses ops the importer does not support: {', '.join(summary.unsupported_ops)}; "
            + ONNX_EXPORT_HINT,
            errors=[{"ops": list(summary.unsupported_ops), "hints": hints, "hint": ONNX_EXPORT_HINT}],
        )
    dims = {t.name: list(t.dims) for t in proto.graph.initializer}
    layers = [_onnx_layer(layer.name, layer.type, dims) for layer in summary.layers]
    first = summary.inputs[0] if summary.inputs else None
    example = example_inputs(summary) if first is not None else ()
    return {
        "source": "onnx",
        "opset": summary.opset,
        "producer": summary.producer,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in summary.inputs],
        "input": {
            "shape": list(example[0].shape) if example else None,
            "dtype": "int64" if first is not None and not first.dtype.startswith("float") else "float32",
        },
        "ops": list(summary.ops),
        "external_data": locations,
        "layer_count": len(layers),
        "layers": layers,
    }


# Layer types whose module carries a ``weight`` (what a config_list can prune or exclude by name).
_WEIGHTED = ("Conv", "Linear", "BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "Embedding")


def _onnx_layer(name: str, type_name: str, dims: dict[str, list[int]]) -> dict[str, Any]:
    layer: dict[str, Any] = {"name": name, "type": type_name}
    if f"{name}.weight" in dims:
        layer["weight_shape"] = dims[f"{name}.weight"]
    elif type_name.startswith(_WEIGHTED):
        layer["weight_shape"] = [1]  # named after no initializer (folded or renamed): shape unknown
    return layer


def _external_locations(proto: Any) -> list[str]:
    from onnx import external_data_helper

    return sorted(
        {
            entry.value
            for tensor in proto.graph.initializer
            if external_data_helper.uses_external_data(tensor)
            for entry in tensor.external_data
            if entry.key == "location"
        }
    )


def describe_onnx_zip(path: Path) -> dict[str, Any]:
    """A zip of one .onnx file and the external data files it names, side by side.

    Only the .onnx member is extracted (to a temp file next to the upload) and parsed; the data
    files are checked by name and size from the central directory, never read here.
    """
    with zipfile.ZipFile(path) as archive:
        members = [i for i in archive.infolist() if not i.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise InvalidUpload(f"the zip holds {len(members)} files; an ONNX export has a few")
        for info in members:
            leaf = info.filename.rpartition("/")[2]
            if not ZIP_MEMBER_NAME.fullmatch(leaf) or info.filename.count("/") > 1:
                raise InvalidUpload(
                    f"zip member {info.filename!r}: expected plain file names at the top (or in one folder)",
                    errors=[{"member": info.filename}],
                )
            if info.file_size > MAX_RATIO * max(info.compress_size, 1) + 1024 * 1024:
                raise InvalidUpload(f"zip member {info.filename!r} inflates beyond any model file")
        onnx_members = [i for i in members if i.filename.lower().endswith(".onnx")]
        if len(onnx_members) != 1:
            raise InvalidUpload(
                f"the zip holds {len(onnx_members)} .onnx files; expected exactly one with its data file(s)"
            )
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".onnx") as tmp:
            with archive.open(onnx_members[0]) as src:
                shutil.copyfileobj(src, tmp, 1024 * 1024)
            tmp.flush()
            data_files = {i.filename.rpartition("/")[2] for i in members} - {
                onnx_members[0].filename.rpartition("/")[2]
            }
            details = describe_onnx(Path(tmp.name), data_files=data_files)
    details["source"] = "onnx_zip"
    return details


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
