"""Scheduled (iterative) pruning: Linear and AGP, with fine-tuning between steps.

As NNI's scheduled pruners do, the target of every layer is reached in ``steps`` increments. At step
``t`` of ``n`` each layer aims at ``target · f(t)`` of its original channels, where

* linear: ``f(t) = t / n``;
* AGP (Zhu & Gupta, 2017): ``f(t) = 1 − (1 − t/n)³``, i.e. ``s_t = s_f + (s_i − s_f)(1 − t/n)³`` with
  ``s_i = 0``: big steps first, while the network still has redundancy, small ones near the end.

Each step prunes with a basic pruner (by registry name), then either shrinks the model (speedup) or
keeps the masks in force, fine-tunes it, evaluates it and records the result. With speedup, the next
step's ratios are converted to the already shrunk layers (``kept = original − int(goal · original)``,
exactly what a one-shot prune to that goal keeps). An ``accuracy_budget`` stops the schedule at the
first step whose validation top-1 falls more than that many percentage points below the original,
and returns the model of the last step that stayed within it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.config import LayerTarget, ResolvedConfig, resolve_config
from nncompress.datasets import LabelledDataset
from nncompress.errors import ConfigError
from nncompress.finetune import (
    EvalResult,
    FinetuneCancelled,
    FinetuneProgress,
    FinetuneResult,
    FinetuneSpec,
    evaluate,
    finetune,
)
from nncompress.pruners import Masks, apply_masks, prune, remove_masks
from nncompress.pruners.masks import get_param, is_masked
from nncompress.speedup import speedup as speedup_masks

__all__ = [
    "SCHEDULES",
    "AGPPruner",
    "LinearPruner",
    "ScheduledProgress",
    "ScheduledResult",
    "StepRecord",
    "schedule_fractions",
    "scheduled_prune",
    "weights_bytes",
]

SCHEDULES: tuple[str, ...] = ("linear", "agp")

Kept = dict[str, dict[str, list[int]]]

_EPS = 1e-9
# Batches of the training set handed to data-driven pruners (TaylorFO, APoZ, mean activation, Slim).
_PRUNER_BATCHES = 16
# Pruners whose masks are element-wise: nothing to shrink, so the schedule keeps masks instead.
_ELEMENT_PRUNERS = frozenset({"level"})


def schedule_fractions(schedule: str, steps: int) -> list[float]:
    """Share of the final target reached after each step.

    Args:
        schedule: ``"linear"`` or ``"agp"``.
        steps: number of steps, ``>= 1``.

    Returns:
        ``steps`` increasing fractions ending at 1.0.

    Raises:
        ConfigError: unknown schedule or ``steps < 1``.

    Example:
        >>> schedule_fractions("agp", 3)
        [0.7037037037037037, 0.9629629629629629, 1.0]
    """
    if schedule not in SCHEDULES:
        raise ConfigError(
            f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}",
            key="schedule",
            value=schedule,
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}", key="steps", value=steps)
    if schedule == "linear":
        return [t / steps for t in range(1, steps + 1)]
    return [1.0 - (1.0 - t / steps) ** 3 for t in range(1, steps + 1)]


@dataclass(frozen=True)
class StepRecord:
    """One step of the schedule.

    Attributes:
        step: 1-based step.
        target_fraction: share of the final target this step aimed at.
        sparsity: what the config's ratios measure, reached after this step: the fraction of the configured
            layers' original channels removed (or all-zero), or of their weights for element-wise pruners.
        weight_sparsity: fraction of the configured layers' original weights removed or zero.
        params: parameter count of the model after this step.
        nonzero_params: parameters that are not zero (differs from ``params`` with masks).
        weights_bytes: size of the model's state_dict serialized as safetensors (measured, not estimated).
        val: validation result after fine-tuning.
        accuracy_drop: original top-1 minus this step's, in percentage points.
        within_budget: whether the drop respects the accuracy budget (True without a budget).
        seconds: wall time of the step.
        finetune: per-epoch fine-tuning records (``EpochRecord.to_dict()``).
    """

    step: int
    target_fraction: float
    sparsity: float
    weight_sparsity: float
    params: int
    nonzero_params: int
    weights_bytes: int
    val: EvalResult
    accuracy_drop: float
    within_budget: bool
    seconds: float
    finetune: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["val"] = self.val.to_dict()
        return data


@dataclass(frozen=True)
class ScheduledProgress:
    """What the progress callback receives.

    Attributes:
        step: 1-based current step.
        steps: total steps.
        phase: ``"pruning"``, ``"speedup"``, ``"finetuning"`` or ``"done"`` (with ``record``).
        finetune: the fine-tuning progress while ``phase == "finetuning"``.
        record: the finished step, when ``phase == "done"``.
    """

    step: int
    steps: int
    phase: str
    finetune: FinetuneProgress | None = None
    record: StepRecord | None = None

    @property
    def fraction(self) -> float:
        """Share of the whole schedule done, in ``[0, 1]`` (fine-tuning counts for most of a step)."""
        within = {"pruning": 0.0, "speedup": 0.05, "done": 1.0}.get(self.phase, 0.1)
        if self.finetune is not None:
            within = 0.1 + 0.9 * self.finetune.fraction
        return (self.step - 1 + within) / self.steps


@dataclass
class ScheduledResult:
    """The outcome of :func:`scheduled_prune`.

    Attributes:
        model: the model of the chosen step (the original, copied, when no step met the budget).
        masks: with ``speedup=False``, the chosen step's masks (already applied as zeros); else None.
        kept: with ``speedup=True``, the channel indices of the *original* model that the chosen model
            keeps, composed over all steps (``{layer: {"out"|"in": [...]}}``, the format of
            ``SpeedupResult.kept``): ``apply_kept_indices(fresh_original, kept, example_inputs)`` rebuilds
            the shrunk architecture for loading the weights; else None.
        steps: every step that ran, in order.
        chosen_step: the step whose model is returned (0 = none met the budget).
        baseline: validation result of the original model.
        stopped_early: the budget stopped the schedule before its last step.
        speedup: whether the model was physically shrunk at each step.
        schedule: ``"linear"`` or ``"agp"``.
        seconds: wall time.
        notes: what was adjusted, in plain words.
    """

    model: nn.Module
    masks: Masks | None
    kept: Kept | None
    steps: list[StepRecord]
    chosen_step: int
    baseline: EvalResult
    stopped_early: bool
    speedup: bool
    schedule: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (model and masks left out)."""
        return {
            "schedule": self.schedule,
            "speedup": self.speedup,
            "baseline": self.baseline.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "chosen_step": self.chosen_step,
            "stopped_early": self.stopped_early,
            "seconds": self.seconds,
            "notes": list(self.notes),
        }


