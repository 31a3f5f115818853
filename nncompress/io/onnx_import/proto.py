"""Reading an ONNX file safely, and the facts about its graph that both the summary and the converter use.

External data is the one place an ONNX file names other files. Its ``location`` strings come from the
upload, so they are only honoured when they name a plain file directly inside a directory the caller
chose; anything else (``..``, an absolute path, a subdirectory, a symlink) is refused before a byte of
it is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nncompress.errors import ModelLoadError

__all__ = ["GraphFacts", "all_tensors", "check_external_data", "graph_facts", "read_model"]

# Ops whose result is not a function of their inputs: never folded into constants.
_NOT_FOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}


def read_model(path: str | Path, external_data_dir: str | Path | None = None) -> Any:
    """Parses ``path`` into a ``ModelProto``, loading external data only from ``external_data_dir``.

    Raises:
        ModelLoadError: the file cannot be parsed; it uses external data and no directory was given;
            a data location is not a plain file name inside that directory.
    """
    import onnx
    from onnx import external_data_helper

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"the ONNX file cannot be parsed: {exc}", path=str(path)) from exc
    external = [t for t in all_tensors(proto.graph) if external_data_helper.uses_external_data(t)]
    if not external:
        return proto
    if external_data_dir is None:
        raise ModelLoadError(
            f"ONNX tensor {external[0].name!r} is stored as external data; upload the .onnx file and its "
            "data file together (a zip holding both), or export with all tensors inside the .onnx file",
            tensor=external[0].name,
        )
    root = Path(external_data_dir)
    for tensor in external:
        check_external_data(tensor, root)
    try:
        external_data_helper.load_external_data_for_model(proto, str(root))
    except Exception as exc:
        raise ModelLoadError(f"the ONNX external data cannot be read: {exc}", directory=str(root)) from exc
    return proto


def check_external_data(tensor: Any, root: Path) -> Path:
    """The file ``tensor``'s external data lives in, after checking it is a plain file inside ``root``."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    plain = (
        location
        and location not in (".", "..")
        and "/" not in location
        and "\\" not in location
        and "\x00" not in location
        and not os.path.isabs(location)
        and ":" not in location  # a Windows drive
    )
    if not plain:
        raise ModelLoadError(
            f"ONNX tensor {tensor.name!r} names external data at {location!r}; only a plain file name "
            "inside the uploaded directory is accepted (no '..', absolute path or subdirectory)",
            tensor=tensor.name,
            location=location,
        )
    target = root / location
    if target.is_symlink() or not target.is_file():
        raise ModelLoadError(
            f"ONNX tensor {tensor.name!r}: external data file {location!r} is missing or not a regular file",
            tensor=tensor.name,
            location=location,
        )
    return target


def all_tensors(graph: Any) -> list[Any]:
    """Initializers and Constant node tensors: every place a graph can hold (or point to) weights."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    return tensors


@dataclass
class GraphFacts:
    """What the converter and the summary need to know about a graph before converting it."""

    opset: int
    consts: set[str] = field(default_factory=set)
    shapes: dict[str, list[Any]] = field(default_factory=dict)
    elem_types: dict[str, int] = field(default_factory=dict)


def graph_facts(proto: Any) -> tuple[GraphFacts, Any]:
    """Infers shapes and finds which values are constants; returns the facts and the inferred model."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:  # shape inference is a help, not a requirement
        inferred = proto
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    facts = GraphFacts(opset=opset)
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        facts.elem_types[info.name] = tensor_type.elem_type
        if tensor_type.HasField("shape"):
            facts.shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor_type.shape.dim
            ]
    for tensor in graph.initializer:
        facts.consts.add(tensor.name)
        facts.shapes[tensor.name] = list(tensor.dims)
        facts.elem_types[tensor.name] = tensor.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            facts.consts.update(node.output)
            for attr in node.attribute:
                if attr.HasField("t"):
                    facts.shapes[node.output[0]] = list(attr.t.dims)
                    facts.elem_types[node.output[0]] = attr.t.data_type
        elif (
            node.op_type == "CastLike"
            and {node.input[0]} <= facts.consts
            and facts.elem_types.get(node.input[1])
        ):
            # Exporters cast constants "like" the input; its dtype is known, so the result is constant.
            facts.consts.add(node.output[0])
        elif (
            node.domain in ("", "ai.onnx")
            and node.op_type not in _NOT_FOLDABLE
            and node.input
            and all(i in facts.consts for i in node.input if i)
        ):
            facts.consts.update(o for o in node.output if o)
    return facts, inferred
