"""One step of a schedule: prune to this step's share of the target, then shrink or keep the masks.

With speedup, the step's ratios are converted to the already shrunk layers (``kept = original −
int(goal · original)``, exactly what a one-shot prune to that goal keeps); with masks, every earlier mask
stays so a pruned weight never comes back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.config import LayerTarget, ResolvedConfig
from nncompress.pruners import Masks, apply_masks, prune
from nncompress.pruners.masks import get_param
from nncompress.pruners.scheduled.records import Kept
from nncompress.speedup import speedup as speedup_masks

__all__ = ["compose_kept", "has_element_targets", "prune_step"]

_EPS = 1e-9


def prune_step(
    current: nn.Module,
    resolved: ResolvedConfig,
    fraction: float,
    *,
    basic_pruner: str,
    example_inputs: torch.Tensor,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    options: dict[str, Any],
    speedup: bool,
    previous: Masks | None,
    progress: Callable[[str], None],
) -> tuple[nn.Module, Masks | None, Kept]:
    device = next(current.parameters()).device
    current.to("cpu")  # pruning and speedup trace on CPU; fine-tuning moves the model back
    if speedup:
        targets = _relative_targets(resolved, fraction, current)
        if not targets.targets:
            return current, None, {}  # every layer already at this step's goal
        result = prune(
            current, targets, pruner=basic_pruner, example_inputs=example_inputs, data=data,
            criterion=F.cross_entropy, **options,
        )  # fmt: skip
        progress("speedup")
        shrunk = speedup_masks(current, result.masks, example_inputs)
        return shrunk.model.to(device), None, shrunk.kept
    # Masks: rank the weights as they are now (earlier steps left zeros, which rank lowest) and keep
    # every earlier mask, so a pruned weight never comes back.
    result = prune(
        current, _scaled_targets(resolved, fraction), pruner=basic_pruner, example_inputs=example_inputs,
        data=data, criterion=F.cross_entropy, **options,
    )  # fmt: skip
    masks = _combine(result.masks, previous)
    apply_masks(current, masks)
    return current.to(device), masks, {}


def _scaled_targets(resolved: ResolvedConfig, fraction: float) -> ResolvedConfig:
    targets = {
        name: dataclasses.replace(
            t,
            sparse_ratio=t.sparse_ratio * fraction,
            min_sparse_ratio=t.min_sparse_ratio * fraction if t.min_sparse_ratio is not None else None,
        )
        for name, t in resolved.targets.items()
    }
    return ResolvedConfig(targets=targets, entries=resolved.entries)


def _relative_targets(resolved: ResolvedConfig, fraction: float, current: nn.Module) -> ResolvedConfig:
    """This step's goals, as ratios of the layers' current (already shrunk) channel counts."""
    targets: dict[str, LayerTarget] = {}
    groups: dict[str, list[str]] = {}
    for name, t in resolved.targets.items():
        if t.global_group_id is not None:
            groups.setdefault(t.global_group_id, []).append(name)
    for name, t in resolved.targets.items():
        weight = get_param(current, name, "weight")
        dim = 1 if t.granularity == "in_channel" else 0
        now = int(weight.shape[dim])
        if t.global_group_id is not None:
            members = groups[t.global_group_id]
            was = sum(resolved.targets[m].weight_shape[dim] for m in members)
            now_total = sum(int(get_param(current, m, "weight").shape[dim]) for m in members)
            ratio = _relative(t.sparse_ratio * fraction, was, now_total)
        else:
            ratio = _relative(t.sparse_ratio * fraction, t.weight_shape[dim], now)
        cap = (
            _relative(t.max_sparse_ratio, t.weight_shape[dim], now)
            if t.max_sparse_ratio is not None
            else None
        )
        floor = (
            _relative(t.min_sparse_ratio * fraction, t.weight_shape[dim], now)
            if t.min_sparse_ratio is not None
            else None
        )
        if ratio <= 0.0:
            continue
        targets[name] = dataclasses.replace(
            t,
            sparse_ratio=ratio,
            weight_shape=tuple(weight.shape),
            max_sparse_ratio=cap,
            min_sparse_ratio=floor,
        )
    return ResolvedConfig(targets=targets, entries=resolved.entries)


def _relative(goal: float, original: int, now: int) -> float:
    # Keep what a one-shot prune to `goal` keeps: original − int(goal · original) channels.
    keep = original - min(int(goal * original + _EPS), original - 1)
    return max(0.0, (now - keep) / now) if now > 0 else 0.0


def compose_kept(total: Kept, step: Kept) -> Kept:
    """Kept indices of the original model after one more speedup (``step`` indexes the current model)."""
    out = {layer: dict(sides) for layer, sides in total.items()}
    for layer, sides in step.items():
        for side, idx in sides.items():
            before = out.get(layer, {}).get(side)
            # A side never shrunk before still has its original numbering.
            out.setdefault(layer, {})[side] = [before[i] for i in idx] if before is not None else list(idx)
    return out


def _combine(new: Masks, previous: Masks | None) -> Masks:
    if previous is None:
        return new
    out: Masks = {name: dict(params) for name, params in new.items()}
    for name, params in previous.items():
        for param, mask in params.items():
            mine = out.setdefault(name, {})
            mine[param] = mine[param] * mask if param in mine else mask.clone()
    return out


def has_element_targets(resolved: ResolvedConfig) -> bool:
    return any(t.granularity == "element" for t in resolved.targets.values())
