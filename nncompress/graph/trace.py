"""The one trace of a model into a Torch-Pruning dependency graph, with every nncompress handler registered.

Pruners, preflight and the speedup all read groups found on this graph (see :mod:`nncompress.graph.groups`),
so they cannot disagree about which channels are coupled.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from nncompress.errors import UnsupportedModelError
from nncompress.graph.ghost import mark_self_concats
from nncompress.graph.rnn import RecurrentPruner, opaque_recurrent
from nncompress.graph.shuffle import cut_shuffles, opaque_shuffles
from nncompress.graph.window_attention import opaque_window_attention
from nncompress.layers import library_pruners, traced_outputs, without_cache

__all__ = ["ExampleInputs", "call", "handlers", "trace"]

ExampleInputs = torch.Tensor | Sequence[Any] | dict[str, Any]

RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.RNN, nn.LSTM, nn.GRU)


def call(model: nn.Module, example_inputs: ExampleInputs) -> Any:
    """Runs ``model`` on a tensor, a sequence of positional inputs or a dict of keyword inputs.

    Spelled out because Torch-Pruning's own fallback first tries ``model(*tensor)``, which unpacks a
    batch of one into an *unbatched* call that layers such as ``nn.GRU`` accept: the trace then
    describes another computation than the model's (a batch-1 text classifier looked as if its
    hidden state were mixed with other features).
    """
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def handlers(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """The Torch-Pruning handlers nncompress adds for ``model``'s layer types (recurrent, library layers)."""
    recurrent = RecurrentPruner()
    found: dict[type[nn.Module], tp.pruner.BasePruningFunc] = {t: recurrent for t in RECURRENT_TYPES}
    found.update(library_pruners(model))
    return found


@contextmanager
def preserve_mode(model: nn.Module) -> Iterator[None]:
    """Restores every submodule's train/eval flag (Torch-Pruning switches to eval() and never back)."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def trace(model: nn.Module, example_inputs: ExampleInputs) -> tp.DependencyGraph:
    """Traces ``model`` once into a Torch-Pruning dependency graph.

    Recurrent layers, channel shuffles and Swin window attention are traced as single ops (their
    internals would mislead the index mapping); split outputs are put in section order, shuffles cut
    and self-concatenations marked, so the groups read off the graph are right.

    Args:
        model: the model; it is run once on ``example_inputs`` (under autograd) and not modified
            (its train/eval flags are restored).
        example_inputs: a tensor, a sequence of positional inputs, or a dict of keyword inputs.

    Returns:
        The built graph; ``dg._nncompress_recurrent`` records the recurrent layers' outputs.

    Raises:
        UnsupportedModelError: the model cannot be traced on these inputs.
    """
    if isinstance(example_inputs, list):
        example_inputs = tuple(example_inputs)
    try:
        with (
            preserve_mode(model),
            opaque_recurrent(model) as traced,
            opaque_shuffles(),
            opaque_window_attention(model),
            without_cache(model),
            # The trace is autograd's graph: it must exist even when the caller runs in inference mode.
            torch.inference_mode(False),
            torch.enable_grad(),
            warnings.catch_warnings(),
        ):
            # Torch-Pruning warns about every op it treats as element-wise; unsupported_ops()
            # reports what matters instead.
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_inputs,
                forward_fn=call,
                customized_pruners=handlers(model),  # type: ignore[arg-type]
                output_transform=traced_outputs,
                verbose=False,
            )
    except UnsupportedModelError:
        raise
    except Exception as exc:  # tracing runs arbitrary model code; anything can fail there
        raise UnsupportedModelError(
            f"could not trace the model to find coupled channels: {type(exc).__name__}: {exc}",
            model=type(model).__name__,
        ) from exc
    order_split_outputs(dg)
    cut_shuffles(dg)
    mark_self_concats(dg)
    dg._nncompress_recurrent = traced  # read by nncompress.graph.recurrent
    return dg


def order_split_outputs(dg: tp.DependencyGraph) -> None:
    """Puts each split node's consumers in section order.

    Torch-Pruning maps the i-th consumer it discovered to the i-th section, but it discovers consumers
    walking backwards from the output, so ``a, b = x.split(...)`` can map ``a``'s consumer to ``b``'s
    channels. Autograd knows better: the consumer's grad_fn names the split output it reads.
    """
    for node in dg.module2node.values():
        if node.type != tp.ops.OPTYPE.SPLIT or len(node.outputs) < 2:
            continue

        def section(consumer: object, split: object = node) -> int:
            grad_fn = getattr(consumer, "grad_fn", None)
            hits = [
                nr
                for fn, nr in getattr(grad_fn, "next_functions", ())
                if fn is getattr(split, "grad_fn", None)
            ]
            return min(hits) if hits else 1 << 30

        node.outputs.sort(key=section)
