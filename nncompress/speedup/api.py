"""The functional speedup API: masks -> a verified, physically smaller model; and replaying kept indices."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from nncompress.errors import SpeedupError, VerificationError
from nncompress.graph import ChannelGraph, ChannelGroup
from nncompress.graph.prune import prune_channels
from nncompress.masked_norms import detach_norm_masks
from nncompress.pruners.masks import bake_masks
from nncompress.speedup.attention import sync_attention_heads
from nncompress.speedup.diagnose import forward_failure
from nncompress.speedup.masks import layer_sparsity, load_masks, validate_masks
from nncompress.speedup.plan import kept_indices, removable_channels, removal_from_kept
from nncompress.speedup.reshape import Rewrite, ShapeAnalysis, analyse_shapes, rewrite_shapes
from nncompress.speedup.result import GroupReport, Kept, ShapeChanges, SpeedupResult
from nncompress.speedup.splits import new_sections
from nncompress.speedup.verify import (
    Inputs,
    check_outputs,
    normalize_inputs,
    output_shapes,
    verification_inputs,
)


def speedup(
    model: nn.Module,
    masks: Mapping[str, Mapping[str, torch.Tensor]] | str | Path,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    verify: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    graph: ChannelGraph | None = None,
) -> SpeedupResult:
    """Turns masks into a physically smaller model and proves it computes what the masked model computes.

    A channel is removed when every layer that produces it (all output sides of its coupled group: the
    conv, its BatchNorm, the other branch of a residual add ...) is zero there after masking. Element
    masks that empty no whole channel stay as zeros in the weights and are reported in ``sparsity``.
    The input model is not modified.

    Args:
        model: the model to shrink (unmasked weights; the masks are multiplied in here).
        masks: ``{module_name: {param_name: mask}}`` (1 keep / 0 pruned) or a ``torch.save`` file of it.
        example_inputs: a dummy input (tensor or tuple of positional tensors) that the model accepts.
        verify: compare the result with the masked model on the dummy input and random ones.
        rtol: tolerance relative to the largest reference output magnitude.
        atol: absolute tolerance added to it.
        graph: the model's channel graph when the caller already built it (for pruning, say) on
            this architecture and input; traced here otherwise.

    Returns:
        A :class:`SpeedupResult`.

    Raises:
        SpeedupError: invalid masks or a model the dependency graph cannot handle.
        VerificationError: the shrunk model crashes or differs; the message names the layer or operation.

    Example:
        >>> result = speedup(model, masks, torch.randn(1, 1, 28, 28))
        >>> result.model(torch.randn(8, 1, 28, 28)).shape
    """
    start = time.perf_counter()
    clock = _Clock()
    inputs = normalize_inputs(example_inputs)
    loaded = load_masks(masks)
    model = _plain(model)
    validate_masks(model, loaded)
    work = bake_masks(copy.deepcopy(model), loaded)
    work.eval()
    before = _param_shapes(work)
    clock.lap("copy")
    batches = verification_inputs(inputs, num_random=2 if verify else 1)
    with torch.inference_mode():
        reference = [work(*batch) for batch in batches]
    # The graph is traced and shrunk without the masked norms' hooks: shrunk norms compute plainly.
    detach_norm_masks(work)
    clock.lap("reference")
    analysis = analyse_shapes(model, inputs)
    clock.lap("shapes")

    if graph is None or not graph.fits(model):
        graph = ChannelGraph.build(model, inputs)  # the caller's tensors: traceable in inference mode too
    groups = graph.groups
    removed = {g.key: idxs for g in groups if (idxs := removable_channels(g, work))}
    kept = kept_indices(groups, removed)
    clock.lap("plan")
    prune_channels(work, groups, removed)
    head_changes = sync_attention_heads(work)
    clock.lap("prune")
    # Running the shrunk model on the verification inputs doubles as the check that it runs at all;
    # only a crash or a changed output shape triggers the shape-constant rewrite.
    shrunk, rewrites, outputs = _runnable(work, batches, output_shapes(reference), analysis, kept)
    rewrites = head_changes + rewrites
    clock.lap("run")

    report = None
    if verify:

        def masked() -> nn.Module:
            return bake_masks(copy.deepcopy(model), loaded).eval()

        report = check_outputs(batches, reference, outputs, masked, shrunk, rtol=rtol, atol=atol, kept=kept)
        clock.lap("compare")
    timings = clock.laps
    shrunk.train(model.training)
    timings["total"] = time.perf_counter() - start
    return SpeedupResult(
        model=shrunk,
        kept=kept,
        shape_changes=_shape_changes(before, _param_shapes(shrunk)),
        groups=_group_reports(groups, removed),
        sparsity={k: v for k, v in layer_sparsity(shrunk, sorted(loaded)).items() if v > 0},
        rewrites=rewrites,
        params_before=_count(model),
        params_after=_count(shrunk),
        verification=report,
        timings=timings,
    )


def apply_kept_indices(
    model: nn.Module,
    kept: Mapping[str, Mapping[str, Sequence[int]]],
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    graph: ChannelGraph | None = None,
) -> nn.Module:
    """Re-applies a recorded pruning (``SpeedupResult.kept``) to a fresh instance of the same architecture.

    It runs the same group analysis and index pruning as :func:`speedup` (and the same shape-constant
    rewrite when needed), so the resulting shapes equal those of the recorded result; load the saved
    weights afterwards. The weights of ``model`` itself are irrelevant.

    Args:
        model: a new instance of the architecture that was pruned; it is pruned in place.
        kept: ``{layer: {"out"|"in": kept indices}}`` as recorded by :func:`speedup`.
        example_inputs: a dummy input the architecture accepts.
        graph: the architecture's channel graph, when the caller has it (traced here otherwise).

    Returns:
        ``model`` pruned in place, or a GraphModule wrapping it when shape constants were rewritten.

    Raises:
        SpeedupError: the record names unknown layers or disagrees with the architecture's coupling.
    """
    inputs = normalize_inputs(example_inputs)
    record = {
        str(name): {str(side): [int(i) for i in idxs] for side, idxs in sides.items()}
        for name, sides in kept.items()
    }
    was_training = model.training
    model.eval()
    batches = verification_inputs(inputs, num_random=1)
    with torch.inference_mode():
        expected = output_shapes([model(*batch) for batch in batches])
    analysis = analyse_shapes(model, inputs)
    if graph is None or not graph.fits(model):
        graph = ChannelGraph.build(model, inputs)
    groups = graph.groups
    known = {(s.name, s.side) for g in groups for s in g.layers}
    unknown = sorted(
        f"{name}.{side}" for name, sides in record.items() for side in sides if (name, side) not in known
    )
    if unknown:
        raise SpeedupError(
            f"kept indices name layers the architecture does not have: {unknown[:5]}", layers=unknown
        )
    try:
        removed = removal_from_kept(groups, record)
    except ValueError as exc:
        raise SpeedupError(str(exc)) from exc
    prune_channels(model, groups, removed)
    sync_attention_heads(model)
    shrunk, _, _ = _runnable(model, batches, expected, analysis, kept_indices(groups, removed))
    shrunk.train(was_training)
    return shrunk


def _runnable(
    model: nn.Module,
    batches: list[Inputs],
    expected: list[list[tuple[int, ...]]],
    analysis: ShapeAnalysis,
    kept: Kept,
) -> tuple[nn.Module, list[Rewrite], list[object]]:
    """The pruned model, rewritten through torch.fx only where its literal shapes no longer fit.

    A split whose literal sections no longer match the kept channels is rewritten up front (it would run
    and cut in the wrong place); view/reshape constants are rewritten when the model crashes or changes
    its output shapes.
    """
    split_sizes = new_sections(analysis.splits, kept)
    failing: nn.Module = model
    failure: list[object] | tuple[int, Exception | None] = (0, None)
    if not split_sizes:
        failure = _try_forward(model, batches, expected)
        if not isinstance(failure, tuple):
            return model, [], failure
    if analysis.views or split_sizes:
        gm, rewrites = rewrite_shapes(model, analysis, split_sizes)
        outcome = _try_forward(gm, batches, expected)
        if not isinstance(outcome, tuple):
            return gm, rewrites, outcome
        if split_sizes:  # the unrewritten model never ran: report the rewritten one
            failing, failure = gm, outcome
    assert isinstance(failure, tuple)
    index, exc = failure
    if exc is None:
        got = output_shapes([_forward(failing, batches[index])])[0]
        raise VerificationError(
            f"the shrunk model returns outputs of shape {got} instead of {expected[index]} on input #{index}",
            input_index=index,
        )
    raise forward_failure(failing, batches[index], exc, trace_error=analysis.trace_error) from exc


@torch.inference_mode()
def _forward(model: nn.Module, batch: Inputs) -> object:
    return model(*batch)


def _try_forward(
    model: nn.Module, batches: list[Inputs], expected: list[list[tuple[int, ...]]]
) -> list[object] | tuple[int, Exception | None]:
    outputs = []
    for index, batch in enumerate(batches):
        try:
            out = _forward(model, batch)
        except Exception as exc:  # any crash means the shrunk model is not usable as is
            return index, exc
        if output_shapes([out])[0] != expected[index]:
            return index, None
        outputs.append(out)
    return outputs


class _Clock:
    """Seconds per phase, measured back to back."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._mark = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._mark
        self._mark = now