def scheduled_prune(
    model: nn.Module,
    config_list: Sequence[dict[str, Any]],
    *,
    schedule: str = "agp",
    steps: int,
    basic_pruner: str = "l1norm",
    finetune_spec: FinetuneSpec,
    train: LabelledDataset,
    val: LabelledDataset,
    example_inputs: torch.Tensor,
    speedup: bool = True,
    accuracy_budget: float | None = None,
    pruner_options: dict[str, Any] | None = None,
    teacher: nn.Module | None = None,
    progress: Callable[[ScheduledProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> ScheduledResult:
    """Prunes ``model`` to ``config_list``'s targets in ``steps`` scheduled steps, fine-tuning between them.

    Args:
        model: the trained model; not modified (the schedule works on a copy).
        config_list: NNI-style config_list; its ratios are the final targets.
        schedule: ``"linear"`` or ``"agp"``.
        steps: number of prune → fine-tune steps.
        basic_pruner: registry name of the pruner used at each step (``l1norm``, ``taylorfo`` ...).
        finetune_spec: fine-tuning after each step (with ``distillation``, the original model teaches).
        train: training data (also feeds data-driven pruners).
        val: validation data, for the per-step accuracy and the budget.
        example_inputs: inputs to trace coupled channels and verify each speedup.
        speedup: shrink the model at each step; False keeps masks on the full-size model (forced for
            element-wise pruners, which remove no whole channel).
        accuracy_budget: allowed top-1 drop from the original, in percentage points (``1.0`` = one
            point); None runs every step.
        pruner_options: extra keywords for the basic pruner.
        teacher: the distillation teacher; default the original model.
        progress: called with a :class:`ScheduledProgress` as the work goes.
        should_stop: polled between fine-tuning steps and between schedule steps.
        checkpoint_dir: fine-tuning checkpoints go to ``checkpoint_dir/step_<t>``. Calling again with
            the same folder after a crash resumes: finished steps are replayed from their checkpoints
            (pruning is deterministic, their training is not repeated) and the interrupted step
            continues from its last finished epoch.

    Returns:
        A :class:`ScheduledResult`.

    Raises:
        ConfigError: bad schedule, steps, budget, pruner or config.
        FinetuneCancelled: ``should_stop()`` returned True; ``context['schedule_step']`` is the step
            (and ``epoch``/``step`` the fine-tuning position, when it stopped inside fine-tuning).
    """
    started = time.perf_counter()
    fractions = schedule_fractions(schedule, steps)
    if accuracy_budget is not None and (
        isinstance(accuracy_budget, bool)
        or not isinstance(accuracy_budget, (int, float))
        or accuracy_budget < 0
    ):
        raise ConfigError(
            f"accuracy_budget must be a number of percentage points >= 0, got {accuracy_budget!r}",
            key="accuracy_budget",
            value=accuracy_budget,
        )
    if is_masked(model):
        raise ConfigError(
            "the model still computes through mask parametrizations: call remove_masks(model) first",
            key="model",
        )
    original = copy.deepcopy(model).eval()
    resolved = resolve_config(original, list(config_list))
    notes: list[str] = []
    element_wise = basic_pruner in _ELEMENT_PRUNERS or _has_element_targets(resolved)
    if speedup and element_wise:
        speedup = False
        notes.append(
            "element-wise masks remove no whole channel: the schedule keeps masks instead of speedup"
        )
    if teacher is None and finetune_spec.distillation is not None:
        teacher = original
    baseline = evaluate(original, val, batch_size=finetune_spec.eval_batch_size)
    totals = (
        sum(t.weight_shape[1 if t.granularity == "in_channel" else 0] for t in resolved.targets.values()),
        sum(get_param(original, name, "weight").numel() for name in resolved.targets),
    )
    data = train.batches(finetune_spec.batch_size, limit=_PRUNER_BATCHES)

    current = copy.deepcopy(original)
    masks: Masks | None = None
    kept: Kept = {}
    chosen_model, chosen_masks, chosen_step = copy.deepcopy(original), None, 0
    chosen_kept: Kept = {}
    records: list[StepRecord] = []
    stopped = False
    for t, fraction in enumerate(fractions, start=1):
        if should_stop is not None and should_stop():
            raise FinetuneCancelled(f"scheduled pruning cancelled before step {t}", schedule_step=t)
        step_started = time.perf_counter()
        _report(progress, t, steps, "pruning")
        current, masks, step_kept = _prune_step(
            current,
            resolved,
            fraction,
            basic_pruner=basic_pruner,
            example_inputs=example_inputs,
            data=data,
            options=pruner_options or {},
            speedup=speedup,
            previous=masks,
            progress=functools.partial(_report, progress, t, steps),
        )
        try:
            ft = finetune(
                current,
                train,
                val,
                finetune_spec,
                teacher=teacher,
                progress=functools.partial(_report_finetune, progress, t, steps) if progress else None,
                should_stop=should_stop,
                checkpoint_dir=Path(checkpoint_dir) / f"step_{t}" if checkpoint_dir is not None else None,
            )
        except FinetuneCancelled as exc:
            exc.context["schedule_step"] = t  # epoch/step in the context are the fine-tuning's
            raise
        kept = _compose_kept(kept, step_kept)
        if masks is not None:
            # Bake the zeros in now: deep-copying a parametrized module shares its generated class,
            # so removing the parametrization from a copy would break this model.
            remove_masks(current, leave_masked=True)
        record = _record(
            t, fraction, current, resolved, totals, element_wise, ft, baseline, accuracy_budget, step_started
        )
        records.append(record)
        _report(progress, t, steps, "done", record=record)
        if not record.within_budget:
            stopped = t < steps
            break
        chosen_model, chosen_step = copy.deepcopy(current), t
        chosen_masks = copy.deepcopy(masks) if masks is not None else None
        chosen_kept = copy.deepcopy(kept)
    return ScheduledResult(
        model=chosen_model.eval(),
        masks=chosen_masks,
        kept=chosen_kept if speedup else None,
        steps=records,
        chosen_step=chosen_step,
        baseline=baseline,
        stopped_early=stopped,
        speedup=speedup,
        schedule=schedule,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


# -- one step -----------------------------------------------------------------------------------------


def _prune_step(
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


def _compose_kept(total: Kept, step: Kept) -> Kept:
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


def _has_element_targets(resolved: ResolvedConfig) -> bool:
    return any(t.granularity == "element" for t in resolved.targets.values())


def _record(
    step: int,
    fraction: float,
    model: nn.Module,
    resolved: ResolvedConfig,
    totals: tuple[int, int],
    element_wise: bool,
    ft: FinetuneResult,
    baseline: EvalResult,
    budget: float | None,
    started: float,
) -> StepRecord:
    channel_total, weight_total = totals
    kept_channels = kept_weights = 0
    for name, t in resolved.targets.items():
        weight = get_param(model, name, "weight").detach()
        dim = 1 if t.granularity == "in_channel" else 0
        rows = weight.movedim(dim, 0).reshape(weight.shape[dim], -1)
        kept_channels += int((rows != 0).any(dim=1).sum().item())
        kept_weights += int(torch.count_nonzero(weight).item())
    channel_sparsity = 1.0 - kept_channels / channel_total
    weight_sparsity = 1.0 - kept_weights / weight_total
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p.detach()).item()) for p in model.parameters())
    drop = (baseline.top1 - ft.final.top1) * 100.0
    return StepRecord(
        step=step,
        target_fraction=fraction,
        sparsity=weight_sparsity if element_wise else channel_sparsity,
        weight_sparsity=weight_sparsity,
        params=params,
        nonzero_params=nonzero,
        weights_bytes=weights_bytes(model),
        val=ft.final,
        accuracy_drop=drop,
        within_budget=budget is None or drop <= budget + _EPS,
        seconds=time.perf_counter() - started,
        finetune=[r.to_dict() for r in ft.epochs],
    )


def weights_bytes(model: nn.Module) -> int:
    """Bytes of ``model.state_dict()`` written as safetensors (what the artifact stores)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return len(safetensors.torch.save(state))


def _report_finetune(
    progress: Callable[[ScheduledProgress], None] | None, step: int, steps: int, p: FinetuneProgress
) -> None:
    _report(progress, step, steps, "finetuning", finetune=p)


def _report(
    progress: Callable[[ScheduledProgress], None] | None,
    step: int,
    steps: int,
    phase: str,
    *,
    finetune: FinetuneProgress | None = None,
    record: StepRecord | None = None,
) -> None:
    if progress is not None:
        progress(ScheduledProgress(step=step, steps=steps, phase=phase, finetune=finetune, record=record))


# -- NNI-style classes ----------------------------------------------------------------------------------


class _ScheduledPruner:
    """NNI-style front of :func:`scheduled_prune`: ``Pruner(model, config_list, ...).compress()``.

    Args:
        model: the trained model (not modified).
        config_list: NNI-style config_list with the final targets.
        pruning_algorithm: registry name of the basic pruner (NNI's argument name).
        total_iteration: number of steps.
        finetune_spec: fine-tuning after each step.
        train: training data.
        val: validation data.
        dummy_input: example inputs.
        speedup: shrink the model at each step.
        accuracy_budget: allowed top-1 drop in percentage points, or None.
        pruning_params: extra keywords for the basic pruner.
        progress: progress callback.
        should_stop: cancellation poll.
    """

    schedule: ClassVar[str]

    def __init__(
        self,
        model: nn.Module,
        config_list: Sequence[dict[str, Any]],
        *,
        pruning_algorithm: str = "l1norm",
        total_iteration: int,
        finetune_spec: FinetuneSpec,
        train: LabelledDataset,
        val: LabelledDataset,
        dummy_input: torch.Tensor,
        speedup: bool = True,
        accuracy_budget: float | None = None,
        pruning_params: dict[str, Any] | None = None,
        progress: Callable[[ScheduledProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        schedule_fractions(self.schedule, total_iteration)  # fail at construction, like NNI
        self.model = model
        self.config_list = list(config_list)
        self.kwargs: dict[str, Any] = {
            "schedule": self.schedule,
            "steps": total_iteration,
            "basic_pruner": pruning_algorithm,
            "finetune_spec": finetune_spec,
            "train": train,
            "val": val,
            "example_inputs": dummy_input,
            "speedup": speedup,
            "accuracy_budget": accuracy_budget,
            "pruner_options": pruning_params,
            "progress": progress,
            "should_stop": should_stop,
        }
        self.result: ScheduledResult | None = None

    def compress(self) -> tuple[nn.Module, Masks | None]:
        """Runs the schedule.

        Returns:
            ``(model, masks)``: the chosen step's model, and its masks when ``speedup=False``.
        """
        self.result = scheduled_prune(self.model, self.config_list, **self.kwargs)
        return self.result.model, self.result.masks

    def get_best_result(self) -> tuple[int, nn.Module, Masks | None, float]:
        """NNI's accessor: ``(step, model, masks, validation top-1)`` of the chosen step.

        Raises:
            ConfigError: :meth:`compress` has not run.
        """
        if self.result is None:
            raise ConfigError("no result yet: call compress() first", key=None)
        r = self.result
        score = r.steps[r.chosen_step - 1].val.top1 if r.chosen_step else r.baseline.top1
        return r.chosen_step, r.model, r.masks, score


class LinearPruner(_ScheduledPruner):
    """Sparsity grows linearly: step ``t`` of ``n`` reaches ``t/n`` of the target."""

    schedule = "linear"


class AGPPruner(_ScheduledPruner):
    """Automated gradual pruning: step ``t`` of ``n`` reaches ``1 − (1 − t/n)³`` of the target."""

    schedule = "agp"
