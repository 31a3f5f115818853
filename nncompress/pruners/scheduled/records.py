"""What a schedule reports: one record per step, the progress events and the final result."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import safetensors.torch
import torch
from torch import nn

from nncompress.config import ResolvedConfig
from nncompress.finetune import EvalResult, FinetuneProgress, FinetuneResult
from nncompress.pruners import Masks
from nncompress.pruners.masks import get_param

__all__ = ["Kept", "ScheduledProgress", "ScheduledResult", "StepRecord", "step_record", "weights_bytes"]

Kept = dict[str, dict[str, list[int]]]

_EPS = 1e-9


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


def step_record(
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
