"""The fx graph under construction while an ONNX graph is walked node by node."""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import.naming import LayerPlan
from nncompress.io.onnx_import.runtime import onnx_dims_tensor

__all__ = ["GraphBuilder", "identifier"]


class GraphBuilder:
    """Accumulates fx nodes and modules while walking the ONNX graph in topological order."""

    def __init__(
        self,
        initializers: dict[str, torch.Tensor],
        ranks: dict[str, int],
        plans: dict[str, LayerPlan] | None = None,
    ) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: dict[str, fx.Node] = {}
        self.consts = initializers
        self.initializer_names = frozenset(initializers)  # consts folded later are not the model's weights
        self.ranks = ranks
        self.plans = plans or {}
        self.elem_types: dict[str, int] = {}  # ONNX element types where known (set by the loader)
        self.shapes: dict[str, list[Any]] = {}  # inferred shapes where known (set by the loader)
        # The batch size of a graph exported with a fixed batch (its first input's first dimension), or
        # None when the batch is symbolic. Reshapes that carry it over are made to follow the input's.
        self.static_batch: int | None = None
        # ONNX values that hold tensor *dimensions* (Shape → Gather → Concat → Reshape chains). They
        # are kept as Python ints and lists in the graph, so tracers see x.size(0) symbolically and
        # the batch dimension stays dynamic when the converted model is exported again.
        self.dims: set[str] = set()
        # Outputs of nodes a layer already computes (the Add of a MatMul's bias): their nodes are skipped.
        self.fused: set[str] = set()
        self._used_names: set[str] = set()

    def add_input(self, name: str, dtype: torch.dtype | None = None) -> None:
        """Adds a graph input (a placeholder named after the ONNX input, its dtype in ``meta``)."""
        node = self.graph.placeholder(self._unique(identifier(name)))
        node.meta["onnx_name"] = name
        if dtype is not None:
            node.meta["onnx_dtype"] = dtype
        self.values[name] = node

    def const(self, name: str) -> torch.Tensor | None:
        """The constant (initializer or folded Constant) called ``name``, or None when it is computed."""
        return self.consts.get(name)

    def tensor(self, name: str) -> fx.Node:
        """Like :meth:`value`, but a dimension value (Python ints) is turned into an int64 tensor."""
        if name in self.dims:
            node = self.graph.call_function(onnx_dims_tensor, (self.value(name),))
            return node
        return self.value(name)

    def value(self, name: str) -> fx.Node:
        """The fx node holding ONNX value ``name``; a constant used as data becomes a parameter or buffer."""
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            attr = self._unique("const_" + identifier(name))
            tensor = self.consts[name]
            if name in self.initializer_names and tensor.is_floating_point() and tensor.numel() > 1:
                # A float initializer used as data is one of the model's own parameters (ConvNeXt's layer
                # scale, a class token, position embeddings): a parameter stays trainable, is counted,
                # and is pruned with the channels it scales; a buffer would keep its old width.
                self.root.register_parameter(attr, nn.Parameter(tensor.clone()))
            else:
                self.root.register_buffer(attr, tensor, persistent=True)
            node = self.graph.get_attr(attr)
            self.values[name] = node
            return node
        raise ModelLoadError(f"ONNX value {name!r} is used before it is produced", value=name)

    def plan(self, node: Any) -> LayerPlan | None:
        """The layer planned for ONNX ``node`` (see :mod:`naming`), or None when it stays a function."""
        return self.plans.get(node.output[0]) if node.output else None

    def add_layer(self, node: Any, module: nn.Module) -> str:
        """Adds ``module`` at the PyTorch path planned for ``node``; returns the path."""
        plan = self.plan(node)
        path = plan.path if plan is not None else self._unique(identifier(node.name or node.op_type))
        parent = self.root
        parts = path.split(".")
        for part in parts[:-1]:
            child = getattr(parent, part, None)
            if not isinstance(child, nn.Module):
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(parts[-1], module)
        self._used_names.add(parts[0])
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
        while candidate in self._used_names or hasattr(self.root, candidate):
            candidate = f"{name}_{index}"
            index += 1
        self._used_names.add(candidate)
        return candidate


def identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name).strip("_") or "v"
    return f"v_{text}" if text[0].isdigit() or keyword.iskeyword(text) else text
