"""The table of ONNX op converters, and helpers converters share to read their inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import.builder import GraphBuilder

__all__ = ["CONVERTERS", "Converter", "converts", "optional_const", "required_const", "symmetric_pads"]

# A converter reads one ONNX node (and its attributes, decoded) and adds its fx nodes to the builder.
Converter = Callable[[GraphBuilder, Any, dict[str, Any]], None]

CONVERTERS: dict[str, Converter] = {}


def converts(*names: str) -> Callable[[Converter], Converter]:
    """Decorator registering a converter for the ONNX op types ``names``."""

    def wrap(fn: Converter) -> Converter:
        for name in names:
            CONVERTERS[name] = fn
        return fn

    return wrap


def required_const(b: GraphBuilder, node: Any, index: int, what: str) -> torch.Tensor:
    """Input ``index`` of ``node`` as a constant; ModelLoadError naming ``what`` when it is computed."""
    value = b.const(node.input[index]) if len(node.input) > index and node.input[index] else None
    if value is None:
        raise ModelLoadError(
            f"{node.op_type} {node.name!r}: {what} must be a constant initializer",
            node=node.name,
            op=node.op_type,
        )
    return value


def optional_const(b: GraphBuilder, node: Any, index: int) -> torch.Tensor | None:
    """Like :func:`required_const` for an optional input: None when the node leaves it out."""
    if len(node.input) > index and node.input[index]:
        return required_const(b, node, index, f"input {index}")
    return None


def symmetric_pads(node: Any, pads: Sequence[int], dims: int) -> tuple[int, ...]:
    """ONNX ``pads`` (all begins, then all ends) as torch padding; asymmetric padding is refused."""
    begin, end = tuple(pads[:dims]), tuple(pads[dims:])
    if begin != end:
        raise ModelLoadError(
            f"{node.op_type} {node.name!r}: asymmetric padding {list(pads)} is not supported", node=node.name
        )
    return begin
