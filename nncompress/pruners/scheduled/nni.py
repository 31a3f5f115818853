"""NNI's scheduled pruner classes, ``LinearPruner`` and ``AGPPruner``: a thin front of ``scheduled_prune``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.errors import ConfigError
from nncompress.finetune import FinetuneSpec
from nncompress.pruners import Masks
from nncompress.pruners.scheduled.loop import scheduled_prune
from nncompress.pruners.scheduled.records import ScheduledProgress, ScheduledResult
from nncompress.pruners.scheduled.schedules import schedule_fractions

__all__ = ["AGPPruner", "LinearPruner"]


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