def _plain(model: nn.Module) -> nn.Module:
    """``model``, or a copy without ``torch.nn.utils.parametrize`` wrappers (a pruner's masks still
    attached, as after NNI's ``compress()`` without ``unwrap_model()``), keeping the masked values."""
    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        return model
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for module in plain.modules():
            if not parametrize.is_parametrized(module):
                continue
            names = list(module.parametrizations.keys())  # type: ignore[union-attr, operator]
            values = {name: getattr(module, name).detach().clone() for name in names}
            # A parametrized buffer (FrozenBatchNorm2d's weight and bias) must come back as a buffer.
            buffers = {
                name
                for name in names
                if not isinstance(cast(nn.ModuleDict, module.parametrizations)[name].original, nn.Parameter)
            }
            # deepcopy keeps the generated Parametrized* class, which the caller's model shares, and
            # remove_parametrizations edits that class: restore the plain class on the copy by hand.
            module.__class__ = module.__class__.__bases__[0]
            del module._modules["parametrizations"]
            for name, value in values.items():
                if name in buffers:
                    module.register_buffer(name, value)
                else:
                    module.register_parameter(name, nn.Parameter(value))
    return plain


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _param_shapes(model: nn.Module) -> dict[str, dict[str, tuple[int, ...]]]:
    return {
        name: {p: tuple(t.shape) for p, t in module.named_parameters(recurse=False)}
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    }


def _shape_changes(
    before: dict[str, dict[str, tuple[int, ...]]], after: dict[str, dict[str, tuple[int, ...]]]
) -> ShapeChanges:
    changes: ShapeChanges = {}
    for name, params in before.items():
        for param, shape in params.items():
            new = after.get(name, {}).get(param)
            if new is not None and new != shape:
                changes.setdefault(name, {})[param] = (shape, new)
    return changes


def _group_reports(groups: Sequence[ChannelGroup], removed: dict[str, list[int]]) -> list[GroupReport]:
    return [
        GroupReport(
            root=g.key,
            channels_before=g.channels,
            channels_after=g.channels - len(removed.get(g.key, [])),
            members=sorted({f"{s.name}.{s.side}" for s in g.layers}),
            skipped=g.skip_reason,
        )
        for g in groups
    ]
