"""The ``pruning``, ``speedup`` and ``verifying`` stages: masks, the smaller model, and the proof that
it computes what the masked model computes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nncompress.errors import ConfigError, NotCompressedError, UnsupportedModelError
from nncompress.graph import ChannelGraph
from nncompress.pipeline.checkpoint import save_masks
from nncompress.pipeline.checks import verify_outputs
from nncompress.pipeline.stages import Stage
from nncompress.pipeline.state import JobState
from nncompress.pipeline.training import run_scheduled

if TYPE_CHECKING:
    from nncompress.pruners.masks import Masks

__all__ = ["prune", "pruning_message", "require_smaller", "shrink", "verify"]

# The pruners and the speedup are imported where used: importing the pipeline (the service's schemas
# do) stays free of them.


def pruning_message(state: JobState) -> str:
    """What the ``pruning`` stage says as it starts."""
    spec = state.spec
    if spec.schedule is not None:
        return f"{spec.schedule.kind} schedule, {spec.schedule.steps} step(s) of {spec.pruner}"
    if not spec.prunes:
        return "not asked"
    return "reused saved masks" if state.masks is not None else str(spec.pruner)


def prune(state: JobState, stage: Stage) -> None:
    """Computes the masks (unless reused from the resume checkpoint) and the masked reference model;
    a scheduled job prunes, shrinks and fine-tunes step by step here instead."""
    spec, original = state.spec, state.original
    if spec.schedule is not None:
        assert state.job_data is not None  # JobSpec requires finetune, the loading stage a data set
        state.live["schedule"] = {}
        state.scheduled = run_scheduled(
            original,
            spec,
            state.job_data,
            state.example,
            stage=stage,
            should_stop=state.request.should_stop,
            checkpoint_dir=state.resume_dir / "scheduled",
            record=state.live["schedule"],
            publish=state.publish,
        )
    elif not spec.prunes:
        state.notes.append("no pruning was asked for (pruner null): the model keeps its shapes")
    elif state.masks is None:
        from nncompress.pruners import prune as prune_model

        assert spec.pruner is not None
        state.graph = _channel_graph(original, state) if _structured(state) else None
        pruned = prune_model(
            copy.deepcopy(original),
            list(spec.config_list),
            pruner=spec.pruner,
            example_inputs=state.example,
            graph=state.graph,
            data=state.data,
            criterion=state.criterion,
        )
        state.masks = {
            m: {p: t.detach().cpu() for p, t in params.items()} for m, params in pruned.masks.items()
        }
        save_masks(state.resume_dir, spec, state.model_digest, state.masks)
    if state.masks is not None:
        state.masked = _masked(copy.deepcopy(original), state.masks)


def shrink(state: JobState, stage: Stage) -> None:
    """The ``speedup`` stage: the compressed model (shrunk, the scheduled result, or the masked model
    where channels cannot go) and the kept indices the manifest records."""
    spec, scheduled = state.spec, state.scheduled
    if scheduled is not None:
        state.compressed = scheduled.model.cpu().eval()
        state.kept = dict(scheduled.kept or {})
        state.live["schedule"] = {**scheduled.to_dict(), "steps": state.live["schedule"].get("steps", [])}
        state.live["schedule"]["steps"] = [s.to_dict() for s in scheduled.steps]
        state.notes.extend(scheduled.notes)
        state.notes.append(
            f"scheduled pruning ({spec.schedule.kind if spec.schedule else ''}, "
            f"{len(scheduled.steps)} step(s) run, step {scheduled.chosen_step} kept)"
            + (": stopped early at the accuracy budget" if scheduled.stopped_early else "")
        )
    elif state.masked is None or state.masks is None:
        state.compressed = copy.deepcopy(state.original)
    elif spec.speedup and _structured(state):
        from nncompress.speedup import speedup

        sped = speedup(state.original, state.masks, state.example, verify=spec.verify, graph=state.graph)
        require_smaller(sped)
        state.compressed = sped.model.eval()
        state.kept = {m: {d: list(i) for d, i in dims.items()} for m, dims in sped.kept.items()}
        state.checks["speedup"] = _jsonable(sped.to_dict())
        if not state.kept:
            state.notes.append(
                "the masks emptied no whole channel, so no layer changed shape; "
                "the zeros are kept as sparsity"
            )
    else:
        state.compressed = state.masked
        reason = (
            f"{spec.pruner} prunes single weights, which cannot shrink a layer"
            if not _structured(state)
            else "speedup was turned off for this job"
        )
        state.notes.append(
            f"no speedup: {reason}; the saved weights are the masked model's "
            "(same shapes, pruned weights are zero) and the manifest has no kept indices"
        )


def verify(state: JobState, stage: Stage) -> None:
    """The ``verifying`` stage: the compressed model against the masked one, on the example and
    random batches (a scheduled job verified each step's speedup as it ran)."""
    if state.scheduled is not None:
        state.notes.append(
            "each scheduled step's speedup was verified as it ran; the fine-tuned model is checked "
            "against its reloaded artifact when it is exported"
        )
    elif state.masked is None:
        pass  # nothing was pruned, so there is nothing to compare
    elif state.spec.verify:
        state.checks["equivalence"] = verify_outputs(
            state.masked, state.compressed, state.example, seed=state.spec.seed
        )
    else:
        state.notes.append("verification was turned off for this job")


def require_smaller(sped: Any) -> None:
    """A job whose pruned channels were all kept by blocking layers has not compressed anything: it fails,
    naming the layers that blocked it, instead of reporting a success with the original size.

    Raises:
        NotCompressedError: the speedup left the model at its size and some group was blocked.
    """
    if sped.smaller or not sped.blocked_by:
        return
    blocked = sped.blocked_by
    shown = "; ".join(blocked[:5]) + (f"; … ({len(blocked)} in all)" if len(blocked) > 5 else "")
    raise NotCompressedError(
        f"the model came out no smaller ({sped.params_before:,} parameters): every selected channel "
        f"group is blocked — {shown}. Select other layers (preflight shows which groups are prunable)",
        blocked_by=blocked,
        params=sped.params_before,
    )


def _structured(state: JobState) -> bool:
    """Whether the pruner removes channels; element-wise masks become sparsity, not a smaller shape."""
    from nncompress.pruners.registry import get_pruner

    pruner = state.spec.pruner
    return pruner is None or get_pruner(pruner).default_granularity != "element"


def _channel_graph(model: nn.Module, state: JobState) -> ChannelGraph | None:
    """The model's channel graph, or None when it cannot be traced (the pruner then says why)."""
    try:
        return ChannelGraph.build(model, state.example)
    except UnsupportedModelError:
        return None


def _masked(model: nn.Module, masks: Masks) -> nn.Module:
    """The masked reference model: the masks baked in as the speedup bakes them, so "after pruning"
    is the model the speedup is verified against."""
    from nncompress.pruners.masks import bake_masks

    modules = dict(model.named_modules())
    for name in masks:
        if name not in modules:
            raise ConfigError(
                f"the pruner returned a mask for {name!r}, which the model does not have", layer=name
            )
    return bake_masks(model, masks).eval()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
