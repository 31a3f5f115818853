"""The fx graph under construction while an ONNX graph is walked node by node."""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from nncompress.errors import ModelLoadError

__all__ = ["GraphBuilder", "identifier"]


class GraphBuilder:
    """Accumulates fx nodes and modules while walking the ONNX graph in topological order."""

    def __init__(self, initializers: dict[str, torch.Tensor], ranks: dict[str, int]) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: dict[str, fx.Node] = {}
        self.consts = initializers
        self.ranks = ranks
        # ONNX values that hold tensor *dimensions* (Shape → Gather → Concat → Reshape chains). They
        # are kept as Python ints and lists in the graph, so tracers see x.size(0) symbolically and
        # the batch dimension stays dynamic when the converted model is exported again.
        self.dims: set[str] = set()
        self._used_names: set[str] = set()

    def add_input(self, name: str) -> None:
        """Adds a graph input (a placeholder named after the ONNX input)."""
        self.values[name] = self.graph.placeholder(self._unique(identifier(name)))

    def const(self, name: str) -> torch.Tensor | None:
        """The constant (initializer or folded Constant) called ``name``, or None when it is computed."""
        return self.consts.get(name)

    def value(self, name: str) -> fx.Node:
        """The fx node holding ONNX value ``name``; a constant used as data becomes a buffer."""
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            # A constant used as data (not as a layer weight) becomes a buffer of the root.
            attr = self._unique("const_" + identifier(name))
            self.root.register_buffer(attr, self.consts[name], persistent=True)
            node = self.graph.get_attr(attr)
            self.values[name] = node
            return node
        raise ModelLoadError(f"ONNX value {name!r} is used before it is produced", value=name)

    def add_module(self, weight_name: str, fallback: str, module: nn.Module) -> str:
        """Adds a layer at the path its weight names (``conv1.weight`` → ``conv1``); returns the path."""
        path = weight_name.rsplit(".", 1)[0] if weight_name.endswith(".weight") else ""
        if not path or not all(
            part.isidentifier() and not keyword.iskeyword(part) for part in path.split(".")
        ):
            path = identifier(fallback)
        path = self._unique(path)
        parent = self.root
        parts = path.split(".")
        for part in parts[:-1]:
            child = getattr(parent, part, None)
            if not isinstance(child, nn.Module):
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(parts[-1], module)
        return path

    def call_module(self, out: str, path: str, args: Sequence[Any]) -> None:
        """Calls the layer at ``path``; its result becomes ONNX value ``out``."""
        self.values[out] = self.graph.call_module(path, tuple(args))

    def dims_value(self, name: str) -> Any:
        """A dimension value as the graph uses it: an fx node, or a constant as Python ints."""
        const = self.const(name)
        if const is not None:
            return [int(v) for v in const.reshape(-1).tolist()] if const.dim() else int(const)
        return self.value(name)

    def call_dims(self, out: str, fn: Callable[..., Any], args: Sequence[Any]) -> None:
        """Like :meth:`call`, for a function whose result is a dimension value (ints, not a tensor)."""
        self.call(out, fn, args)
        self.dims.add(out)

    def call(
        self, out: str, fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        """Calls ``fn``; its result becomes ONNX value ``out``."""
        self.values[out] = self.graph.call_function(fn, tuple(args), kwargs or {})

    def finish(self, outputs: list[str]) -> fx.GraphModule:
        """Closes the graph over ``outputs`` (one value, or a tuple of several) and builds the module."""
        nodes = [self.value(name) for name in outputs]
        self.graph.output(nodes[0] if len(nodes) == 1 else tuple(nodes))
        gm = fx.GraphModule(self.root, self.graph, class_name="OnnxModule")
        gm.graph.lint()
        return gm

    def _unique(self, name: str) -> str:
        candidate, index = name, 1
        while candidate in self._used_names:
            candidate = f"{name}_{index}"
            index += 1
        self._used_names.add(candidate)
        return candidate


def identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name).strip("_") or "v"
    return f"v_{text}" if text[0].isdigit() or keyword.iskeyword(text) else text
