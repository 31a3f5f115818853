"""Scheduled (iterative) pruning: Linear and AGP, with fine-tuning between steps.

As NNI's scheduled pruners do, the target of every layer is reached in ``steps`` increments
(:mod:`.schedules`). Each step prunes with a basic pruner (by registry name), then either shrinks the model
(speedup) or keeps the masks in force (:mod:`.step`), fine-tunes it, evaluates it and records the result
(:mod:`.records`). An ``accuracy_budget`` stops the schedule at the first step whose validation top-1 falls
more than that many percentage points below the original, and returns the model of the last step that
stayed within it.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.config import resolve_config
from nncompress.datasets import LabelledDataset
from nncompress.errors import ConfigError
from nncompress.finetune import FinetuneCancelled, FinetuneProgress, FinetuneSpec, evaluate, finetune
from nncompress.pruners import Masks, get_pruner, remove_masks
from nncompress.pruners.masks import get_param, is_masked
from nncompress.pruners.scheduled.records import (
    Kept,
    ScheduledProgress,
    ScheduledResult,
    StepRecord,
    step_record,
)
from nncompress.pruners.scheduled.schedules import schedule_fractions
from nncompress.pruners.scheduled.step import compose_kept, has_element_targets, prune_step

__all__ = ["scheduled_prune"]

# Batches of the training set handed to data-driven pruners (TaylorFO, APoZ, mean activation, Slim).
_PRUNER_BATCHES = 16


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
    # Element-wise masks leave nothing to shrink, so the schedule keeps masks instead.
    element_wise = get_pruner(basic_pruner).default_granularity == "element" or has_element_targets(resolved)
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
        current, masks, step_kept = prune_step(
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
        kept = compose_kept(kept, step_kept)
        if masks is not None:
            # Bake the zeros in now: deep-copying a parametrized module shares its generated class,
            # so removing the parametrization from a copy would break this model.
            remove_masks(current, leave_masked=True)
        record = step_record(
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
