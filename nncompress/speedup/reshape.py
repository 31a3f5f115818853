"""Rewrites shape constants that pruning invalidated, in a torch.fx graph of the model.

``x.view(-1, 4 * 4 * 50)`` bakes the channel count into the code. After conv2 loses half its channels
the constant is wrong. Shape propagation on the *original* model tells which input dimensions each
output dimension of the view was made of; the rewrite then computes every merged dimension from the
tensor's runtime sizes (``x.size(1) * x.size(2) * x.size(3)``) and leaves split dimensions (such as a
fixed head size) as written, so the view follows whatever the pruning did. Channel splits with literal
sections get their new sizes from the producing layer's kept indices (see ``splits.py``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from nncompress.speedup.splits import SplitSite, find_split_sites

Inputs = tuple[torch.Tensor, ...]

_VIEW_METHODS = {"view", "reshape"}
_VIEW_FUNCTIONS = {torch.reshape}


@dataclass(frozen=True)
class Rewrite:
    """One rewritten shape argument list: node name, what it was, what it became."""

    node: str
    before: str
    after: str


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically traces ``model`` (raises whatever torch.fx raises for untraceable code)."""
    return fx.symbolic_trace(model)


def _is_view(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target in _VIEW_METHODS:
        return True
    return node.op == "call_function" and node.target in _VIEW_FUNCTIONS


def _shape_args(node: fx.Node) -> list[object]:
    args: list[object] = list(node.args[1:])
    if "shape" in node.kwargs:
        args = [node.kwargs["shape"]]
    if len(args) == 1 and isinstance(args[0], list | tuple):
        return list(args[0])
    return args


def _meta_shape(node: object) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _align(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pairs contiguous runs of ``src`` dims with runs of ``dst`` dims whose products are equal."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) or j < len(dst):
        if i < len(src) and j < len(dst) and src[i] == 1 and dst[j] == 1:
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        if i < len(src) and src[i] == 1:
            groups.append(([i], []))
            i += 1
            continue
        if j < len(dst) and dst[j] == 1:
            groups.append(([], [j]))
            j += 1
            continue
        if i >= len(src) or j >= len(dst):
            return None
        a, b = [i], [j]
        pa, pb = src[i], dst[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i >= len(src):
                    return None
                pa *= src[i]
                a.append(i)
                i += 1
            else:
                if j >= len(dst):
                    return None
                pb *= dst[j]
                b.append(j)
                j += 1
        groups.append((a, b))
    return groups


ViewShapes = dict[str, tuple[tuple[int, ...], tuple[int, ...]]]


@dataclass
class ShapeAnalysis:
    """What the unpruned model's code hard-codes about shapes.

    Attributes:
        views: view/reshape nodes with literal sizes -> (input shape, output shape).
        splits: channel splits with literal sections.
        trace_error: why torch.fx could not trace the model (then nothing can be rewritten), or None.
    """

    views: ViewShapes = field(default_factory=dict)
    splits: list[SplitSite] = field(default_factory=list)
    trace_error: str | None = None


def analyse_shapes(model: nn.Module, inputs: Inputs) -> ShapeAnalysis:
    """Finds the literal shapes in ``model``'s forward by tracing it and propagating example shapes.

    Args:
        model: the model before pruning.
        inputs: example inputs.

    Returns:
        A :class:`ShapeAnalysis` (empty, with ``trace_error`` set, when torch.fx cannot trace the model).
    """
    try:
        gm = trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, ... on dynamic control flow
        return ShapeAnalysis(
            trace_error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
    constant = [n for n in gm.graph.nodes if _is_view(n) and any(isinstance(a, int) for a in _shape_args(n))]
    has_split = any(n.target in ("split", "chunk", torch.split, torch.chunk) for n in gm.graph.nodes)
    if not constant and not has_split:
        return ShapeAnalysis()
    was_training = model.training
    model.eval()  # shape propagation runs the model: keep BatchNorm statistics untouched
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception as exc:
        return ShapeAnalysis(trace_error=f"shape propagation failed: {type(exc).__name__}: {exc}")
    finally:
        model.train(was_training)
    shapes: ViewShapes = {}
    for node in constant:
        src, dst = _meta_shape(node.args[0]), _meta_shape(node)
        if src is not None and dst is not None:
            shapes[node.name] = (src, dst)
    return ShapeAnalysis(views=shapes, splits=find_split_sites(gm) if has_split else [])


def rewrite_shapes(
    pruned: nn.Module, analysis: ShapeAnalysis, split_sizes: dict[str, tuple[int, ...]]
) -> tuple[fx.GraphModule, list[Rewrite]]:
    """Traces ``pruned`` and rewrites its literal shapes to fit the pruned channels.

    View/reshape sizes become expressions of the runtime sizes; splits get their new section sizes.

    Args:
        pruned: the pruned model; its submodules are shared with the returned GraphModule.
        analysis: from :func:`analyse_shapes` on the same code before pruning (node names match
            because both traces run the same forward).
        split_sizes: fx node name -> new sections, from :func:`nncompress.speedup.splits.new_sections`.

    Returns:
        The rewritten GraphModule and the rewrites made.
    """
    gm = trace(pruned)
    shapes = analysis.views
    rewrites = _rewrite_splits(gm.graph, split_sizes)
    for node in list(gm.graph.nodes):
        if not _is_view(node) or node.name not in shapes:
            continue
        src, dst = shapes[node.name]
        args = _shape_args(node)
        if len(args) != len(dst):
            continue
        groups = _align(src, dst)
        if groups is None:
            continue
        new_args = _runtime_args(gm.graph, node, args, groups)
        if new_args is None:
            continue
        before = ", ".join(str(a) for a in args)
        # Tensor.view/reshape take the sizes as varargs; torch.reshape takes one tuple.
        node.args = (
            (node.args[0], tuple(new_args)) if node.op == "call_function" else (node.args[0], *new_args)
        )
        node.kwargs = {k: v for k, v in node.kwargs.items() if k != "shape"}
        after = ", ".join(_describe(a) for a in new_args)
        rewrites.append(Rewrite(node.name, f"{node.target}({before})", f"{node.target}({after})"))
    gm.graph.lint()
    gm.recompile()
    return gm, rewrites


def _rewrite_splits(graph: fx.Graph, split_sizes: dict[str, tuple[int, ...]]) -> list[Rewrite]:
    rewrites = []
    for node in list(graph.nodes):
        sizes = split_sizes.get(node.name)
        if sizes is None:
            continue
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        with graph.inserting_before(node):
            replacement = graph.call_function(torch.split, (node.args[0], list(sizes), dim))
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "split")
        before = ", ".join(str(a) for a in node.args[1:])
        rewrites.append(Rewrite(node.name, f"{name}(x, {before})", f"split(x, {list(sizes)}, {dim})"))
    return rewrites


def _describe(arg: object) -> str:
    if not isinstance(arg, fx.Node):
        return str(arg)
    if arg.target == "size":
        return f"x.size({arg.args[1]})"
    if arg.target is operator.mul:
        return " * ".join(_describe(a) for a in arg.args)
    return arg.name


def _runtime_args(
    graph: fx.Graph, node: fx.Node, args: list[object], groups: list[tuple[list[int], list[int]]]
) -> list[object] | None:
    """New size arguments: merged dims from ``x.size(i)`` products, split dims kept, one ``-1`` at most."""
    source = node.args[0]
    assert isinstance(source, fx.Node)
    new_args = list(args)
    has_wildcard = any(a == -1 for a in args)
    changed = False
    with graph.inserting_before(node):
        for src_dims, dst_dims in groups:
            if len(dst_dims) == 1 and src_dims:
                j = dst_dims[0]
                if not isinstance(args[j], int) or args[j] == -1:
                    continue
                expr: fx.Node = graph.call_method("size", (source, src_dims[0]))
                for d in src_dims[1:]:
                    expr = graph.call_function(operator.mul, (expr, graph.call_method("size", (source, d))))
                new_args[j] = expr
                changed = True
            elif len(dst_dims) > 1 and not has_wildcard and all(isinstance(args[j], int) for j in dst_dims):
                # A split (e.g. channels -> heads x head_dim): keep the trailing sizes as written and let the
                # leading one absorb the change, which matches pruning whole heads.
                new_args[dst_dims[0]] = -1
                has_wildcard = True
                changed = True
    return new_args if changed else None
